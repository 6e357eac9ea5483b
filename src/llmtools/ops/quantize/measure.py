"""Before/after measurement for `quantize`, through the model layer's llama.cpp backend.

Both files are loaded with `llmtools.models.load_model(path, backend="llama")` and score the same
texts with `.loglikelihood` (strided windows of n_ctx tokens). Quantization leaves the vocabulary
alone, so both tokenize the texts into the same ids; the token counts are compared to prove it.
Generation speed is timed from the streamed tokens (decode only: the clock starts at the first
generated token, so prompt processing is not counted).
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

from llmtools import errors


def _load(path: str, n_ctx: int, threads: int | None):
    from llmtools.models import load_model

    return load_model(path, backend="llama", n_ctx=n_ctx, threads=threads)


def budget_texts(path: str, texts: Sequence[str], max_tokens: int, n_ctx: int, threads: int | None) -> list[str]:
    """Whole texts, in order, until `max_tokens` tokens (the first is cut to fit if it alone is too long)."""
    model = _load(path, n_ctx, threads)
    try:
        out: list[str] = []
        used = 0
        for text in texts:
            n = len(model.tokenize(text, add_special=True))
            if n < 2:
                continue
            if used + n > max_tokens:
                if not out:
                    ids = model.tokenize(text, add_special=False)[: max_tokens - 1]
                    out.append(model.detokenize(ids))
                break
            out.append(text)
            used += n
        return out
    finally:
        model.close()


def decode_speed(model: Any, prompt: str, n_tokens: int) -> float | None:
    """Greedy tokens per second after the first generated token (prompt processing excluded)."""
    from llmtools.models import GenerationParams

    if n_tokens < 2:
        return None
    first = last = None
    generated = 0
    for chunk in model.stream(prompt, GenerationParams(max_tokens=n_tokens, temperature=0.0)):
        now = time.perf_counter()
        if chunk.text and first is None:
            first = now
        if chunk.text:
            last = now
        if chunk.completion_tokens is not None:
            generated = chunk.completion_tokens
    if first is None or last is None or last <= first or generated < 2:
        return None
    return (generated - 1) / (last - first)


def measure(path: str, texts: Sequence[str], *, n_ctx: int = 512, threads: int | None = None, gen_tokens: int = 64) -> dict[str, Any]:
    """Perplexity over `texts` and greedy decode speed of one GGUF file."""
    model = _load(path, n_ctx, threads)
    try:
        start = time.perf_counter()
        results = model.loglikelihood(texts)
        seconds = time.perf_counter() - start
        total = sum(r.logprob for r in results)
        count = sum(r.n_tokens for r in results)
        prompt = " ".join(texts[0].split()[:12]) if texts else "The"
        speed = decode_speed(model, prompt, gen_tokens) if gen_tokens else None
    finally:
        model.close()
    if not count:
        raise errors.BadInputError("the evaluation texts are too short to score (each needs 2+ tokens)")
    return {
        "perplexity": math.exp(-total / count) if math.isfinite(total) else float("inf"),
        "scored_tokens": count,
        "per_text_tokens": [r.n_tokens for r in results],
        "prompt_tokens_per_second": count / seconds if seconds > 0 else None,
        "tokens_per_second": speed,
    }
