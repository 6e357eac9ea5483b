#!/usr/bin/env python3
"""augment throughput: variants/s for synonym and eda, and paraphrase on the default model.

    .venv/bin/python benchmarks/augment/bench.py [--records 2000] [--llm-records 16]

Runs each method through the real CLI on generated support-ticket sentences and reports
variants per second of wall time (start-up and WordNet loading included, then excluded by
subtracting a 1-record run).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

WORDS = ("order package delivery refund kettle router camera account password invoice charge "
         "customer arrived damaged broken late missing wrong colour support team replacement").split()


def make_input(path: str, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as fh:
        for i in range(n):
            words = [rng.choice(WORDS) for _ in range(rng.randint(12, 30))]
            fh.write(json.dumps({"id": i, "text": "The " + " ".join(words) + "."}) + "\n")


def run(args: list[str], path: str) -> tuple[float, int]:
    start = time.perf_counter()
    with open(path, "rb") as fh:
        proc = subprocess.run([sys.executable, "-m", "llmtools", "augment", "--no-keep-original", "-q", *args],
                              stdin=fh, capture_output=True, check=True)
    return time.perf_counter() - start, proc.stdout.count(b"\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--llm-records", type=int, default=16)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    big, one, small = (os.path.join(tmp, f) for f in ("big.jsonl", "one.jsonl", "small.jsonl"))
    make_input(big, args.records)
    make_input(one, 1)
    make_input(small, args.llm_records)
    rows = []
    for method in ("synonym", "eda"):
        base, _ = run(["--method", method, "-n", "4"], one)
        wall, n = run(["--method", method, "-n", "4"], big)
        rows.append((method, "-", args.records, n, wall, base))
    for batch in (1, 8):
        a = ["--method", "paraphrase", "--batch-size", str(batch), "--max-tokens", "48", "--seed", "1"]
        base, _ = run(a, one)
        wall, n = run(a, small)
        rows.append(("paraphrase (smollm2, llama.cpp)", batch, args.llm_records, n, wall, base))
    print("| method | batch | records | variants | wall s | 1-record run s | variants/s (wall) | variants/s after start-up |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method, batch, recs, n, wall, base in rows:
        # start-up (imports, WordNet or model load) is measured by the 1-record run
        steady = f"{n / (wall - base):.1f}" if wall - base > 0.5 else "n/a (within noise)"
        print(f"| {method} | {batch} | {recs} | {n} | {wall:.1f} | {base:.1f} | {n / wall:.1f} | {steady} |")


if __name__ == "__main__":
    main()
