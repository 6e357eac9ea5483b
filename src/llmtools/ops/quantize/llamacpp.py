"""The llama.cpp side of `quantize`: `llama_model_quantize` through llama-cpp-python's ctypes API.

Measurement (perplexity, tokens/s) goes through the model layer instead: see measure.py.
"""

from __future__ import annotations

import ctypes
import os
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

from llmtools import errors


def _llama_cpp():
    return errors.require("llama_cpp", "gguf", "quantizing and evaluating GGUF models with llama.cpp")


@contextmanager
def captured_llama_log() -> Iterator[list[str]]:
    """Route llama.cpp's log into a list for the duration (its quantize log is very chatty)."""
    llama_cpp = _llama_cpp()
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def _collect(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    llama_cpp.llama_log_set(_collect, ctypes.c_void_p(0))
    try:
        yield lines
    finally:
        try:
            from llama_cpp import _logger

            llama_cpp.llama_log_set(_logger.llama_log_callback, ctypes.c_void_p(0))
        except ImportError:  # pragma: no cover - older llama_cpp layouts
            pass


def _error_lines(lines: Sequence[str]) -> str:
    """The lines of a llama.cpp log that say what went wrong (the last line if none says)."""
    text = "".join(lines).strip()
    if not text:
        return "no log output"
    keys = ("error", "failed", "invalid", "missing", "cannot")
    wanted = [ln.strip() for ln in text.splitlines() if any(k in ln.lower() for k in keys)]
    return "; ".join(wanted[-3:]) if wanted else text.splitlines()[-1]


def llama_quantize(
    src: str,
    dst: str,
    ftype: int,
    *,
    allow_requantize: bool = False,
    prune_layers: Sequence[int] = (),
    kv: dict[str, Any] | None = None,
    threads: int | None = None,
    pure: bool = False,
    leave_output_tensor: bool = False,
    output_tensor_type: int | None = None,
    token_embedding_type: int | None = None,
) -> list[str]:
    """Run llama.cpp's quantizer from `src` to `dst`; returns its log lines. RuntimeFailure on error.

    `kv` adds or replaces GGUF metadata in the output (strings are cut to 127 bytes, a llama.cpp
    limit, so long values should be split over several keys).
    """
    llama_cpp = _llama_cpp()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(ftype)
    params.nthread = int(threads or 0)
    params.allow_requantize = bool(allow_requantize)
    params.pure = bool(pure)
    params.quantize_output_tensor = not leave_output_tensor
    if output_tensor_type is not None:
        params.output_tensor_type = int(output_tensor_type)
    if token_embedding_type is not None:
        params.token_embedding_type = int(token_embedding_type)
    keep: list[Any] = []  # ctypes buffers must outlive the call
    if prune_layers:
        field_names = [f[0] for f in params._fields_]
        if "prune_layers" not in field_names:
            raise errors.MissingDependency("the installed llama-cpp-python has no layer pruning (prune_layers); upgrade it")
        arr = (ctypes.c_int32 * (len(prune_layers) + 1))(*sorted(prune_layers), -1)
        keep.append(arr)
        params.prune_layers = ctypes.cast(arr, ctypes.POINTER(ctypes.c_int32))
    if kv:
        overrides = (llama_cpp.llama_model_kv_override * (len(kv) + 1))()
        for slot, (key, value) in zip(overrides, kv.items()):
            slot.key = key.encode()[:127]
            if isinstance(value, bool):
                slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL
                slot.value.val_bool = value
            elif isinstance(value, int):
                slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT
                slot.value.val_i64 = value
            elif isinstance(value, float):
                slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_FLOAT
                slot.value.val_f64 = value
            else:
                slot.tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                slot.value.val_str = str(value).encode()[:127]
        keep.append(overrides)
        params.kv_overrides = ctypes.cast(overrides, ctypes.POINTER(llama_cpp.llama_model_kv_override))
    with captured_llama_log() as lines:
        rc = llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params))
    if rc != 0:
        if os.path.exists(dst):
            os.unlink(dst)
        raise errors.RuntimeFailure(f"llama.cpp could not quantize {src}: {_error_lines(lines)}")
    return lines
