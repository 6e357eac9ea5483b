"""serve: an OpenAI-compatible HTTP server and a batch mode, over one model Backend.

    serve_http(ServeConfig(...), make_loader(...)) -> exit code
    batch(records, backend, defaults=Defaults(...)) -> Iterator[dict]

The pieces, one module each:

    protocol     request validation and OpenAI response shapes (no web framework)
    batch        batch mode: JSONL requests in, response records out, in order
    runner       admission limits, the per-model worker threads, micro-batching
    slots        model versions: blue/green load, health check, keep-previous, rollback
    metrics      Prometheus metrics (private registry)
    request_log  the JSONL request log that `llmtools watch` reads
    config       ServeConfig: how one server runs
    loading      the `ref -> Backend` loader
    app          the Starlette app: endpoints, auth, body limit, errors, streaming
    server       uvicorn, signals (SIGTERM drain, SIGHUP reload), exit codes

Only app and server import starlette/uvicorn, and only when a server starts (app's names are
exported lazily, see `__getattr__`).
"""

from __future__ import annotations

from typing import Any

from llmtools.ops.serve.batch import Prompting, batch, compile_extract, run_batch, validator
from llmtools.ops.serve.config import ServeConfig, parse_size
from llmtools.ops.serve.loading import make_loader
from llmtools.ops.serve.protocol import ApiError, Defaults
from llmtools.ops.serve.server import bind_socket, read_model_file, run_http, serve_http
from llmtools.ops.serve.slots import KeepPolicy

_LAZY_FROM_APP = ("ServeState", "build_app")

__all__ = [
    "ApiError", "Defaults", "KeepPolicy", "Prompting", "ServeConfig", "batch", "compile_extract", "bind_socket", "make_loader", "parse_size",
    "read_model_file", "run_batch", "run_http", "serve_http", "validator", *_LAZY_FROM_APP,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY_FROM_APP:
        from llmtools.ops.serve import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
