"""`llmtools serve`: an OpenAI-compatible HTTP server and a batch mode, over one model Backend.

The pieces, one module each:

    serve_protocol  request validation and OpenAI response shapes (no web framework)
    serve_batch     batch mode: JSONL requests in, response records out, in order
    serve_runner    admission limits, the per-model worker threads, micro-batching
    serve_slots     model versions: blue/green load, health check, keep-previous, rollback
    serve_metrics   Prometheus metrics (private registry)
    serve_log       the JSONL request log that `llmtools watch` reads
    serve_app       the Starlette app: endpoints, auth, body limit, errors, streaming
    serve_http      uvicorn, signals (SIGTERM drain, SIGHUP reload), exit codes

Only serve_app and serve_http import starlette/uvicorn, and only when a server starts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable

from llmtools.errors import UsageError
from llmtools.ops.serve_batch import batch, validator  # noqa: F401
from llmtools.ops.serve_protocol import ApiError, Defaults  # noqa: F401
from llmtools.ops.serve_slots import KeepPolicy  # noqa: F401


@dataclass
class ServeConfig:
    model_ref: str = "smollm2"
    model_file: str | None = None  # a pointer file holding the model reference (re-read on SIGHUP)
    served_name: str | None = None  # the model id clients use; default: the first model's name
    host: str = "127.0.0.1"
    port: int = 8000
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    max_body: int = 1 << 20
    max_concurrency: int = 4
    max_queue: int = 64
    timeout: float = 120.0
    micro_batch: int = 8
    defaults: Defaults = field(default_factory=lambda: Defaults(max_tokens=256, max_tokens_cap=2048))
    keep: KeepPolicy = field(default_factory=KeepPolicy)
    log_path: str | None = None
    log_content: bool = False
    quiet: bool = False


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Bytes from `1048576`, `512k`, `1M`, `2MiB` (k/M/G are powers of 1024)."""
    m = _SIZE.match(str(text))
    if not m:
        raise UsageError(f"not a size: {text!r} (try 1048576, 512k or 1M)")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2).lower()]
    return int(float(m.group(1)) * scale)


def make_loader(backend: str | None = None, api_key: str | None = None, trust_pickle: bool = False, **opts: Any) -> Callable:
    """A `ref -> Backend` function over llmtools.models.load_model with fixed options."""
    clean = {k: v for k, v in opts.items() if v is not None}

    def load(ref: str):
        from llmtools.models import load_model

        return load_model(ref, backend=backend, api_key=api_key, trust_pickle=trust_pickle, **clean)

    return load


def serve_http(config, loader: Callable, on_ready: Callable[[str], None] | None = None) -> int:
    """Run the HTTP server until SIGTERM/SIGINT; returns the exit code (see serve_http.run_http)."""
    from llmtools.errors import require

    require("starlette", "serve", "llmtools serve")
    require("uvicorn", "serve", "llmtools serve")
    from llmtools.ops.serve_http import run_http

    return run_http(config, loader, on_ready=on_ready)
