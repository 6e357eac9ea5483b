"""Benchmark: `llmtools score --metric bleu,chrf` against the sacrebleu CLI on the same 10k pairs.

Both get the same sentences: sacrebleu reads ref.txt and hyp.txt, llmtools reads the same pairs
as JSONL and additionally writes every record back with its sentence-level BLEU and chrF, then
the summary. Runs are interleaved (A B A B ...) so load from other jobs hits both alike; the
table reports the median wall time and the median CPU time (user + sys) of each.

    .venv/bin/python benchmarks/score/bench.py [--pairs 10000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)


def timed(cmd: list[str], stdout) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    work = tempfile.mkdtemp(prefix="score-bench-")
    subprocess.run([sys.executable, os.path.join(HERE, "make_data.py"), work, str(args.pairs)], check=True)
    ref, hyp, pairs = (os.path.join(work, n) for n in ("ref.txt", "hyp.txt", "pairs.jsonl"))
    out_path = os.path.join(work, "scored.jsonl")
    sb_cmd = [os.path.join(BIN, "sacrebleu"), ref, "-i", hyp, "-m", "bleu", "chrf", "-w", "4", "-f", "json"]
    lt_cmd = [os.path.join(BIN, "llmtools"), "score", "--metric", "bleu,chrf", pairs]

    # Correctness first: the corpus scores must be sacrebleu's.
    sb = json.loads(subprocess.run(sb_cmd, capture_output=True, text=True, check=True).stdout)
    with open(out_path, "wb") as fh:
        subprocess.run(lt_cmd, stdout=fh, check=True)
    with open(out_path, "rb") as fh:
        lines = fh.read().splitlines()
    summary = json.loads(lines[-1])
    assert len(lines) == args.pairs + 1
    for entry, key in zip(sb, ("bleu", "chrf")):
        ours = round(summary["metrics"][key], 4)
        assert ours == entry["score"], (key, ours, entry["score"])
        assert summary["signatures"][key] == entry["signature"], key
    print(f"corpus scores equal: BLEU {summary['metrics']['bleu']:.4f}, chrF {summary['metrics']['chrf']:.4f}")

    walls = {"sacrebleu": [], "llmtools": []}
    cpus = {"sacrebleu": [], "llmtools": []}
    for _ in range(args.repeats):
        for name, cmd in (("sacrebleu", sb_cmd), ("llmtools", lt_cmd)):
            with open(out_path, "wb") as fh:
                w, c = timed(cmd, fh)
            walls[name].append(w)
            cpus[name].append(c)
    med = {k: (statistics.median(walls[k]), statistics.median(cpus[k])) for k in walls}
    print(f"\n{args.pairs} pairs, {args.repeats} interleaved runs each, medians")
    print("| tool | wall s | CPU s | output |")
    print("|---|---|---|---|")
    print(f"| sacrebleu CLI (`-m bleu chrf`) | {med['sacrebleu'][0]:.2f} | {med['sacrebleu'][1]:.2f} | corpus scores |")
    print(f"| llmtools score --metric bleu,chrf | {med['llmtools'][0]:.2f} | {med['llmtools'][1]:.2f} | corpus + per-record sentence scores |")
    print(f"| speed-up (sacrebleu / llmtools) | {med['sacrebleu'][0] / med['llmtools'][0]:.2f}x | {med['sacrebleu'][1] / med['llmtools'][1]:.2f}x | |")
    print("\nall runs (wall s):", {k: [round(x, 2) for x in v] for k, v in walls.items()})


if __name__ == "__main__":
    main()
