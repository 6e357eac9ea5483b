"""dedup: exact and near-duplicate removal, and decontamination against reference sets.

    dedup(records, DedupOptions(...), record_id=..., on_drop=...) -> Iterator[dict]

The modules: deduper (options, the Deduper, reference sets), minhash (shingling and MinHash
signatures in batches; numpy and datasketch, imported when first needed), index (where what was
kept is remembered: memory, an .npz file, Redis). The last two load when first used (see
`__getattr__`): an exact-mode run needs neither.
"""

from __future__ import annotations

import importlib
from typing import Any

from llmtools.ops.dedup.deduper import (
    DedupOptions,
    Deduper,
    DedupStats,
    References,
    containment_ensemble,
    containment_windows,
    dedup,
    digest,
    record_ids,
    validator,
    window_starts,
)

_LAZY = {"Shingler": "minhash", "lsh_params": "minhash", "ExactIndex": "index", "NearIndex": "index",
         "FileStore": "index", "exact_jaccard": "index", "BandTable": "bands"}

__all__ = ["DedupOptions", "DedupStats", "Deduper", "References", "containment_ensemble", "containment_windows", "dedup",
           "digest", "record_ids", "validator", "window_starts", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
