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

text-dedup's Spark MinHash script (`text_dedup.minhash_spark`, text-dedup 0.4.0) runs beside
them when its Python is given (TEXTDEDUP_PYTHON, default /tmp/textdedup-venv/bin/python, a
separate venv: `python3.11 -m venv /tmp/textdedup-venv && /tmp/textdedup-venv/bin/pip install
text-dedup==0.4.0`), on the same documents as Parquet, with the same settings (threshold,
permutations, word 5-grams, and llmtools' bands via --b/--r). GraphFrames' JAR cannot be
fetched offline, so its connected components come from graphframes_shim/ (union-find on the
driver; see there). Its clusters are read from the script's --debug assignment file.

    python benchmarks/spark/bench_dedup.py [N] [REPEATS] [--only local,spark1,spark2,td1,td2]
        [--corpus DIR] [--results FILE.jsonl]      (defaults: 200000, 1, all)

--corpus keeps the generated corpus in DIR (made once, reused), so the sides can run in
separate invocations; --results appends each run's figures as a JSON line.
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
TEXTDEDUP = os.environ.get("TEXTDEDUP_PYTHON", "/tmp/textdedup-venv/bin/python")
SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "graphframes_shim")


def write_corpus(folder: str, n: int) -> tuple[list[str], list[int]]:
    """The corpus as 8 JSONL files (and the same as 8 Parquet files under parquet/), made once
    per folder."""
    files = 8
    paths = [os.path.join(folder, f"docs-{f}.jsonl") for f in range(files)]
    truth = os.path.join(folder, "groups.json")
    if os.path.exists(truth):
        return paths, orjson.loads(open(truth, "rb").read())
    texts, groups = grouped_docs(n, size=1024, words_per_edit=300, seed=200)
    per = (n + files - 1) // files
    os.makedirs(os.path.join(folder, "parquet"), exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    for f, path in enumerate(paths):
        rows = range(f * per, min(n, (f + 1) * per))
        with open(path, "wb") as fh:
            for i in rows:
                fh.write(orjson.dumps({"id": i, "text": texts[i]}) + b"\n")
        pq.write_table(pa.table({"id": pa.array(list(rows), pa.int64()), "text": [texts[i] for i in rows]}),
                       os.path.join(folder, "parquet", f"docs-{f}.parquet"))
    with open(truth, "wb") as fh:
        fh.write(orjson.dumps(groups))
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


def run(name: str, args: list[str], out: str, env: dict | None = None) -> dict:
    t0 = time.perf_counter()
    with open(os.devnull, "wb") as devnull:
        stdout = open(out, "wb") if name == "local" else devnull
        cmd = args if args[0] != "dedup" else LLMTOOLS + args
        proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env)
        peak = Peak(proc.pid)
        _, err = proc.communicate()
        peak.stop = True
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {err.decode()[-2000:]}")
    return {"name": name, "wall": wall, "mem": dict(peak.peak)}


