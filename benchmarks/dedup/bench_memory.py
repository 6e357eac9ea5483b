"""Bytes per indexed document: in memory (tracemalloc over the index) and on disk (.npz).

Run: .venv/bin/python benchmarks/dedup/bench_memory.py [N]
"""

from __future__ import annotations

import os
import sys
import tempfile
import tracemalloc

sys.path.insert(0, os.path.dirname(__file__))
from data import kb_docs  # noqa: E402

from llmtools.ops.dedup import ExactIndex, FileStore, NearIndex, Shingler  # noqa: E402


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    docs = kb_docs(n)
    sh = Shingler()
    sigs = sh.signatures(docs)
    import numpy as np

    rng = np.random.default_rng(0)
    sigs = rng.integers(0, 2**32, size=sigs.shape, dtype=np.uint32)  # all distinct: every doc is indexed
    tracemalloc.start()
    index = NearIndex(sh, 0.8)
    index.claim([(sigs[i], f"doc-{i:06d}", None) for i in range(n)])
    near_mem = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    tracemalloc.start()
    ex = ExactIndex()
    ex.claim([(os.urandom(16), f"doc-{i:06d}") for i in range(n)])
    exact_mem = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "i.npz")
        FileStore(path, {"format": "x"}).save(index)
        near_disk = os.path.getsize(path)
        FileStore(path, {"format": "x"}).save(ex)
        exact_disk = os.path.getsize(path)
    b, r = getattr(index, "bands", (9, 13))  # an index from before bands were chosen: MinHashLSH 9x13
    store = "band table" if hasattr(index, "table") else "datasketch MinHashLSH"
    print(f"{n} indexed documents, ids like 'doc-000123', 128 perms, threshold 0.8 ({b} bands x {r} rows)")
    print("| index | memory bytes/doc | .npz bytes/doc |")
    print("|---|---:|---:|")
    print(f"| near ({store} {b}x{r} + signatures) | {near_mem / n:,.0f} | {near_disk / n:,.0f} |")
    print(f"| exact (digest -> id) | {exact_mem / n:,.0f} | {exact_disk / n:,.0f} |")


if __name__ == "__main__":
    main()
