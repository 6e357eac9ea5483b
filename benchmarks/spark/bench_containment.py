"""`dedup --against REFS --containment T` on Spark: the broadcast reference index against the
band-key join, side by side with the local command, on one generated corpus.

    python benchmarks/spark/bench_containment.py [N] [REFS] [--master local[2]] [--window 32]

N records (~1 KB of prose each, tests/helpers/dedup_corpus.py) and REFS references: a 60-word
passage of every 20th record (so those records are contaminated), the rest unrelated texts of
log-normal length (median ~200 words). Each run is a fresh process (Spark's include starting
the JVM) in `--exact` mode, so the --against stage is most of the work. Reported: wall time,
the shuffle bytes written (from Spark's event log), and whether the output equals the local
command's byte for byte.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

from tests.helpers.dedup_corpus import grouped_docs  # noqa: E402


def corpus(root: Path, n: int, refs: int) -> tuple[Path, Path]:
    texts, _groups = grouped_docs(n, size=1024, seed=31)
    data = root / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(texts)))
    rng = random.Random(5)
    lines = []
    for i in range(0, n, 20):
        words = texts[i].split()
        start = rng.randrange(0, max(1, len(words) - 60))
        lines.append(json.dumps({"text": " ".join(words[start:start + 60])}))
    vocab = sorted({w for t in texts[: min(n, 2000)] for w in t.split()})
    while len(lines) < refs:
        size = max(5, int(rng.lognormvariate(5.3, 0.6)))
        lines.append(json.dumps({"text": " ".join(rng.choice(vocab) for _ in range(size))}))
    ref = root / "refs.jsonl"
    ref.write_text("\n".join(lines[:refs]) + "\n")
    return data, ref


def shuffle_bytes(log_dir: Path) -> int:
    total = 0
    for path in (p for p in log_dir.rglob("*") if p.is_file()):  # rolling event logs are folders
        with open(path, errors="replace") as fh:
            for line in fh:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                metrics = json.loads(line).get("Task Metrics") or {}
                total += (metrics.get("Shuffle Write Metrics") or {}).get("Shuffle Bytes Written", 0)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=5000)
    ap.add_argument("refs", nargs="?", type=int, default=5000)
    ap.add_argument("--master", default="local[2]")
    ap.add_argument("--window", default="32")
    ap.add_argument("--containment", default="0.8")
    ap.add_argument("--only", default="local,broadcast,join", help="which runs, comma-separated")
    a = ap.parse_args()
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    llmtools = [sys.executable, "-m", "llmtools"]
    with tempfile.TemporaryDirectory(prefix="bench-containment-") as tmp:
        root = Path(tmp)
        data, ref = corpus(root, a.n, a.refs)
        args = ["dedup", "--exact", "--against", str(ref), "--containment", a.containment, "--window", a.window, "-q"]
        rows = []
        only = a.only.split(",")
        t0 = time.perf_counter()
        local = subprocess.run([*llmtools, *args, str(data)], env=env, capture_output=True, check=True).stdout
        if "local" in only:
            rows.append(("local", time.perf_counter() - t0, None, True))
        for mode in [m for m in ("broadcast", "join") if m in only]:
            out, logs = root / f"out-{mode}", root / f"log-{mode}"
            logs.mkdir()
            conf = [f"spark.llmtools.dedup.against={mode}", "spark.eventLog.enabled=true", f"spark.eventLog.dir={logs}",
                    "spark.eventLog.compress=false", "spark.ui.enabled=false"]
            t0 = time.perf_counter()
            subprocess.run([*llmtools, *args, "--engine", "spark", "--master", a.master,
                            *[x for c in conf for x in ("--spark-conf", c)], "-o", str(out), str(data)],
                           env=env, capture_output=True, check=True)
            wall = time.perf_counter() - t0
            got = b"".join(Path(p).read_bytes() for p in sorted(glob.glob(str(out / "part-*"))))
            rows.append((f"spark {mode} {a.master}", wall, shuffle_bytes(logs), got == local))
        hits = a.n - local.count(b"\n")
        print(f"N={a.n} records, {a.refs} references, --containment {a.containment} --window {a.window}, "
              f"{hits} removed by the local command (contaminated, or exact copies)")
        print("| run | wall s | shuffle written | output == local |")
        print("|---|---:|---:|---|")
        for name, wall, shuffled, same in rows:
            print(f"| {name} | {wall:.1f} | {'' if shuffled is None else f'{shuffled / 1e6:.1f} MB'} | {same} |")


if __name__ == "__main__":
    main()
