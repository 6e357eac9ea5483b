"""Near-duplicate recall on generated documents (issue 20), side by side, runs interleaved.

Corpus: 16,000 originals of 160 words drawn from the Python documentation's vocabulary, plus
4,000 near copies of distinct originals: 1,000 with case and whitespace changed (word 5-gram
Jaccard 1.0) and 3,000 with two words replaced (Jaccard ~0.88), shuffled. A pair is predicted
when the two records end up in one cluster (a removed record joins its `dup_of`'s cluster).

Methods, each as its own process (wall, CPU = user + system, peak RSS from wait4):
  - `llmtools dedup` at the defaults (bands for recall, candidates verified on signatures);
  - `llmtools dedup --bands 9x13` (the bands dedup used before: datasketch's choice);
  - `llmtools dedup` from a baseline source tree (--baseline SRC, e.g. an export of main);
  - datasketch MinHashLSH at its own bands for 0.8 (9x13), no verification, in one process;
  - datasketch MinHashLSH with 16x6 bands and candidates checked with MinHash.jaccard;
  - text-dedup 0.4.0's MinHash (--text-dedup DIR: a `pip install --target DIR text-dedup==0.4.0`).
Then `--against`: the 4,000 copies and 8,000 unrelated originals checked against a reference
file holding the 4,000 originals that have copies (recall = copies caught).

Run: .venv/bin/python benchmarks/dedup/bench_recall.py [--rounds 3] [--baseline /tmp/main/src]
     [--text-dedup DIR]   (a baseline tree: git archive main src | tar -x -C /tmp/main)
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

sys.path.insert(0, os.path.dirname(__file__))
from data import all_words  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.normpath(os.path.join(HERE, "..", "..", "src"))


def corpus(n_orig: int = 16000, n_case: int = 1000, n_edit: int = 3000, length: int = 160, seed: int = 20):
    """[(id, group, kind, text)] shuffled; group = the original's number."""
    vocab = sorted({w.lower() for w in all_words() if w.isalpha()})
    rng = random.Random(seed)
    originals = [[rng.choice(vocab) for _ in range(length)] for _ in range(n_orig)]
    recs = [(f"o{i}", i, "original", " ".join(w)) for i, w in enumerate(originals)]
    picks = rng.sample(range(n_orig), n_case + n_edit)
    for k, g in enumerate(picks):
        toks = list(originals[g])
        if k < n_case:
            toks = [t.upper() if rng.random() < 0.3 else t.title() if rng.random() < 0.3 else t for t in toks]
            text = "".join(t + rng.choice([" ", "  ", "\n", " \t"]) for t in toks).strip()
            kind = "case"
        else:
            for pos in rng.sample(range(length), 2):
                toks[pos] = rng.choice(vocab)
            text, kind = " ".join(toks), "edit"
        recs.append((f"c{k}", g, kind, text))
    rng.shuffle(recs)
    return recs


def pair_quality(recs, dup_of: dict) -> dict:
    """Pair precision/recall/F1 from {removed id: kept id} against the true groups, how many
    copies of each kind share their original's cluster, and how many originals without a copy
    were removed."""
    parent: dict = {}

    def root(x):
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in dup_of.items():
        parent[root(a)] = root(b)
    group = {r[0]: r[1] for r in recs}
    original = {r[1]: r[0] for r in recs if r[2] == "original"}
    clusters: dict = {}
    for r in recs:
        clusters.setdefault(root(r[0]), []).append(r[0])
    true_pairs = sum(1 for r in recs if r[2] != "original")  # one copy per copied original
    tp = pred = 0
    for members in clusters.values():
        n = len(members)
        pred += n * (n - 1) // 2
        by: dict = {}
        for m in members:
            by[group[m]] = by.get(group[m], 0) + 1
        tp += sum(c * (c - 1) // 2 for c in by.values())
    prec = tp / pred if pred else 1.0
    rec = tp / true_pairs
    found = {"case": 0, "edit": 0}
    for rid, g, kind, _ in recs:
        if kind != "original" and root(rid) == root(original[g]):
            found[kind] += 1
    copied = {r[1] for r in recs if r[2] != "original"}
    wrong = sum(1 for r in recs if r[2] == "original" and r[1] not in copied and r[0] in dup_of)
    return {"precision": prec, "recall": rec, "f1": 2 * prec * rec / (prec + rec) if prec + rec else 0.0,
            "case": found["case"], "edit": found["edit"], "wrong": wrong, "pred": pred, "tp": tp}


def run_measured(cmd: list[str], env: dict | None = None, cwd: str | None = None) -> dict:
    """Run a process; wall seconds, CPU seconds and peak RSS (MB) of it (wait4: its own and
    those of the worker processes it waited for)."""
    with tempfile.TemporaryFile() as errf:
        t = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=errf)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        proc.returncode = os.waitstatus_to_exitcode(status)
        errf.seek(0)
        err = errf.read().decode(errors="replace")
    if proc.returncode:
        raise RuntimeError(f"{cmd}: exit {proc.returncode}: {err[-2000:]}")
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024, "stderr": err}


