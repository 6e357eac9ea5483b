"""How one `llmtools serve` HTTP server runs: its model, limits, keys and log (`ServeConfig`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from llmtools.errors import UsageError
from llmtools.models.registry import DEFAULT_MODEL
from llmtools.ops.serve.protocol import Defaults
from llmtools.ops.serve.slots import KeepPolicy


@dataclass
class ServeConfig:
    model_ref: str = DEFAULT_MODEL
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
    parallel: int = 8  # llama.cpp: sequences decoded together (continuous batching); 0 = one request at a time
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
