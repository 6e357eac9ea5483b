"""The request log: one JSONL record per request, appended, for `llmtools watch`.

Each line is written with a single `write()` on a file opened with O_APPEND, so lines from
concurrent requests (or several server processes) never interleave, and `watch --follow` sees
whole records as soon as they are written.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from typing import Any

from llmtools.io import dumps


def utc_now_iso() -> str:
    """ISO-8601 UTC with milliseconds and a Z: 2025-01-31T12:00:00.123Z."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class RequestLog:
    def __init__(self, path: str, content: bool = False):
        self.path = path
        self.content = content
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = dumps(record) + b"\n"
        with self._lock:
            if self._fd < 0:
                return
            os.write(self._fd, line)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def log_record(
    *,
    request_id: str,
    endpoint: str,
    status: int,
    model: dict | None,
    model_version: int | None,
    latency_ms: float,
    ttft_ms: float | None,
    prompt_tokens: int | None,
    completion_tokens: int | None,
    stream: bool,
    error: str | None,
    prompt: Any = None,
    response: Any = None,
    content: bool = False,
) -> dict:
    """The record's shape; field names are `watch`'s contract, so change them only together."""
    rec: dict[str, Any] = {
        "time": utc_now_iso(),
        "request_id": request_id,
        "model": model,
        "model_version": model_version,
        "endpoint": endpoint,
        "status": status,
        "latency_ms": round(latency_ms, 3),
        "ttft_ms": None if ttft_ms is None else round(ttft_ms, 3),
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "stream": stream,
        "error": error,
    }
    if content:
        rec["prompt"] = prompt
        rec["response"] = response
    return rec
