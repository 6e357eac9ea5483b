#!/usr/bin/env python3
"""Benchmark `llmtools normalize`: start-up time and default-steps throughput.

Run from the repository root:  .venv/bin/python benchmarks/normalize/bench.py [--records N] [--runs N]

Start-up: the median wall time of `llmtools --help` and of `llmtools normalize` on a one-record
file, against `python -c "import click, orjson"` in the same venv (the floor any click + orjson
CLI pays). Runs are interleaved so a busy machine slows all three alike.

Throughput: a generated file of realistic records (instruction/response text, some curly quotes
and accents, some mojibake, stray whitespace, extra fields), read and written by
(a) a plain orjson loop: for each line, orjson.loads then orjson.dumps, and
(b) `llmtools normalize` with its default steps,
both as subprocesses reading the file and writing to /dev/null. Interleaved, median of --runs.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
LLMTOOLS = str(BIN / "llmtools")

WORDS = (
    "the of and to in is that for it as with was on be by this are or from at an which have not "
    "model data training text language learning example function value result system number "
    "write explain summarize translate question answer because however therefore first second "
    "python code list string return file user input output error memory performance network"
).split()
ACCENTED = ["café", "naïve", "résumé", "Zürich", "São Paulo", "déjà vu", "Ångström", "façade"]
CURLY = ["“quoted”", "it’s", "don’t", "‘single’", "2010–2020", "a — b"]
MOJIBAKE = ["doesnâ€™t", "cafÃ©", "â€œbrokenâ€\x9d", "Ã¼ber"]


def sentence(rng: random.Random) -> str:
    s = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 22)))
    return s[0].upper() + s[1:] + rng.choice([".", ".", ".", "?", "!"])


SIZES = {
    # name: (paragraphs, sentences per paragraph) ranges
    "short": ((1, 4), (1, 5)),  # ~0.8 KB: instruction/chat-style records
    "long": ((4, 12), (3, 8)),  # ~4 KB: web-document-style records (C4/FineWeb average 2-4 KB)
}


def record(rng: random.Random, i: int, size: str = "short") -> dict:
    """One record. The mix (per record): 25% with non-ASCII (accents, curly quotes, dashes),
    1% mojibake, 20% stray or doubled whitespace, 3% zero-width characters or extra blank lines."""
    (p_lo, p_hi), (s_lo, s_hi) = SIZES[size]
    paras = [" ".join(sentence(rng) for _ in range(rng.randint(s_lo, s_hi))) for _ in range(rng.randint(p_lo, p_hi))]
    text = "\n\n".join(paras)
    words = text.split(" ")
    r = rng.random()
    if r < 0.25:
        for _ in range(rng.randint(1, 3)):
            words[rng.randrange(len(words))] = rng.choice(ACCENTED + CURLY)
    elif r < 0.26:
        words[rng.randrange(len(words))] = rng.choice(MOJIBAKE)
    text = " ".join(words)
    r = rng.random()
    if r < 0.2:
        text = "  " + text.replace(". ", ".  ", 2) + " \n"
    elif r < 0.23:
        text = text.replace("\n\n", "\n\n\n\n", 1) + "\u200b"
    return {
        "id": i,
        "instruction": sentence(rng),
        "text": text,
        "meta": {"source": rng.choice(["web", "books", "code"]), "score": round(rng.random(), 3)},
    }


def make_file(path: Path, n: int, seed: int = 0, size: str = "short") -> None:
    rng = random.Random(seed)
    with open(path, "wb") as fh:
        for i in range(n):
            fh.write(orjson.dumps(record(rng, i, size)) + b"\n")


ORJSON_LOOP = (
    "import sys, orjson\n"
    "out = sys.stdout.buffer\n"
    "for line in open(sys.argv[1], 'rb'):\n"
    "    out.write(orjson.dumps(orjson.loads(line)) + b'\\n')\n"
)


# Measure what a user's installation does: Python caches compiled bytecode (__pycache__), as pip
# does for the site-packages the baseline imports. A sandbox's PYTHONDONTWRITEBYTECODE=1 would
# make every run recompile llmtools from source, and charge that to start-up. Likewise a
# sandbox's PYTHONUNBUFFERED=1 makes both sides write once per record, which a user's shell
# does not; `--unbuffered-env` keeps it to compare.
DROP = {"PYTHONDONTWRITEBYTECODE"} | ({"PYTHONUNBUFFERED"} if "--unbuffered-env" not in sys.argv else set())
ENV = {k: v for k, v in os.environ.items() if k not in DROP}


PURE = "LLMTOOLS_PURE_PYTHON=1"  # a command-list prefix: run it without the C helper


def timed(cmd: list[str], stdout=subprocess.DEVNULL) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system of the child)."""
    env = ENV
    while "=" in cmd[0] and cmd[0].split("=", 1)[0].isupper():  # VAR=value prefixes, as in a shell
        name, value = cmd[0].split("=", 1)
        cmd, env = cmd[1:], {**env, name: value}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=stdout, stderr=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def startup(runs: int, one: Path) -> dict[str, tuple[float, float]]:
    """Median (wall ms, CPU ms) per command."""
    cmds = {
        "python -c 'import click, orjson'": [sys.executable, "-c", "import click, orjson"],
        "llmtools --help": [LLMTOOLS, "--help"],
        "llmtools normalize (1 record)": [LLMTOOLS, "normalize", str(one)],
    }
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
    for cmd in cmds.values():  # warm the page cache
        timed(cmd)
    for _ in range(runs):
        for name, cmd in cmds.items():
            times[name].append(timed(cmd))
    return {k: (statistics.median(w for w, _ in v) * 1000, statistics.median(c for _, c in v) * 1000) for k, v in times.items()}


