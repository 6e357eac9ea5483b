"""Batch mode: prompt or messages records in, one response record per request out, in order.

    llmtools serve --batch smollm2 < eval.jsonl | llmtools score

Records are read in windows of `batch_size`; inside a window, records with the same kind
(prompt/messages) and the same generation options go through one `generate_batch` /
`chat_batch` call, which a batching backend (torch) runs as one padded forward pass.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Iterator

from llmtools.io import get_field, set_field
from llmtools.models.base import Backend, GenerationParams
from llmtools.ops.serve.protocol import ApiError, Defaults, generation_params, params_key, parse_messages

OPTION_FIELDS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop")


def request_of(record: dict, field: str, messages_field: str, chat: bool) -> tuple[str, Any]:
    """("chat", messages) or ("generate", prompt) for a record; raises ApiError when it has neither."""
    messages = get_field(record, messages_field)
    if messages is not None:
        return "chat", parse_messages(messages)
    prompt = get_field(record, field)
    if isinstance(prompt, str):
        if chat:
            return "chat", [{"role": "user", "content": prompt}]
        return "generate", prompt
    if prompt is None:
        raise ApiError(400, f"record has neither '{field}' (a string) nor '{messages_field}' (a list of messages)")
    raise ApiError(400, f"field '{field}' is {type(prompt).__name__}, not a string")


def validator(field: str, messages_field: str, defaults: Defaults, chat: bool = False) -> Callable[[dict], str | None]:
    """For Job(validate=...): the reason a record cannot be served, or None."""

    def check(record: dict) -> str | None:
        try:
            request_of(record, field, messages_field, chat)
            generation_params(record, defaults)
        except ApiError as exc:
            return exc.message
        return None

    return check


def batch(
    records: Iterable[dict],
    backend: Backend,
    *,
    defaults: Defaults | None = None,
    batch_size: int = 8,
    field: str = "prompt",
    messages_field: str = "messages",
    output_field: str = "prediction",
    chat: bool = False,
) -> Iterator[dict]:
    """Yield each record with `output_field` (the generated text), `finish_reason`, `usage` and
    `_llmtools.model` / `_llmtools.latency_ms` added, in input order."""
    defaults = defaults or Defaults()
    identity = backend.identity.to_dict()
    window: list[dict] = []
    for record in records:
        window.append(record)
        if len(window) >= batch_size:
            yield from _run_window(window, backend, defaults, field, messages_field, output_field, chat, identity)
            window = []
    if window:
        yield from _run_window(window, backend, defaults, field, messages_field, output_field, chat, identity)


def run_batch(
    job: Any,
    loader: Callable[[str], Backend],
    ref: str,
    *,
    defaults: Defaults,
    batch_size: int = 8,
    messages_field: str = "messages",
    output_field: str = "prediction",
    chat: bool = False,
) -> dict[str, Any]:
    """Load `ref`, then serve every request record of `job` (an io.Job whose field is the prompt
    field) and write the responses to it, in order; returns what the summary shows."""
    started = time.perf_counter()
    backend = loader(ref)
    tokens = 0
    try:
        with job:
            for record in batch(job.records(), backend, defaults=defaults, batch_size=batch_size, field=job.field,
                                messages_field=messages_field, output_field=output_field, chat=chat):
                usage = record.get("usage")
                if isinstance(usage, dict):
                    tokens += usage.get("completion_tokens") or 0
                job.write(record)
    finally:
        backend.close()
    elapsed = time.perf_counter() - started
    return {"model": backend.identity.short, "records": job.counts["out"], "completion tokens": tokens,
            "seconds": elapsed, "tokens/s": tokens / elapsed if elapsed else 0.0}


def _run_window(
    window: list[dict],
    backend: Backend,
    defaults: Defaults,
    field: str,
    messages_field: str,
    output_field: str,
    chat: bool,
    identity: dict,
) -> Iterator[dict]:
    groups: dict[tuple, list[int]] = {}
    requests: list[tuple[str, Any, GenerationParams] | None] = []
    for i, record in enumerate(window):
        try:
            kind, item = request_of(record, field, messages_field, chat)
            params = generation_params(record, defaults)
        except ApiError:
            requests.append(None)  # only reaches here under --on-error keep: passed through unchanged
            continue
        requests.append((kind, item, params))
        groups.setdefault((kind, params_key(params)), []).append(i)

    results: dict[int, tuple[Any, float]] = {}
    for (kind, _), indexes in groups.items():
        items = [requests[i][1] for i in indexes]  # type: ignore[index]
        params = requests[indexes[0]][2]  # type: ignore[index]
        started = time.perf_counter()
        if kind == "chat":
            done = backend.chat_batch(items, params) if len(items) > 1 else [backend.chat(items[0], params)]
        else:
            done = backend.generate_batch(items, params) if len(items) > 1 else [backend.generate(items[0], params)]
        elapsed_ms = (time.perf_counter() - started) * 1000.0
        for i, completion in zip(indexes, done):
            results[i] = (completion, elapsed_ms)

    for i, record in enumerate(window):
        if i not in results:
            yield record
            continue
        completion, elapsed_ms = results[i]
        set_field(record, output_field, completion.text)
        record["finish_reason"] = completion.finish_reason
        record["usage"] = {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        }
        meta = record.get("_llmtools")
        if not isinstance(meta, dict):
            meta = {}
        meta["model"] = identity
        meta["latency_ms"] = round(elapsed_ms, 3)
        record["_llmtools"] = meta
        yield record
