"""Batch mode: prompt or messages records in, one response record per request out, in order.

    llmtools serve --batch smollm2 < eval.jsonl | llmtools score

Records are read in windows of `batch_size`; inside a window, records with the same kind
(prompt/messages) and the same generation options go through one `generate_batch` /
`chat_batch` call, which a batching backend (torch) runs as one padded forward pass.

With a `Prompting` (--template, --examples, --variant, --extract), each request is rendered
from its record by a llmtools.prompts.PromptTemplate instead of read from a field, the output
records are stamped with the variant, and an answer can be cut out of the reply by a regex.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from llmtools.io import get_field, set_field
from llmtools.prompts import PromptTemplate, TemplateError
from llmtools.models.base import Backend, GenerationParams
from llmtools.ops.serve.protocol import ApiError, Defaults, generation_params, params_key, parse_messages

OPTION_FIELDS = ("max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed", "stop")


@dataclass
class Prompting:
    """How requests are built from records and answers from replies (all optional).

    template: renders each record into a prompt or chat messages (--template, --examples)
    variant: stamped on every output record under `variant_field` (--variant)
    extract: a regex; the answer is its group `answer`, else group 1, else the whole match, of
      the reply's first match; the whole reply is kept under `raw_field` (--extract)
    """

    template: PromptTemplate | None = None
    variant: str | None = None
    variant_field: str = "variant"
    extract: "re.Pattern[str] | None" = None
    raw_field: str = "raw_prediction"

    def answer(self, text: str) -> tuple[str, bool]:
        """(answer, matched) from a reply."""
        if self.extract is None:
            return text, True
        m = self.extract.search(text)
        if m is None:
            return "", False
        if "answer" in self.extract.groupindex:
            return (m.group("answer") or "").strip(), True
        return (m.group(1) if self.extract.groups else m.group(0)).strip(), True


def compile_extract(pattern: str | None) -> "re.Pattern[str] | None":
    """--extract's regex, compiled (ValueError with the reason when it is not valid)."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as exc:
        raise ValueError(f"--extract: bad regular expression: {exc}") from None


def request_of(record: dict, field: str, messages_field: str, chat: bool,
               template: PromptTemplate | None = None) -> tuple[str, Any]:
    """("chat", messages) or ("generate", prompt) for a record; raises ApiError when it has neither.

    With a template the request is the template rendered from the record (a record it cannot
    render is an ApiError too: a per-record error under --on-error)."""
    if template is not None:
        try:
            kind, item = template.render(record, chat=chat)
        except TemplateError as exc:
            raise ApiError(400, exc.message) from None
        return kind, (parse_messages(item) if kind == "chat" else item)
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