def env_for(src: str) -> dict:
    env = dict(os.environ, PYTHONPATH=src, OPENBLAS_NUM_THREADS="1")
    return env


def llmtools_method(src: str, extra: list[str]):
    def run(path: str, tmp: str) -> tuple[dict, dict]:
        rej = os.path.join(tmp, "rej.jsonl")
        m = run_measured([sys.executable, "-m", "llmtools", "dedup", "--id-field", "id", "--rejects", rej, *extra, path], env=env_for(src))
        dup_of = {}
        with open(rej) as fh:
            for line in fh:
                e = json.loads(line)
                dup_of[e["record"]["id"]] = e["dup_of"]
        return m, dup_of

    return run


def datasketch_method(bands: tuple[int, int] | None):
    def run(path: str, tmp: str) -> tuple[dict, dict]:
        out = os.path.join(tmp, "ds.json")
        args = [sys.executable, os.path.abspath(__file__), "--datasketch-worker", path, out]
        if bands:
            args += ["--ds-bands", f"{bands[0]}x{bands[1]}"]
        m = run_measured(args, env=env_for(SRC))
        with open(out) as fh:
            return m, json.load(fh)

    return run


def datasketch_worker(path: str, out: str, bands: str | None) -> None:
    """datasketch as its docs show it: MinHash (sha1 per shingle, update_batch) of word
    5-grams, MinHashLSH query then insert. With bands: candidates checked with MinHash.jaccard."""
    import re

    from datasketch import MinHash, MinHashLSH

    params = tuple(int(x) for x in bands.split("x")) if bands else None
    lsh = MinHashLSH(threshold=0.8, num_perm=128, params=params) if params else MinHashLSH(threshold=0.8, num_perm=128)
    kept: dict = {}
    dup_of = {}
    word = re.compile(r"\w+")
    with open(path) as fh:
        for line in fh:
            rec = json.loads(line)
            toks = word.findall(rec["text"].lower())
            m = MinHash(num_perm=128)
            m.update_batch([" ".join(toks[i : i + 5]).encode() for i in range(max(1, len(toks) - 4))])
            cands = lsh.query(m)
            if params:
                cands = [c for c in cands if kept[c].jaccard(m) >= 0.8]
            if cands:
                dup_of[rec["id"]] = cands[0]
            else:
                lsh.insert(rec["id"], m)
                kept[rec["id"]] = m
    with open(out, "w") as fh:
        json.dump(dup_of, fh)


