"""Signature speed for ~1 KB documents at 128 permutations, side by side:

1. plain loop: one datasketch MinHash per document, `update()` per word-5-gram (sha1 hash);
2. datasketch `MinHash.bulk` (update_batch per document, sha1 hash);
3. llmtools' batched signatures (dedup_hash.Shingler: same datasketch permutations, batched);
4. `llmtools dedup` end to end (parse JSONL, sign, LSH query+insert, write), --jobs 1 and 2.

Run: .venv/bin/python benchmarks/dedup/bench_speed.py [N]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from data import kb_docs  # noqa: E402


def shingles(text: str) -> list[bytes]:
    toks = text.lower().split()
    return [" ".join(toks[i : i + 5]).encode() for i in range(max(1, len(toks) - 4))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    docs = kb_docs(n)
    avg = sum(len(d) for d in docs) / len(docs)
    from datasketch import MinHash

    from llmtools.ops.dedup_hash import Shingler

    rows = []
    sub = docs[:2000]
    t = time.perf_counter()
    for d in sub:
        m = MinHash(num_perm=128)
        for s in shingles(d):
            m.update(s)
    rows.append(("datasketch MinHash.update loop (per shingle)", len(sub) / (time.perf_counter() - t)))
    t = time.perf_counter()
    MinHash.bulk([shingles(d) for d in sub], num_perm=128)
    rows.append(("datasketch MinHash.bulk (update_batch per doc)", len(sub) / (time.perf_counter() - t)))
    sh = Shingler()
    t = time.perf_counter()
    for i in range(0, len(docs), 1024):
        sh.signatures(docs[i : i + 1024])
    rows.append(("llmtools batched signatures (1 process)", len(docs) / (time.perf_counter() - t)))
    from llmtools.ops.dedup import DedupOptions, Deduper

    for jobs in (1, 2):
        recs = [{"id": i, "text": d} for i, d in enumerate(docs)]
        d = Deduper(DedupOptions(jobs=jobs))
        t = time.perf_counter()
        kept = sum(1 for _ in d.run(iter(recs), lambda r: r["id"], lambda *a, **k: None))
        dt = time.perf_counter() - t
        d.close(True)
        rows.append((f"llmtools dedup ops (sign + LSH query/insert), --jobs {jobs}", len(docs) / dt))
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.jsonl")
        with open(path, "w") as fh:
            for i, d in enumerate(docs):
                fh.write(json.dumps({"id": i, "text": d}) + "\n")
        for jobs in (1, 2):
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "llmtools", "dedup", "--jobs", str(jobs), path], check=True, stdout=subprocess.DEVNULL)
            dt = time.perf_counter() - t
            rows.append((f"llmtools dedup end to end, --jobs {jobs} (incl. ~1 s start-up)", len(docs) / dt))
    base = rows[0][1]
    print(f"{len(docs)} docs, mean {avg:.0f} chars, 128 perms, word 5-grams, cpus={os.cpu_count()}")
    print("| method | docs/s | vs update loop |")
    print("|---|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.1f}x |")


if __name__ == "__main__":
    main()
