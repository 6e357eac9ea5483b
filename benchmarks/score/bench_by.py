"""Throughput of `llmtools score --by` (100 groups) beside `llmtools score` on the same pairs.

Usage: .venv/bin/python benchmarks/score/bench_by.py [--pairs 100000] [--groups 100] [--repeats 3]

It writes seeded prediction/reference pairs (sentences of 8-20 words from a fixed vocabulary;
the prediction is the reference with a few words dropped or replaced; a `label`, and a `group`
field drawn uniformly from --groups values), then runs, interleaved, each in its own process:

    llmtools score --metric M --summary-only pairs.jsonl
    llmtools score --metric M --summary-only --by group pairs.jsonl

for M = exact_match (the cheapest metric: the worst case for the relative cost of --by),
M = accuracy,f1 (on a label field, `answer`, 3 classes) and M = bleu,chrf (sacrebleu: the usual
case). Throughput is pairs / child CPU time (user + sys);
the ratio is the median --by throughput over the median plain one (target: at least 0.8x).
It also checks that --by's groups add up: the per-group counts sum to the pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time

WORDS = ("the a model answer order ship date price customer channel email phone web refund late early "
         "quick brown fox jumps over lazy dog data token window group metric score value table").split()


def generate(path: str, n: int, groups: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            ref = [rng.choice(WORDS) for _ in range(rng.randint(8, 20))]
            pred = [w if rng.random() > 0.15 else rng.choice(WORDS) for w in ref if rng.random() > 0.05]
            label = rng.choice(("pos", "neg", "neu"))
            answer = label if rng.random() < 0.7 else rng.choice(("pos", "neg", "neu"))
            rec = {"id": i, "group": f"g{rng.randrange(groups):03d}", "reference": " ".join(ref),
                   "prediction": " ".join(pred), "label": label, "answer": answer}
            if rng.random() < 0.3:
                rec["prediction"] = rec["reference"]
            fh.write(json.dumps(rec) + "\n")


def run(cmd: list[str]) -> tuple[float, float, str]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {err.decode()}")
    return usage.ru_utime + usage.ru_stime, time.perf_counter() - start, out.decode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=100_000)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--metrics", default="exact_match;accuracy,f1;bleu,chrf", help="metric sets, ';'-separated")
    args = ap.parse_args()
    folder = tempfile.mkdtemp(prefix="score-by-")
    path = os.path.join(folder, "pairs.jsonl")
    generate(path, args.pairs, args.groups)
    exe = [sys.executable, "-m", "llmtools", "score", "--summary-only", "-q"]
    rows = []
    for metrics in args.metrics.split(";"):
        plain, by = [], []
        extra = ["--prediction-field", "answer"] if "accuracy" in metrics or "f1" in metrics else []
        for _ in range(args.repeats):
            cpu, wall, _ = run(exe + ["--metric", metrics, *extra, path])
            plain.append((cpu, wall))
            cpu, wall, out = run(exe + ["--metric", metrics, *extra, "--by", "group", path])
            by.append((cpu, wall))
            summary = json.loads(out.splitlines()[-1])
            counts = [g["n"] for g in summary["groups"]["group"].values()]
            assert sum(counts) == args.pairs and len(counts) == args.groups, (sum(counts), len(counts))
        p_cpu = statistics.median(c for c, _ in plain)
        b_cpu = statistics.median(c for c, _ in by)
        rows.append((metrics, p_cpu, b_cpu, statistics.median(w for _, w in plain), statistics.median(w for _, w in by)))
        print(f"{metrics}: plain {args.pairs / p_cpu:,.0f} pairs/s, --by {args.pairs / b_cpu:,.0f} pairs/s "
              f"({p_cpu / b_cpu:.2f}x)", flush=True)
    os.unlink(path)
    print()
    print(f"| metrics | score pairs/s | score --by group ({args.groups} groups) pairs/s | ratio | wall s (plain / --by) |")
    print("|---|---:|---:|---:|---|")
    for metrics, p_cpu, b_cpu, p_wall, b_wall in rows:
        print(f"| {metrics} | {args.pairs / p_cpu:,.0f} | {args.pairs / b_cpu:,.0f} | {p_cpu / b_cpu:.2f}x | "
              f"{p_wall:.1f} / {b_wall:.1f} |")


if __name__ == "__main__":
    main()
