"""Throughput and peak memory of `llmtools watch` on generated serve-log events.

Usage: .venv/bin/python benchmarks/watch/bench.py [--sizes 100000,1000000] [--keep DIR]

For each size it writes a serve request log (seeded: lognormal latency, 2% errors, token counts,
model identity, ISO times 20 ms apart) and runs, each in its own process with stdin from the file:

- floor:  a bare Python loop that reads the lines and parses them with orjson (the least any
          JSONL reader in Python pays), for scale;
- watch:  `llmtools watch --window 1m` (metrics + drift against the first window);
- watch+: the same with a sliding window, three alert rules, a price and a vocabulary field;
- watch --by: `--by channel` over 1,000 distinct channels (uniform), with a gap() alert, once
          with --top-groups 1000 (every group tracked) and once with the default 20.

Events/s is events divided by the child's CPU time (user + sys), so it is per core and less
sensitive to other jobs on a shared machine; wall time is shown too. Peak RSS is the child's
ru_maxrss. Memory is flat when the 1M-event RSS equals the 100k one.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import orjson

FLOOR = "import sys, orjson\nn = 0\nfor line in sys.stdin.buffer:\n    orjson.loads(line); n += 1\nprint(n)"

PROMPTS = ["what is the capital of france", "summarize this support ticket", "write a haiku about rain",
           "translate good morning to german", "explain quantization in one line"]


def generate(path: str, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    t0 = 1_700_000_000.0
    with open(path, "wb") as fh:
        for i in range(n):
            lat = rng.lognormvariate(5.5, 0.5)
            rec = {
                "time": datetime.fromtimestamp(t0 + i * 0.02, tz=timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                "request_id": f"req-{i:08d}",
                "model": {"name": "smollm2", "format": "gguf", "sha256": "9f2c51e0"},
                "endpoint": "/v1/chat/completions",
                "status": 500 if rng.random() < 0.02 else 200,
                "latency_ms": round(lat, 2),
                "ttft_ms": round(lat * rng.uniform(0.1, 0.3), 2),
                "prompt_tokens": rng.randint(8, 400),
                "completion_tokens": rng.randint(1, 256),
                "prompt": rng.choice(PROMPTS),
                "channel": f"ch-{rng.randrange(1000):04d}",
            }
            fh.write(orjson.dumps(rec) + b"\n")


def run(cmd: list[str], stdin_path: str) -> dict:
    with open(stdin_path, "rb") as stdin, open(os.devnull, "wb") as devnull:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=stdin, stdout=devnull, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{cmd} failed: {err}")
    return {"cpu": usage.ru_utime + usage.ru_stime, "wall": wall, "rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--keep", help="keep the generated logs in this folder")
    ap.add_argument("--only", help="run only the variants whose name contains one of these (comma-separated)")
    args = ap.parse_args()
    exe = [sys.executable, "-m", "llmtools", "watch"]
    variants = {
        "floor (orjson loop)": [sys.executable, "-c", FLOOR],
        "watch --window 1m": exe + ["--window", "1m", "-q"],
        "watch+ (sliding, 3 alerts, price, vocab)": exe + [
            "--window", "5m", "--sliding", "--every", "1m", "--price", "0.5,1.5", "--vocab", "prompt", "-q",
            "--alert", "p95_latency_ms > 800 for 2m", "--alert", "error_rate > 0.05",
            "--alert", "psi(prompt_tokens) > 0.2"],
        "watch --by (1k groups, --top-groups 1000)": exe + [
            "--window", "1m", "-q", "--by", "channel", "--top-groups", "1000", "--alert", "gap(error_rate) > 0.5"],
        "watch --by (1k groups, --top-groups 20)": exe + [
            "--window", "1m", "-q", "--by", "channel", "--alert", "gap(error_rate) > 0.5"],
    }
    if args.only:
        wanted = [w.strip() for w in args.only.split(",")]
        variants = {k: v for k, v in variants.items() if any(w in k for w in wanted)}
    folder = args.keep or tempfile.mkdtemp(prefix="watch-bench-")
    os.makedirs(folder, exist_ok=True)
    rows = []
    for n in [int(x) for x in args.sizes.split(",")]:
        path = os.path.join(folder, f"serve-{n}.jsonl")
        if not os.path.exists(path):
            generate(path, n)
        for name, cmd in variants.items():
            r = run(cmd, path)
            rows.append((name, n, n / r["cpu"], r["wall"], r["rss_mb"]))
            print(f"{name:42s} {n:>9,d} events  {n / r['cpu']:>10,.0f} events/s (CPU)  "
                  f"wall {r['wall']:6.2f} s  peak RSS {r['rss_mb']:6.1f} MB", flush=True)
        if not args.keep:
            os.unlink(path)
    print()
    print("| run | events | events/s per core | wall s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for name, n, eps, wall, rss in rows:
        print(f"| {name} | {n:,} | {eps:,.0f} | {wall:.2f} | {rss:.1f} |")


if __name__ == "__main__":
    main()
