#!/usr/bin/env python3
"""Benchmark the input and output formats and --schema.

Run from the repository root:  .venv/bin/python benchmarks/io/bench.py [--records N] [--runs N]
                                   [--big-gb G] [--baseline-src DIR]

1. Throughput, the same records three ways, as subprocesses, interleaved, median of --runs:
   (a) JSONL -> `llmtools normalize` -> JSONL (-o out.jsonl),
   (b) Parquet -> `llmtools normalize` -> Parquet (-o out.parquet),
   (c) pyarrow's own read-then-write of the same Parquet file (pq.read_table, pq.write_table with
       zstd and the same row groups): the limit for any Parquet-to-Parquet tool.
   Each with the default steps and with `--steps none` (the I/O path alone). Targets: (b) at
   least 0.8x (a)'s records/s, and at least 30% of (c)'s.
2. Memory: peak RSS of `normalize` reading an uncompressed Parquet file of --big-gb GB and of one
   a quarter that size (row groups of 16k rows of 2 KB text): flat means bounded.
3. --schema: records/s per core (CPU time) of llmtools.schema.SchemaCheck on a 10-field schema
   (valid records), against jsonschema's own Draft202012Validator.is_valid. Target 100k/s.
4. With --baseline-src DIR (a checkout's src/ folder, e.g. `git archive main src`): the JSONL
   path of this tree against that one, interleaved, so a change to io.py can be seen not to slow
   the JSONL fast path.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))
BIN = Path(sys.executable).parent
LLMTOOLS = [sys.executable, "-m", "llmtools"]

WORDS = ("the of and to in is that for it as with was on be by this are or from at an which have not model data "
         "training text language learning example function value result system number write explain summarize "
         "translate question answer because however therefore first second python code list string return file "
         "user input output error memory performance network café naïve “quoted” it’s").split()


def records(n: int, seed: int = 1) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 160)))
        out.append({"id": i, "text": text[0].upper() + text[1:] + ".", "source": rng.choice(["web", "chat", "email"]),
                    "meta": {"lang": "en", "score": round(rng.random(), 3)}, "tags": rng.sample(["a", "b", "c", "d"], 2)})
    return out


def run(cmd: list[str], env: dict | None = None) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one subprocess."""
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


PASS_THROUGH = ("import sys, pyarrow.parquet as pq; "
                "pq.write_table(pq.read_table(sys.argv[1]), sys.argv[2], compression='zstd', row_group_size=65536)")


def throughput(n: int, runs: int, tmp: Path, env: dict) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = records(n)
    src_jsonl = tmp / "in.jsonl"
    src_jsonl.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in recs))
    src_parquet = tmp / "in.parquet"
    pq.write_table(pa.Table.from_pylist(recs), str(src_parquet), compression="zstd", row_group_size=65536)
    print(f"{n} records: JSONL {src_jsonl.stat().st_size / 2**20:.1f} MB, Parquet {src_parquet.stat().st_size / 2**20:.1f} MB")
    cases = {
        "jsonl default": LLMTOOLS + ["normalize", "-q", str(src_jsonl), "-o", str(tmp / "out.jsonl")],
        "parquet default": LLMTOOLS + ["normalize", "-q", str(src_parquet), "-o", str(tmp / "out.parquet")],
        "jsonl none": LLMTOOLS + ["normalize", "--steps", "none", "-q", str(src_jsonl), "-o", str(tmp / "out.jsonl")],
        "parquet none": LLMTOOLS + ["normalize", "--steps", "none", "-q", str(src_parquet), "-o", str(tmp / "out.parquet")],
        "pyarrow pass-through": [sys.executable, "-c", PASS_THROUGH, str(src_parquet), str(tmp / "pa.parquet")],
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in cases}
    for _ in range(runs):
        for name, cmd in cases.items():
            wall, cpu, _ = run(cmd, env)
            times[name].append((wall, cpu))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    print(f"\n| path | wall s | CPU s | records/s (wall) | records/s (CPU) |\n|---|---:|---:|---:|---:|")
    for name, (wall, cpu) in med.items():
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {n / wall:,.0f} | {n / cpu:,.0f} |")
    print()
    for steps in ("default", "none"):
        pq_, jl, pa_ = med[f"parquet {steps}"], med[f"jsonl {steps}"], med["pyarrow pass-through"]
        print(f"steps {steps}: Parquet path / JSONL path = {jl[0] / pq_[0]:.2f}x wall, {jl[1] / pq_[1]:.2f}x CPU "
              f"(target >= 0.8x); / pyarrow pass-through = {pa_[0] / pq_[0]:.0%} wall, {pa_[1] / pq_[1]:.0%} CPU (target >= 30%)")


