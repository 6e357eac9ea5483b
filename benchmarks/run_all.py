#!/usr/bin/env python3
"""Run every benchmark's main script in turn (`make benchmarks`); each prints its own table.

    .venv/bin/python benchmarks/run_all.py [NAME ...]   # e.g. normalize watch

Expect tens of minutes on 2 cores in all; run one folder's script directly for a single figure.
The tables in each folder's README were made with these scripts.
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = {
    "normalize": ["normalize/bench.py"],
    "dedup": ["dedup/bench_speed.py", "dedup/bench_quality.py", "dedup/bench_memory.py"],
    "augment": ["augment/bench.py"],
    "finetune": ["finetune/bench.py", "finetune/tracking_overhead.py"],
    "score": ["score/bench.py"],
    "quantize": ["quantize/bench.py"],
    "serve": ["serve/bench.py"],
    "watch": ["watch/bench.py"],
    "models": ["models/bench.py"],
    "io": ["io/bench.py"],
}


def main() -> int:
    names = sys.argv[1:] or list(SCRIPTS)
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(SCRIPTS)}", file=sys.stderr)
        return 2
    failed = []
    for name in names:
        for script in SCRIPTS[name]:
            print(f"\n=== {name}: {script}", flush=True)
            if subprocess.run([sys.executable, os.path.join(HERE, script)]).returncode != 0:
                failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