def text_dedup_method(target: str):
    """text-dedup 0.4.0's MinHash command (installed with `pip install --target TARGET
    text-dedup==0.4.0`, kept out of the project's environment: it pins other versions of shared
    packages) on the same JSONL through `datasets`, 0.8, 128 perms, 5-grams, --num_proc 2. It
    reports only what it kept, so a copy counts as found when exactly one of it and its
    original was removed; no pair metrics."""

    def run(path: str, tmp: str) -> tuple[dict, dict | None]:
        out = os.path.join(tmp, "td-out")
        env = dict(os.environ, PYTHONPATH=target, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
        m = run_measured([sys.executable, "-m", "text_dedup.minhash", "--path", "json", "--data_files", path, "--split", "train",
                          "--cache_dir", os.path.join(tmp, "td-cache"), "--output", out, "--column", "text", "--num_proc", "2",
                          "--threshold", "0.8", "--num_perm", "128", "--ngram", "5", "--clean_cache"], env=env, cwd=tmp)
        kept_path = os.path.join(tmp, "td-kept.json")
        code = ("import datasets, json, sys; d = datasets.load_from_disk(sys.argv[1]); "
                "json.dump(list(d['id']), open(sys.argv[2], 'w'))")
        subprocess.run([sys.executable, "-c", code, out, kept_path], env=env, check=True)
        with open(kept_path) as fh:
            return m, {"kept": set(json.load(fh))}

    return run


def removal_quality(recs, kept: set) -> dict:
    original = {r[1]: r[0] for r in recs if r[2] == "original"}
    found = {"case": 0, "edit": 0}
    for rid, g, kind, _ in recs:
        if kind != "original" and (rid in kept) != (original[g] in kept):
            found[kind] += 1
    copied = {r[1] for r in recs if r[2] != "original"}
    wrong = sum(1 for r in recs if r[2] == "original" and r[1] not in copied and r[0] not in kept)
    removed_originals = sum(1 for r in recs if r[2] == "original" and r[0] not in kept)
    return {"case": found["case"], "edit": found["edit"], "wrong": wrong, "removed_originals": removed_originals}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the llmtools runs")
    ap.add_argument("--peer-rounds", type=int, default=1, help="rounds of the datasketch and text-dedup runs (slow)")
    ap.add_argument("--text-dedup", metavar="TARGET", help="folder holding text-dedup 0.4.0 (pip install --target)")
    ap.add_argument("--baseline", help="src folder of the llmtools to compare with (e.g. main's)")
    ap.add_argument("--skip-against", action="store_true")
    ap.add_argument("--datasketch-worker", nargs=2)
    ap.add_argument("--ds-bands")
    args = ap.parse_args()
    if args.datasketch_worker:
        datasketch_worker(*args.datasketch_worker, args.ds_bands)
        return
    recs = corpus()
    methods = {
        "llmtools dedup (defaults: 16x6 bands, verified on signatures)": llmtools_method(SRC, []),
        "llmtools dedup --bands 9x13 (the bands before, verified on signatures)": llmtools_method(SRC, ["--bands", "9x13"]),
    }
    if args.baseline:
        methods["llmtools dedup before (baseline tree: datasketch MinHashLSH 9x13)"] = llmtools_method(args.baseline, [])
    methods["datasketch MinHashLSH (its bands for 0.8: 9x13), no verification"] = datasketch_method(None)
    methods["datasketch MinHashLSH 16x6 + MinHash.jaccard check"] = datasketch_method((16, 6))
    if args.text_dedup:
        methods["text-dedup 0.4.0 minhash (--num_proc 2; its bands for 0.8)"] = text_dedup_method(args.text_dedup)
    peers = {k for k in methods if not k.startswith("llmtools")}
    results: dict = {k: [] for k in methods}
    quality: dict = {}
    loads = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "corpus.jsonl")
        with open(path, "w") as fh:
            for rid, _, _, text in recs:
                fh.write(json.dumps({"id": rid, "text": text}) + "\n")
        names = list(methods)
        for rnd in range(args.rounds):
            order = names[rnd % len(names):] + names[: rnd % len(names)]
            for name in order:
                if name in peers and rnd >= args.peer_rounds:
                    continue
                loads.append(os.getloadavg()[0])
                m, dup_of = methods[name](path, tmp)
                results[name].append(m)
                quality[name] = removal_quality(recs, dup_of["kept"]) if "kept" in dup_of else pair_quality(recs, dup_of)
        print(f"{len(recs)} docs of 160 words (16,000 originals, 1,000 case/space copies, 3,000 two-word edits), "
              f"{args.rounds} interleaved rounds ({args.peer_rounds} for the peers), cpus={os.cpu_count()}, load average during runs "
              f"{min(loads):.1f}-{max(loads):.1f}")
        print("| method | case copies found | two-word edits found | unrelated removed | pair precision | pair recall | pair F1 | wall s (median) | CPU s (median) | docs/s per core | peak RSS MB |")
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name in names:
            q = quality[name]
            if "removed_originals" in q:
                q = dict(q, precision=float("nan"), recall=float("nan"), f1=float("nan"))
                q["wrong"] = f"{q['wrong']} ({q['removed_originals']} originals removed in all)"
            wall = statistics.median(r["wall"] for r in results[name])
            cpu = statistics.median(r["cpu"] for r in results[name])
            rss = max(r["rss"] for r in results[name])
            p, r, f = ("-", "-", "-") if q["precision"] != q["precision"] else (f"{q['precision']:.3f}", f"{q['recall']:.3f}", f"{q['f1']:.3f}")
            print(f"| {name} | {q['case']}/1000 | {q['edit']}/3000 | {q['wrong']} | {p} | {r} | {f} | "
                  f"{wall:.2f} | {cpu:.2f} | {len(recs) / cpu:,.0f} | {rss:.0f} |")
        if not args.skip_against:
            against(recs, tmp, args)