def memory(big_gb: float, tmp: Path, env: dict) -> None:
    """Peak RSS is the child's own VmHWM, written by the PEAK_RSS wrapper as it exits: it starts
    afresh at exec, where ru_maxrss would also count this process's size at the fork."""
    import re

    from tests.test_formats import PEAK_RSS, write_big_parquet

    print("\n| Parquet file | rows | normalize wall s | peak RSS MB |\n|---|---:|---:|---:|")
    for gb in (big_gb / 4, big_gb):
        path = tmp / f"big-{gb:g}.parquet"
        rows = write_big_parquet(str(path), int(gb * 2**30))
        t = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", PEAK_RSS, "normalize", "-q", str(path), "-o", os.devnull],
                                stderr=subprocess.PIPE, env=env)
        _, err = proc.communicate()
        wall = time.perf_counter() - t
        peak = int(re.search(r"peak-rss-kb=(\d+)", err.decode())[1]) / 1024
        print(f"| {path.stat().st_size / 2**30:.2f} GB | {rows} | {wall:.1f} | {peak:.0f} |")
        path.unlink()


SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["id", "prompt", "completion", "lang", "priority", "tags", "meta"],
    "properties": {
        "id": {"type": "integer", "minimum": 0},
        "prompt": {"type": "string", "minLength": 1},
        "completion": {"type": "string"},
        "lang": {"enum": ["en", "de", "fr"]},
        "priority": {"type": "string", "pattern": "^(low|normal|high)$"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 10},
        "created": {"type": "string"},
        "customer": {"type": ["string", "null"]},
        "meta": {"type": "object", "required": ["source"],
                 "properties": {"source": {"type": "string"}, "channel": {"enum": ["web", "chat", "email"]}}},
    },
    "additionalProperties": False,
}


def validation(n: int = 50_000) -> None:
    import jsonschema

    from llmtools.schema import SchemaCheck

    rng = random.Random(2)
    recs = [{"id": i, "prompt": "How do I reset my password? " * rng.randint(1, 4), "completion": "Go to settings.",
             "lang": rng.choice(["en", "de", "fr"]), "priority": rng.choice(["low", "normal", "high"]),
             "score": rng.random(), "tags": ["account", "login"][: rng.randint(0, 2)], "created": "2024-01-01",
             "customer": rng.choice([None, "acme"]), "meta": {"source": "email", "channel": "web"}} for i in range(n)]
    check = SchemaCheck(SCHEMA)
    plain = jsonschema.Draft202012Validator(SCHEMA).is_valid
    print(f"\n--schema, 10-field schema, {n} valid records, CPU time, best of 3 (engine: {check.engine})")
    for name, fn, ok in (("llmtools SchemaCheck", check, None), ("jsonschema is_valid", plain, True)):
        best = float("inf")
        for _ in range(3):
            t = time.process_time()
            assert all(fn(r) is ok for r in recs)
            best = min(best, time.process_time() - t)
        print(f"  {name}: {n / best:,.0f} records/s per core")


def baseline(src: str, n: int, runs: int, tmp: Path, env: dict) -> None:
    path = tmp / "base.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records(n, seed=3)))
    base_env = {**env, "PYTHONPATH": src}
    cmd = LLMTOOLS + ["normalize", "--steps", "none", "-q", str(path), "-o", os.devnull]
    got: dict[str, list[float]] = {"this tree": [], "baseline": []}
    for _ in range(runs):
        got["this tree"].append(run(cmd, env)[1])
        got["baseline"].append(run(cmd, base_env)[1])
    this, base = statistics.median(got["this tree"]), statistics.median(got["baseline"])
    print(f"\nJSONL fast path (normalize --steps none, {n} records, CPU s, median of {runs}): this tree {this:.2f}, "
          f"baseline {base:.2f}: {base / this:.2f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--big-gb", type=float, default=2.0)
    ap.add_argument("--baseline-src", metavar="DIR")
    ap.add_argument("--only", choices=["throughput", "memory", "validation", "baseline"], action="append")
    args = ap.parse_args()
    only = set(args.only or ["throughput", "memory", "validation", "baseline"])
    print(f"load average before: {os.getloadavg()}")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    with tempfile.TemporaryDirectory(prefix="llmtools-io-bench-") as tmp:
        if "throughput" in only:
            throughput(args.records, args.runs, Path(tmp), env)
        if "validation" in only:
            validation()
        if "baseline" in only and args.baseline_src:
            baseline(args.baseline_src, args.records, args.runs, Path(tmp), env)
        if "memory" in only:
            memory(args.big_gb, Path(tmp), env)
    print(f"load average after: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
