"""`llmtools dedup` locally and on Spark (local[1], local[2]), side by side on one corpus.

The corpus: N documents of ~1 KB of real prose (CPython's documentation topics) with known
near-duplicate groups (tests/helpers/dedup_corpus.py: 30% are copies with one word in ~300
changed), in 8 JSONL files. Every run uses the defaults (near, 0.8, 128 permutations, word
5-grams) with --mark --id-field id, so each run's clusters can be scored against the truth.
Runs are interleaved (local, spark local[1], spark local[2], repeated), each a fresh process
(Spark: JVM start-up included).

Reported per run: wall seconds, docs/s, peak memory (RSS sampled every 0.1 s: the driver's
Python, the JVM, the Python workers at their peak sum), pair precision/recall/F1 against the
truth, and the share of the local run's removed records that the run removed too.

    python benchmarks/spark/bench_dedup.py [N] [REPEATS]      (defaults: 200000, 1)
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import orjson  # noqa: E402
import psutil  # noqa: E402

from tests.helpers.dedup_corpus import grouped_docs, pair_f1  # noqa: E402

LLMTOOLS = [sys.executable, "-m", "llmtools"]


def write_corpus(folder: str, n: int) -> tuple[list[str], list[int]]:
    texts, groups = grouped_docs(n, size=1024, words_per_edit=300, seed=200)
    files = 8
    per = (n + files - 1) // files
    paths = []
    for f in range(files):
        path = os.path.join(folder, f"docs-{f}.jsonl")
        with open(path, "wb") as fh:
            for i in range(f * per, min(n, (f + 1) * per)):
                fh.write(orjson.dumps({"id": i, "text": texts[i]}) + b"\n")
        paths.append(path)
    return paths, groups


class Peak:
    """Peak RSS of a process tree, split into the driver, JVMs and Python workers."""

    def __init__(self, pid: int) -> None:
        self.root = psutil.Process(pid)
        self.peak = {"driver": 0, "jvm": 0, "workers": 0, "total": 0}
        self.stop = False
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop:
            try:
                procs = [self.root] + self.root.children(recursive=True)
                now = {"driver": 0, "jvm": 0, "workers": 0}
                for p in procs:
                    try:
                        rss = p.memory_info().rss
                        name = p.name()
                    except psutil.Error:
                        continue
                    kind = "driver" if p.pid == self.root.pid else "jvm" if "java" in name else "workers"
                    now[kind] += rss
                for k, v in now.items():
                    self.peak[k] = max(self.peak[k], v)
                self.peak["total"] = max(self.peak["total"], sum(now.values()))
            except psutil.Error:
                pass
            time.sleep(0.1)


def run(name: str, args: list[str], out: str) -> dict:
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        stdout = open(out, "wb") if not name.startswith("spark") else devnull
        proc = subprocess.Popen(LLMTOOLS + args, stdout=stdout, stderr=subprocess.PIPE)
        peak = Peak(proc.pid)
        _, err = proc.communicate()
        peak.stop = True
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {err.decode()[-2000:]}")
    return {"name": name, "wall": wall, "mem": dict(peak.peak)}


def clusters(out: str, spark: bool) -> dict[int, object]:
    files = sorted(glob.glob(os.path.join(out, "part-*"))) if spark else [out]
    found = {}
    for path in files:
        with open(path, "rb") as fh:
            for line in fh:
                rec = orjson.loads(line)
                found[rec["id"]] = (rec["dup_cluster"], rec["is_duplicate"])
    return found


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    tmp = tempfile.mkdtemp(prefix="bench-spark-")
    paths, groups = write_corpus(tmp, n)
    load = os.getloadavg()
    print(f"corpus: {n} docs, {sum(os.path.getsize(p) for p in paths) / 1e6:.0f} MB in {len(paths)} files; "
          f"{os.cpu_count()} cores; load before {load[0]:.2f}")
    common = ["dedup", "--mark", "--id-field", "id", "-q"]
    variants = [
        ("local", lambda out: common + paths),
        ("spark local[1]", lambda out: common + ["--engine", "spark", "--master", "local[1]", "-o", out] + paths),
        ("spark local[2]", lambda out: common + ["--engine", "spark", "--master", "local[2]", "-o", out] + paths),
    ]
    results: dict[str, list[dict]] = {}
    quality: dict[str, tuple] = {}
    local_removed: set[int] = set()
    for rep in range(repeats):
        for name, make in variants:
            out = os.path.join(tmp, f"{name.replace(' ', '_').replace('[', '').replace(']', '')}-{rep}")
            if not name.startswith("spark"):
                out += ".jsonl"
            r = run(name, make(out), out)
            r["load"] = os.getloadavg()[0]
            results.setdefault(name, []).append(r)
            found = clusters(out, name.startswith("spark"))
            assert len(found) == n, (name, len(found))
            removed = {i for i, (_, dup) in found.items() if dup}
            if name == "local":
                local_removed = removed
            p, rc, f1 = pair_f1(groups, [found[i][0] for i in range(n)])
            agree = len(removed & local_removed) / len(local_removed) if local_removed else 1.0
            jac = len(removed & local_removed) / len(removed | local_removed) if local_removed else 1.0
            quality[name] = (p, rc, f1, len(removed), agree, jac)
            print(f"  {name:15s} {r['wall']:7.1f} s  {n / r['wall']:8.0f} docs/s  load {r['load']:.2f}  "
                  f"mem driver {r['mem']['driver'] / 2**20:.0f} MB, jvm {r['mem']['jvm'] / 2**20:.0f} MB, "
                  f"workers {r['mem']['workers'] / 2**20:.0f} MB  F1 {f1:.4f}", flush=True)
    print()
    print("| run | wall s (best) | docs/s | peak RSS: driver py / JVM / py workers (MB) | precision | recall | pair F1 | removed | of local's removed | Jaccard with local's |")
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    best = {}
    for name, runs in results.items():
        r = min(runs, key=lambda x: x["wall"])
        best[name] = r["wall"]
        p, rc, f1, nrem, agree, jac = quality[name]
        m = r["mem"]
        print(f"| {name} | {r['wall']:.1f} | {n / r['wall']:.0f} | {m['driver'] / 2**20:.0f} / {m['jvm'] / 2**20:.0f} / "
              f"{m['workers'] / 2**20:.0f} | {p:.4f} | {rc:.4f} | {f1:.4f} | {nrem} | {agree:.4f} | {jac:.4f} |")
    print()
    print(f"spark local[2] / local speed: {best['local'] / best['spark local[2]']:.2f}x")
    print(f"scaling local[1] -> local[2]: {best['spark local[1]'] / best['spark local[2]']:.2f}x")
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