def validator(field: str, messages_field: str, defaults: Defaults, chat: bool = False,
              template: PromptTemplate | None = None) -> Callable[[dict], str | None]:
    """For Job(validate=...): the reason a record cannot be served, or None."""

    def check(record: dict) -> str | None:
        try:
            request_of(record, field, messages_field, chat, template)
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
    prompting: Prompting | None = None,
) -> Iterator[dict]:
    """Yield each record with `output_field` (the generated text), `finish_reason`, `usage` and
    `_llmtools.model` / `_llmtools.latency_ms` added, in input order (and, with `prompting`,
    the variant, the raw reply and `_llmtools.prompt`: the template's sha256 and example ids)."""
    defaults = defaults or Defaults()
    prompting = prompting or Prompting()
    identity = backend.identity.to_dict()
    window: list[dict] = []
    for record in records:
        window.append(record)
        if len(window) >= batch_size:
            yield from _run_window(window, backend, defaults, field, messages_field, output_field, chat, identity,
                                   prompting)
            window = []
    if window:
        yield from _run_window(window, backend, defaults, field, messages_field, output_field, chat, identity,
                               prompting)


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
    prompting: Prompting | None = None,
    manifest_path: str | None = None,
) -> dict[str, Any]:
    """Load `ref`, then serve every request record of `job` (an io.Job whose field is the prompt
    field) and write the responses to it, in order; returns what the summary shows.

    `manifest_path`: where to write the run's provenance manifest (model, inputs, generation
    defaults, template sha256 and example ids), after the output is complete."""
    started = time.perf_counter()
    backend = loader(ref)
    prompting = prompting or Prompting()
    tokens = 0
    unmatched = 0
    leaked: set = set()
    example_ids = set(_hashable(i) for i in prompting.template.examples.ids) if prompting.template else set()
    try:
        with job:
            for record in batch(job.records(), backend, defaults=defaults, batch_size=batch_size, field=job.field,
                                messages_field=messages_field, output_field=output_field, chat=chat,
                                prompting=prompting):
                usage = record.get("usage")
                if isinstance(usage, dict):
                    tokens += usage.get("completion_tokens") or 0
                if prompting.extract is not None and (record.get("_llmtools") or {}).get("extracted") is False:
                    unmatched += 1
                if example_ids and _hashable(record.get("id")) in example_ids:
                    leaked.add(_hashable(record.get("id")))
                job.write(record)
    finally:
        backend.close()
    elapsed = time.perf_counter() - started
    if leaked:
        job.warn(f"{len(leaked)} record id(s) are also few-shot examples (e.g. {sorted(map(str, leaked))[0]}): "
                 "take --examples from another split")
    if manifest_path:
        _write_manifest(manifest_path, job, backend, defaults, prompting, chat)
    stats: dict[str, Any] = {"model": backend.identity.short, "records": job.counts["out"], "completion tokens": tokens,
                             "seconds": elapsed, "tokens/s": tokens / elapsed if elapsed else 0.0}
    if prompting.variant is not None:
        stats["variant"] = prompting.variant
    if prompting.extract is not None:
        stats["no answer extracted"] = unmatched
    return stats


def _hashable(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def _write_manifest(path: str, job: Any, backend: Backend, defaults: Defaults, prompting: Prompting, chat: bool) -> None:
    import dataclasses
    import os

    from llmtools.provenance import build_manifest, sha256_file

    inputs = {p: {"sha256": sha256_file(p, use_cache=False)} for p in job.inputs if p != "-" and os.path.isfile(p)}
    params: dict[str, Any] = {"defaults": dataclasses.asdict(defaults), "chat": chat}
    if prompting.variant is not None:
        params["variant"] = prompting.variant
    if prompting.extract is not None:
        params["extract"] = prompting.extract.pattern
    extra: dict[str, Any] = {"records": job.counts["out"]}
    if prompting.template is not None:
        extra["template"] = prompting.template.provenance()
    manifest = build_manifest("serve-batch", inputs=inputs, base_model=backend.identity.to_dict(), params=params,
                              extra=extra, libraries=("llmtools", "jinja2", "torch", "transformers", "llama_cpp_python"))
    import json

    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
    os.replace(tmp, path)


def _run_window(
    window: list[dict],
    backend: Backend,
    defaults: Defaults,
    field: str,
    messages_field: str,
    output_field: str,
    chat: bool,
    identity: dict,
    prompting: Prompting,
) -> Iterator[dict]:
    template = prompting.template
    stamp = {"template": template.sha256, "examples": template.examples.ids} if template is not None else None
    groups: dict[tuple, list[int]] = {}
    requests: list[tuple[str, Any, GenerationParams] | None] = []
    for i, record in enumerate(window):
        try:
            kind, item = request_of(record, field, messages_field, chat, template)
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
        answer, matched = prompting.answer(completion.text)
        set_field(record, output_field, answer)
        if prompting.extract is not None:
            set_field(record, prompting.raw_field, completion.text)
        if prompting.variant is not None:
            set_field(record, prompting.variant_field, prompting.variant)
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
        if stamp is not None:
            meta["prompt"] = stamp
        if prompting.extract is not None:
            meta["extracted"] = matched
        record["_llmtools"] = meta
        yield record
