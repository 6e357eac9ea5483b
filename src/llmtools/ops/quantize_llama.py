"""The llama.cpp side of `quantize`: `llama_model_quantize`, and perplexity / speed measurement.

Perplexity and tokens/s of the model before and after quantization are measured by the same
code on the same token ids: the texts are tokenized once (with the reference model's own
vocabulary, which quantization does not change) and both GGUF files score exactly those ids.
"""

from __future__ import annotations

import ctypes
import math
import os
import time
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
    text = "".join(lines)
    wanted = [ln.strip() for ln in text.splitlines() if any(w in ln.lower() for w in ("error", "failed", "invalid", "missing"))]
    return "; ".join(wanted[-3:]) or text.strip().splitlines()[-1:][0] if text.strip() else "no log"


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


# --------------------------------------------------------------------------- measurement


class LlamaEvaluator:
    """One GGUF loaded in llama.cpp, for scoring fixed token ids and timing generation."""

    def __init__(self, path: str, n_ctx: int = 512, threads: int | None = None):
        llama_cpp = _llama_cpp()
        self.path = path
        self.n_ctx = n_ctx
        kwargs: dict[str, Any] = dict(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True, verbose=False)
        if threads:
            kwargs.update(n_threads=threads, n_threads_batch=threads)
        start = time.perf_counter()
        with captured_llama_log() as lines:
            try:
                self.llm = llama_cpp.Llama(**kwargs)
            except ValueError:
                raise errors.RuntimeFailure(f"llama.cpp could not load {path}: {_error_lines(lines)}") from None
        self.load_seconds = time.perf_counter() - start

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def token_logprobs(self, ids: Sequence[int]) -> tuple[float, int]:
        """Sum of log p(token | previous tokens) over `ids[1:]`, in windows of n_ctx tokens."""
        import numpy as np

        total, count = 0.0, 0
        for start in range(0, len(ids), self.n_ctx):
            window = list(ids[start : start + self.n_ctx])
            if len(window) < 2:
                continue
            self.llm.reset()
            self.llm.eval(window)
            logits = np.asarray(self.llm.scores[: len(window) - 1], dtype=np.float64)
            top = logits.max(axis=1, keepdims=True)
            logz = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
            picked = logits[np.arange(len(window) - 1), window[1:]]
            total += float((picked - logz).sum())
            count += len(window) - 1
        return total, count

    def generation_speed(self, prompt: Sequence[int], n_tokens: int = 64) -> float:
        """Greedy decode `n_tokens` one at a time after `prompt`; decode tokens per second."""
        import numpy as np

        prompt = list(prompt)[: max(1, self.n_ctx - n_tokens - 1)]
        self.llm.reset()
        self.llm.eval(prompt)
        token = int(np.argmax(self.llm.scores[len(prompt) - 1]))
        start = time.perf_counter()
        for _ in range(n_tokens):
            self.llm.eval([token])
            token = int(np.argmax(self.llm.scores[self.llm.n_tokens - 1]))
        elapsed = time.perf_counter() - start
        return n_tokens / elapsed if elapsed > 0 else float("inf")

    def close(self) -> None:
        try:
            self.llm.close()
        except Exception:
            pass


def tokenize_eval_set(path: str, texts: Sequence[str], max_tokens: int, n_ctx: int = 512, threads: int | None = None) -> list[list[int]]:
    """Token ids of the evaluation texts (with the model's BOS rule), up to `max_tokens` in all."""
    ev = LlamaEvaluator(path, n_ctx=min(n_ctx, 64), threads=threads)
    try:
        out, used = [], 0
        for text in texts:
            ids = ev.tokenize(text)
            if len(ids) < 2:
                continue
            room = max_tokens - used
            if room < 2:
                break
            ids = ids[:room]
            out.append(ids)
            used += len(ids)
        return out
    finally:
        ev.close()


def measure(path: str, token_lists: Sequence[Sequence[int]], *, n_ctx: int = 512, threads: int | None = None, gen_tokens: int = 64) -> dict:
    """Perplexity over `token_lists` and greedy decode speed of one GGUF file, with llama.cpp."""
    ev = LlamaEvaluator(path, n_ctx=n_ctx, threads=threads)
    try:
        start = time.perf_counter()
        total, count = 0.0, 0
        for ids in token_lists:
            lp, n = ev.token_logprobs(ids)
            total += lp
            count += n
        eval_seconds = time.perf_counter() - start
        prompt = list(token_lists[0][:32]) if token_lists else ev.tokenize("The")
        speed = ev.generation_speed(prompt, gen_tokens) if gen_tokens > 0 else None
        ppl = math.exp(-total / count) if count else None
        return {
            "perplexity": ppl,
            "nll_per_token": (-total / count) if count else None,
            "scored_tokens": count,
            "prompt_tokens_per_second": (count / eval_seconds) if eval_seconds > 0 and count else None,
            "tokens_per_second": speed,
            "load_seconds": ev.load_seconds,
        }
    finally:
        ev.close()