def textdedup_clusters(out: str, n: int) -> dict[int, object]:
    """text-dedup's --debug assignment (id, component: the smallest id of its component); a
    record in no edge is its own cluster. Checks that the output holds the survivors."""
    import pyarrow.parquet as pq

    found: dict[int, object] = {i: (i, False) for i in range(n)}
    table = pq.read_table(out + "-assignment/assignment.parquet").to_pydict()
    for i, c in zip(table["id"], table["component"]):
        found[i] = (c, c != i)
    kept = sum(pq.read_metadata(p).num_rows for p in glob.glob(os.path.join(out, "**", "*.parquet"), recursive=True))
    assert kept == sum(1 for _, dup in found.values() if not dup), (kept, out)
    return found


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
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("n", nargs="?", type=int, default=200_000)
    ap.add_argument("repeats", nargs="?", type=int, default=1)
    ap.add_argument("--only", default="local,spark1,spark2,td1,td2")  # also: spark1pin, spark2cluster
    ap.add_argument("--corpus")
    ap.add_argument("--results")
    a = ap.parse_args()
    n, repeats, only = a.n, a.repeats, a.only.split(",")
    tmp = tempfile.mkdtemp(prefix="bench-spark-")
    corpus = a.corpus or tmp
    os.makedirs(corpus, exist_ok=True)
    paths, groups = write_corpus(corpus, n)
    load = os.getloadavg()
    print(f"corpus: {n} docs, {sum(os.path.getsize(p) for p in paths) / 1e6:.0f} MB in {len(paths)} files; "
          f"{os.cpu_count()} cores; load before {load[0]:.2f}")
    sys.path.insert(0, os.path.join(ROOT, "src"))
    from llmtools.ops.dedup import DedupOptions

    b, r = DedupOptions().lsh_bands()  # the bands llmtools uses at the defaults, given to text-dedup too
    common = ["dedup", "--mark", "--id-field", "id", "-q"]

    def textdedup(cores: int) -> tuple:
        env = dict(os.environ, PYSPARK_PYTHON=TEXTDEDUP, PYTHONPATH=SHIM,
                   PYSPARK_SUBMIT_ARGS=f"--master local[{cores}] pyspark-shell")
        return (f"text-dedup local[{cores}]", lambda out: [
            TEXTDEDUP, "-m", "text_dedup.minhash_spark", "--input", os.path.join(corpus, "parquet"), "--output", out,
            "--column", "text", "--index", "id", "--threshold", "0.8", "--num_perm", "128", "--ngram_size", "5",
            "--b", str(b), "--r", str(r), "--debug", "--checkpoint_dir", out + "-checkpoints"], env)

    variants = [v for key, v in [
        ("local", ("local", lambda out: common + paths, None)),
        ("spark1", ("spark local[1]", lambda out: common + ["--engine", "spark", "--master", "local[1]", "-o", out] + paths, None)),
        ("spark2", ("spark local[2]", lambda out: common + ["--engine", "spark", "--master", "local[2]", "-o", out] + paths, None)),
        # local[1] runs one task at a time, but the JVM's own threads (GC, shuffle, the
        # driver) still use the second core: pinned to one core, the whole process tree
        # (driver, JVM, Python workers) has one core, as a 1-core machine would.
        ("spark1pin", ("spark local[1] pinned", lambda out: ["taskset", "-c", "0"] + LLMTOOLS + common + [
            "--engine", "spark", "--master", "local[1]", "-o", out] + paths, None)),
        # the paths a corpus too large for the driver takes, forced at this size: candidate
        # pairs verified by the JVM's signature joins, components by large-star/small-star
        ("spark2cluster", ("spark local[2] cluster paths", lambda out: common + [
            "--engine", "spark", "--master", "local[2]", "--spark-conf", "spark.llmtools.dedup.driverCandidatesLimit=0",
            "--spark-conf", "spark.llmtools.dedup.driverComponentsLimit=0", "-o", out] + paths, None)),
        ("td1", textdedup(1)),
        ("td2", textdedup(2)),
    ] if key in only]
    local_file = os.path.join(corpus, "local-removed.json")
    results: dict[str, list[dict]] = {}
    quality: dict[str, tuple] = {}
    local_removed: set[int] = set()
    if os.path.exists(local_file):
        local_removed = set(orjson.loads(open(local_file, "rb").read()))
    for rep in range(repeats):
        for name, make, env in variants:
            out = os.path.join(tmp, f"{name.replace(' ', '_').replace('[', '').replace(']', '')}-{rep}")
            if name == "local":
                out += ".jsonl"
            load_before = os.getloadavg()[0]
            r = run(name, make(out), out, env)
            r["load"] = os.getloadavg()[0]
            r["load_before"] = load_before
            results.setdefault(name, []).append(r)
            found = textdedup_clusters(out, n) if name.startswith("text-dedup") else clusters(out, name.startswith("spark"))
            assert len(found) == n, (name, len(found))
            removed = {i for i, (_, dup) in found.items() if dup}
            if name == "local":
                local_removed = removed
                with open(local_file, "wb") as fh:
                    fh.write(orjson.dumps(sorted(removed)))
            p, rc, f1 = pair_f1(groups, [found[i][0] for i in range(n)])
            agree = len(removed & local_removed) / len(local_removed) if local_removed else 1.0
            jac = len(removed & local_removed) / len(removed | local_removed) if local_removed else 1.0
            quality[name] = (p, rc, f1, len(removed), agree, jac)
            if a.results:
                with open(a.results, "ab") as fh:
                    fh.write(orjson.dumps({"n": n, "name": name, "rep": rep, "wall": r["wall"], "mem": r["mem"], "load": r["load"],
                                           "load_before": load_before, "precision": p, "recall": rc, "f1": f1,
                                           "removed": len(removed), "of_local": agree, "jaccard_local": jac,
                                           "time": time.strftime("%H:%M:%S", time.gmtime())}) + b"\n")
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
    if "local" in best and "spark local[2]" in best:
        print(f"spark local[2] / local speed: {best['local'] / best['spark local[2]']:.2f}x")
    for side in ("spark", "text-dedup"):
        if f"{side} local[1]" in best and f"{side} local[2]" in best:
            print(f"{side} scaling local[1] -> local[2]: {best[f'{side} local[1]'] / best[f'{side} local[2]']:.2f}x")
    if "spark local[1] pinned" in best and "spark local[2]" in best:
        print(f"spark scaling local[1] pinned to one core -> local[2]: {best['spark local[1] pinned'] / best['spark local[2]']:.2f}x")
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
