"""Dedup speed for ~1 KB documents at 128 permutations, side by side:

1. plain loop: one datasketch MinHash per document, `update()` per word-5-gram (sha1 hash);
2. datasketch `MinHash.bulk` (update_batch per document, sha1 hash);
3. llmtools' batched signatures (ops/dedup/minhash.py Shingler: same datasketch permutations, batched);
4. llmtools' dedup work in-process (sign + MinHashLSH query/insert), --jobs 1 and 2;
5. `llmtools dedup` end to end as a process (start-up, JSONL parse, sign, LSH, write), --jobs
   1 and 2, wall time and CPU time (user + system of the command and its workers).

"docs/s per core" is documents per CPU-second of the command (all its processes): on a shared
machine it is steadier than wall time, and for --jobs 2 it divides by the cores actually used.
Two corpora: `overlap` (consecutive runs of the Python docs, ~87% of them near-duplicates) and
`mixed` (random runs of sentences, 20% near-copies with 1% of words changed: mostly distinct,
as a crawl is). Start-up (`llmtools dedup` on empty input) is measured on its own too.

Run: .venv/bin/python benchmarks/dedup/bench_speed.py [--docs N] [--corpus overlap|mixed|both]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
from data import kb_docs, mixed_docs  # noqa: E402


def shingles(text: str) -> list[bytes]:
    toks = text.lower().split()
    return [" ".join(toks[i : i + 5]).encode() for i in range(max(1, len(toks) - 4))]


def run_cli(args: list[str], stdin=None, src: str | None = None) -> tuple[float, float]:
    """(wall s, CPU s of the process and its waited-for workers); `src`: run llmtools from there."""
    env = dict(os.environ, PYTHONPATH=src) if src else None
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "llmtools", *args], check=True, stdin=stdin, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def bench(name: str, docs: list[str], tmp: str, baseline: str | None = None) -> list[tuple[str, float, float | None]]:
    from datasketch import MinHash

    from llmtools.ops.dedup import DedupOptions, Deduper, Shingler

    rows: list[tuple[str, float, float | None]] = []
    sub = docs[:2000]
    t = time.perf_counter()
    for d in sub:
        m = MinHash(num_perm=128)
        for s in shingles(d):
            m.update(s)
    rows.append(("datasketch MinHash.update loop (per shingle), in-process", len(sub) / (time.perf_counter() - t), None))
    t = time.perf_counter()
    MinHash.bulk([shingles(d) for d in sub], num_perm=128)
    rows.append(("datasketch MinHash.bulk (update_batch per doc), in-process", len(sub) / (time.perf_counter() - t), None))
    sh = Shingler()
    t = time.perf_counter()
    for i in range(0, len(docs), 1024):
        sh.signatures(docs[i : i + 1024])
    rows.append(("llmtools batched signatures, in-process", len(docs) / (time.perf_counter() - t), None))
    for jobs in (1, 2):
        recs = [{"id": i, "text": d} for i, d in enumerate(docs)]
        d = Deduper(DedupOptions(jobs=jobs))
        t = time.perf_counter()
        kept = sum(1 for _ in d.run(iter(recs), lambda r: r["id"], lambda *a, **k: None))
        dt = time.perf_counter() - t
        d.close(True)
        rows.append((f"llmtools dedup work (sign + LSH), in-process, --jobs {jobs} ({kept} kept)", len(docs) / dt, None))
    path = os.path.join(tmp, f"{name}.jsonl")
    with open(path, "w") as fh:
        for i, d in enumerate(docs):
            fh.write(json.dumps({"id": i, "text": d}) + "\n")
    for jobs in (1, 2):
        best = None
        for _ in range(2):
            wall, cpu = run_cli(["dedup", "--jobs", str(jobs), path])
            best = (wall, cpu) if best is None or wall < best[0] else best
        rows.append((f"`llmtools dedup --jobs {jobs}` end to end (incl. start-up)", len(docs) / best[0], len(docs) / best[1]))
    if baseline:  # --jobs 1, this tree and the baseline alternating, best CPU of 3 each
        runs: dict = {"this tree": [], "baseline": []}
        for _ in range(3):
            for label, src in (("this tree", None), ("baseline", baseline)):
                runs[label].append(run_cli(["dedup", path], src=src))
        for label, got in runs.items():
            wall, cpu = min(got, key=lambda x: x[1])
            rows.append((f"`llmtools dedup` end to end, {label}, alternating (best CPU of 3)", len(docs) / wall, len(docs) / cpu))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--corpus", choices=["overlap", "mixed", "both"], default="both")
    ap.add_argument("--baseline", help="src folder of another llmtools (e.g. main's) to run alternately, end to end")
    args = ap.parse_args()
    corpora = {"overlap": kb_docs, "mixed": mixed_docs}
    names = list(corpora) if args.corpus == "both" else [args.corpus]
    with tempfile.TemporaryDirectory() as tmp:
        starts = []
        for _ in range(5):
            with open(os.devnull, "rb") as empty:
                starts.append(run_cli(["dedup"], stdin=empty))
        wall, cpu = min(starts)
        print(f"start-up (`llmtools dedup` on empty input, best of 5): {wall * 1000:.0f} ms wall, {cpu * 1000:.0f} ms CPU")
        for name in names:
            docs = corpora[name](args.docs)
            avg = sum(len(d) for d in docs) / len(docs)
            rows = bench(name, docs, tmp, args.baseline)
            base = rows[0][1]
            print(f"\n{name}: {len(docs)} docs, mean {avg:.0f} chars, 128 perms, word 5-grams, cpus={os.cpu_count()}, "
                  f"load average {os.getloadavg()[0]:.1f}")
            print("| method | docs/s (wall) | docs/s per core (CPU) | vs update loop |")
            print("|---|---:|---:|---:|")
            for label, rate, per_core in rows:
                pc = f"{per_core:,.0f}" if per_core else "-"
                print(f"| {label} | {rate:,.0f} | {pc} | {rate / base:.1f}x |")


if __name__ == "__main__":
    main()
