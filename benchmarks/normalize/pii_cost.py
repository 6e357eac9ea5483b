#!/usr/bin/env python3
"""What PII redaction costs per record, in-process, for one or more checkouts side by side.

    .venv/bin/python benchmarks/normalize/pii_cost.py --src new=src --src old=/tmp/old/src --rounds 5

Each round runs one fresh worker process per checkout (interleaved, so a busy machine slows
them alike) and reports, per checkout, medians over the rounds:

- import: `import phonenumbers` and `import email_validator` in a fresh process (ms);
- first phone: the first text holding a number, i.e. phonenumbers' import plus the default
  regions' metadata (ms), with the redactor already built;
- per record (us): `Redactor(all)` on the short records of bench.py (0.8 KB, ~5% with a
  digit), the same texts with a different phone number appended to each (so the matcher's
  cache never helps), with a different email address, and with a date range.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _redactor_class():
    for name in ("llmtools.ops.normalize.pii", "llmtools.ops.normalize_pii"):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, "Redactor"):
            return mod
    raise SystemExit("no Redactor found")


def worker(n: int) -> dict:
    out: dict[str, float] = {}
    t = time.perf_counter()
    mod = _redactor_class()
    out["import pii module ms"] = (time.perf_counter() - t) * 1e3
    sys.path.insert(0, str(HERE))
    import bench

    rng = random.Random(7)
    base = [bench.record(rng, i)["text"] for i in range(n)]
    phones = [f"{t} Call me on 020 7946 {i % 10000:04d} or +44 113 496 {i % 10000:04d}." for i, t in enumerate(base)]
    emails = [f"{t} Write to user{i}.name@example{i % 97}.com today." for i, t in enumerate(base)]
    dates = [f"{t} It ran from 2019-2020 and 1990-2000." for t in base]
    red = mod.Redactor(mod.PII_KINDS)
    t = time.perf_counter()
    red("call 020 7946 0958 now")
    out["first phone ms"] = (time.perf_counter() - t) * 1e3
    for name, texts in (("corpus", base), ("+2 phones", phones), ("+email", emails), ("+date ranges", dates)):
        red = mod.Redactor(mod.PII_KINDS)
        red(texts[0])
        t = time.perf_counter()
        for text in texts:
            red(text)
        out[f"{name} us/record"] = (time.perf_counter() - t) / len(texts) * 1e6
    return out


def import_ms(python: str, env: dict, module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print((time.perf_counter() - t) * 1e3)"
    proc = subprocess.run([python, "-c", code], capture_output=True, env=env, check=True)
    return float(proc.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", action="append", required=True, metavar="LABEL=PATH")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--records", type=int, default=3000)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.records)))
        return
    srcs = [s.split("=", 1) for s in args.src]
    results: dict[str, dict[str, list[float]]] = {label: {} for label, _ in srcs}
    for _ in range(args.rounds):
        for label, path in srcs:
            env = dict(os.environ, PYTHONPATH=str(Path(path).resolve()))
            proc = subprocess.run([sys.executable, __file__, "--worker", "--records", str(args.records),
                                   "--src", "x=y"], capture_output=True, env=env)
            if proc.returncode:
                sys.exit(proc.stderr.decode()[-2000:])
            row = json.loads(proc.stdout)
            for mod in ("phonenumbers", "email_validator"):
                row[f"import {mod} ms"] = import_ms(sys.executable, env, mod)
            for k, v in row.items():
                results[label].setdefault(k, []).append(v)
    keys = list(next(iter(results.values())))
    print("| measure | " + " | ".join(label for label, _ in srcs) + " |")
    print("|---|" + "---:|" * len(srcs))
    for k in keys:
        cells = []
        for label, _ in srcs:
            vals = results[label][k]
            cells.append(f"{statistics.median(vals):.1f} ({min(vals):.1f}-{max(vals):.1f})")
        print(f"| {k} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
