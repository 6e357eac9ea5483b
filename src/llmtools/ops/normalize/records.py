"""normalize over records: rewrite the text field of each, or drop it through `on_drop`.

Only the text field changes; every other field keeps its value and place.

    >>> list(normalize([{"text": "  “Hi”\u200b  there  "}]))
    [{'text': '"Hi" there'}]
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable, Iterator

from llmtools.io import get_field, set_field, split_path
from llmtools.ops.normalize import cleaning as T
from llmtools.ops.normalize.filters import Filters
from llmtools.ops.normalize.steps import DEFAULT_STEPS, PII_KINDS, TextNormalizer


class Stats:
    """Counters for the summary: per-step changes, PII found, records changed."""

    def __init__(self) -> None:
        self.steps: Counter[str] = Counter()
        self.pii: Counter[str] = Counter()
        self.changed = 0


def normalize(
    records: Iterable[dict],
    *,
    field: str = "text",
    steps: Iterable[str] = DEFAULT_STEPS,
    filters: Filters | None = None,
    explain: bool = False,
    on_drop: Callable[..., None] | None = None,
    stats: Stats | None = None,
    newlines: str = "keep",
    date_order: str = "mdy",
    pii_kinds: Iterable[str] = PII_KINDS,
    phone_regions: tuple[str, ...] | None = None,
    phone_leniency: str | None = None,
) -> Iterator[dict]:
    """Yield each record with its text field normalized, or drop it through `on_drop`.

    Records whose field is missing or not a string (they only get here under --on-error keep)
    pass through unchanged. A dropped record is handed to `on_drop(record, reason, **detail)`
    unchanged, as it came in.
    """
    norm = TextNormalizer(steps, newlines=newlines, date_order=date_order, pii_kinds=pii_kinds,
                          phone_regions=phone_regions, phone_leniency=phone_leniency)
    filters = Filters() if filters is None else filters
    check = filters.check if filters.active else None
    empty_only = filters.only_empty and not explain
    stats = Stats() if stats is None else stats
    keys = split_path(field)
    flat = keys[0] if len(keys) == 1 else None
    redactor = norm.redactor
    step_counts = stats.steps
    # Most records hold ASCII text that no step changes and no filter but the empty one drops
    # (such a text is not empty): they pass after one check, skipping the bookkeeping below.
    ascii_unchanged = None
    scan = norm.fast.scan if norm.fast is not None else None
    if scan is None and norm.quick and norm.ascii_chain and not explain and (empty_only or check is None):
        ascii_unchanged = T.ascii_unchanged
    # With the C helper, one scan clears such a text whatever its script. The whitespace bits
    # always count here: a text of only whitespace is not one the empty filter may skip.
    skip = 0
    if scan is not None and not explain and (empty_only or check is None):
        skip = norm.relevant | norm.fast.B_WS | norm.fast.B_WS_X
    scanned = norm.scanned
    for rec in records:
        if flat is not None:
            text = rec.get(flat) if isinstance(rec, dict) else None
        else:
            text = get_field(rec, keys)
        if not isinstance(text, str):
            yield rec
            continue
        pii_before = None
        if scan is not None:  # (no pii step then)
            bits = scan(text)
            if skip and not bits & skip and text:
                yield rec
                continue
            new, changed = scanned(text, bits)
        else:
            if ascii_unchanged is not None and ascii_unchanged(text, newlines):
                yield rec
                continue
            if redactor is not None and explain:
                pii_before = dict(redactor.counts)
            new, changed = norm(text)
        info: dict[str, Any] | None = {} if explain else None
        if empty_only:
            if not new or new.isspace():
                if on_drop is not None:
                    on_drop(rec, "empty")
                continue
        elif check is not None:
            hit = check(new, info)
            if hit is not None:
                if on_drop is not None:
                    on_drop(rec, hit[0], **hit[1])
                continue
        if changed:
            stats.changed += 1
            for name in changed:
                step_counts[name] += 1
            if flat is not None:
                rec[flat] = new
            else:
                set_field(rec, keys, new)
        if info is not None:
            info = {"changed": changed, **info}
            if pii_before is not None:
                counts = redactor.counts  # type: ignore[union-attr]
                found = {k: counts[k] - pii_before.get(k, 0) for k in PII_KINDS if counts[k] - pii_before.get(k, 0)}
                if found:
                    info["pii"] = found
            _explain(rec, info)
        yield rec
    if redactor is not None:
        stats.pii.update(redactor.counts)
        redactor.counts.clear()


def _explain(record: dict, info: dict[str, Any]) -> None:
    """Merge into `_llmtools` without clobbering what other commands put there."""
    meta = record.get("_llmtools")
    if meta is None:
        record["_llmtools"] = {"normalize": info}
    elif isinstance(meta, dict):
        meta["normalize"] = info
    # a non-object `_llmtools` belongs to someone else: leave it alone