def against(recs, tmp: str, args) -> None:
    """--against: references = the originals that have copies; input = copies + 8,000 others."""
    copied = {r[1] for r in recs if r[2] != "original"}
    ref_path = os.path.join(tmp, "refs.jsonl")
    in_path = os.path.join(tmp, "input.jsonl")
    others = [r for r in recs if r[2] == "original" and r[1] not in copied][:8000]
    with open(ref_path, "w") as fh:
        for r in recs:
            if r[2] == "original" and r[1] in copied:
                fh.write(json.dumps({"id": r[0], "text": r[3]}) + "\n")
    inputs = [r for r in recs if r[2] != "original"] + others
    with open(in_path, "w") as fh:
        for r in inputs:
            fh.write(json.dumps({"id": r[0], "text": r[3]}) + "\n")
    runs = {"llmtools dedup --against (defaults: 16x6)": (SRC, [])}
    runs["llmtools dedup --against --bands 9x13"] = (SRC, ["--bands", "9x13"])
    if args.baseline:
        runs["llmtools dedup --against before (baseline tree)"] = (args.baseline, [])
    times: dict = {k: [] for k in runs}
    caught: dict = {}
    names = list(runs)
    for rnd in range(args.rounds):
        for name in names[rnd % len(names):] + names[: rnd % len(names)]:
            src, extra = runs[name]
            rej = os.path.join(tmp, "arej.jsonl")
            m = run_measured([sys.executable, "-m", "llmtools", "dedup", "--id-field", "id", "--against", ref_path,
                              "--rejects", rej, *extra, in_path], env=env_for(src))
            times[name].append(m)
            with open(rej) as fh:
                hit = [json.loads(line)["record"]["id"] for line in fh]
            caught[name] = hit
    kind = {r[0]: r[2] for r in recs}
    print(f"\n--against: {len(inputs)} input records (4,000 copies + {len(others)} unrelated) against the "
          "4,000 originals that have copies (Jaccard >= 0.8, verified exactly)")
    print("| method | case copies caught | two-word edits caught | unrelated caught | wall s (median) | CPU s (median) | peak RSS MB |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in names:
        hit = caught[name]
        c = sum(1 for h in hit if kind[h] == "case")
        e = sum(1 for h in hit if kind[h] == "edit")
        u = sum(1 for h in hit if kind[h] == "original")
        wall = statistics.median(r["wall"] for r in times[name])
        cpu = statistics.median(r["cpu"] for r in times[name])
        print(f"| {name} | {c}/1000 | {e}/3000 | {u} | {wall:.2f} | {cpu:.2f} | {max(r['rss'] for r in times[name]):.0f} |")


if __name__ == "__main__":
    main()