def throughput(runs: int, data: Path, n: int, extra: list[str], pure: bool = False,
               baseline: str | None = None) -> dict[str, tuple[float, float]]:
    """Records per second, by wall time and by CPU time (median of runs)."""
    cmds = {
        "plain orjson read+write loop": [sys.executable, "-c", ORJSON_LOOP, str(data)],
        "llmtools normalize (default steps)": [LLMTOOLS, "normalize", str(data)],
    }
    if pure:
        cmds["`LLMTOOLS_PURE_PYTHON=1 llmtools normalize` (no C helper)"] = [PURE, LLMTOOLS, "normalize", str(data)]
    for spec in extra:
        cmds[f"llmtools normalize {spec}"] = [LLMTOOLS, "normalize", *spec.split(), str(data)]
        if baseline:
            cmds[f"llmtools normalize {spec} (baseline)"] = [f"PYTHONPATH={baseline}", LLMTOOLS, "normalize",
                                                             *spec.split(), str(data)]
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in cmds}
    for _ in range(runs):
        for name, cmd in cmds.items():
            times[name].append(timed(cmd))
    return {k: (n / statistics.median(w for w, _ in v), n / statistics.median(c for _, c in v)) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000, help="short records; long runs use a quarter as many")
    ap.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    ap.add_argument("--runs", type=int, default=5, help="throughput runs per command")
    ap.add_argument("--startup-runs", type=int, default=40)
    ap.add_argument("--skip-startup", action="store_true")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--unbuffered-env", action="store_true", help="keep PYTHONUNBUFFERED from the environment (dropped by default)")
    ap.add_argument("--pure-python", action="store_true",
                    help="also time normalize without its C helper (LLMTOOLS_PURE_PYTHON=1)")
    ap.add_argument("--baseline-src", metavar="PATH",
                    help="also time each --extra command with PYTHONPATH=PATH (another checkout's src/), interleaved")
    ap.add_argument("--extra", action="append", default=[], metavar="OPTIONS",
                    help="also time `llmtools normalize OPTIONS` (repeatable), e.g. --extra '--steps all'")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one.jsonl"
        one.write_bytes(orjson.dumps({"id": 1, "text": "Write a haiku about  the sea. "}) + b"\n")
        if not args.skip_startup:
            res = startup(args.startup_runs, one)
            base_w, base_c = res["python -c 'import click, orjson'"]
            print(f"\nStart-up, median of {args.startup_runs} interleaved runs:")
            print("| command | wall ms | ratio | CPU ms | ratio |")
            print("|---|---:|---:|---:|---:|")
            for name, (w, c) in res.items():
                print(f"| `{name}` | {w:.1f} | {w / base_w:.2f}x | {c:.1f} | {c / base_c:.2f}x |")
        if not args.skip_throughput:
            for size in args.sizes:
                n = args.records if size == "short" else max(1, args.records // 4)
                data = Path(tmp) / f"data-{size}.jsonl"
                make_file(data, n, size=size)
                mb = data.stat().st_size / 1e6
                res = throughput(args.runs, data, n, args.extra, args.pure_python, args.baseline_src)
                base_w, base_c = res["plain orjson read+write loop"]
                print(f"\nThroughput, {size} records: {n} records, {mb:.1f} MB ({mb * 1e3 / n:.1f} KB/record), "
                      f"median of {args.runs} interleaved runs:")
                print("| pipeline | records/s (wall) | share of orjson loop | records/s (CPU) | share of orjson loop |")
                print("|---|---:|---:|---:|---:|")
                for name, (w, c) in res.items():
                    print(f"| {name} | {w:,.0f} | {w / base_w:.0%} | {c:,.0f} | {c / base_c:.0%} |")
    print(f"\nmachine: {os.cpu_count()} CPUs, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
