"""normalize: clean, normalize, filter and redact the text field of JSONL records.

    normalize(records, field="text", steps=DEFAULT_STEPS, filters=Filters(...)) -> Iterator[dict]

The modules: steps (step names, order, `--steps`, the chain), cleaning (the default steps'
text functions), values (dates, currency, numbers), pii (redaction), filters (which records are
dropped), quality (Gopher rules), language (py3langid), records (the loop over records).
The opt-in pieces are imported on first use (see `__getattr__`): start-up time matters for a
command run once per small file.
"""

from __future__ import annotations

import importlib
from typing import Any

from llmtools.ops.normalize.filters import Filters
from llmtools.ops.normalize.records import Stats, normalize
from llmtools.ops.normalize.steps import (
    DEFAULT_STEPS,
    PII_KINDS,
    STEP_ORDER,
    STEPS,
    StepSpecError,
    TextNormalizer,
    normalize_text,
    parse_steps,
)

_LAZY = {
    "parse_kinds": "pii",
    "parse_phone_regions": "phones",
    "QualityConfig": "quality",
    "parse_quality_rules": "quality",
    "parse_quality_thresholds": "quality",
    "known_languages": "language",
}

__all__ = [
    "DEFAULT_STEPS", "PII_KINDS", "STEP_ORDER", "STEPS", "Filters", "Stats", "StepSpecError", "TextNormalizer",
    "normalize", "normalize_text", "parse_steps", *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
