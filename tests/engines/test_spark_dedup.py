"""dedup --engine spark against the local command: the same removed records (exact), the same
decisions up to chains (near), the truth on 20k generated documents, and every record accounted
for."""

from __future__ import annotations

import orjson
import pytest

from tests.conftest import run_cli
from tests.engines.test_spark_records import parts
from tests.helpers.dedup_corpus import grouped_docs, pair_f1


def write_corpus(path, n, size=600, seed=3, bad=True):
    texts, groups = grouped_docs(n, size=size, seed=seed, tail=True)
    lines = [orjson.dumps({"id": i, "text": t, "g": g}) + b"\n" for i, (t, g) in enumerate(zip(texts, groups))]
    # exact copies (spacing aside) of every 12th document, further on
    for i in range(0, n, 12):
        at = min(len(lines), i + 7 + i % 50)
        lines.insert(at, orjson.dumps({"id": f"copy-{i}", "text": " " + texts[i].replace(" ", "  "), "g": groups[i]}) + b"\n")
    if bad:
        lines.insert(n // 2, b"{not json\n")
        lines.insert(n // 3, b'{"id": "no-text"}\n')
        # an exact copy with other case and spacing, for --exact --ignore-case
        lines.append(orjson.dumps({"id": "upper", "text": "  " + texts[7].upper() + " "}) + b"\n")
    path.write_bytes(b"".join(lines))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("dedup-in")
    return [write_corpus(root / "a.jsonl", 500), write_corpus(root / "b.jsonl", 200, seed=4)]


def removed(rejects: bytes) -> list:
    return [orjson.loads(line)["record"].get("id") for line in rejects.splitlines()
            if orjson.loads(line)["reason"] in ("duplicate", "contaminated")]


@pytest.mark.sysdep("java")
@pytest.mark.parametrize("flags", [
    ["--exact"],
    ["--exact", "--ignore-case", "--keep", "longest", "--id-field", "id"],
    [],
    ["--keep", "longest", "--verify"],
    ["--mark", "--id-field", "id", "--on-error", "keep"],
])
def test_spark_dedup_matches_local(spark, small, tmp_path, flags):
    on_error = [] if "--on-error" in flags else ["--on-error", "skip"]
    local_rej = tmp_path / "local.jsonl"
    local = run_cli(["dedup", *flags, *on_error, "-q", "--rejects", local_rej, *small])
    assert local.exit_code == 0, local.stderr
    out, rej = tmp_path / "out", tmp_path / "rej"
    res = run_cli(["dedup", *flags, *on_error, "-v", "--engine", "spark", "-o", out, "--rejects", rej, *small])
    assert res.exit_code == 0, res.stderr
    got, want = parts(out), local.stdout_bytes
    if "--exact" in flags:
        # Exact duplicates are a group-by on the digest: the same records removed, the same
        # bytes out, the same reject entries (locally a chunk's bad lines come first).
        assert len(removed(local_rej.read_bytes())) > 20
        assert got == want
        assert sorted(parts(rej).splitlines()) == sorted(local_rej.read_bytes().splitlines())
    else:
        # Near: what the local command removes is removed here too; Spark may remove a few more
        # (records joined to a group through a chain of matches: connected components).
        key = "is_duplicate"
        if "--mark" in flags:
            mine = {r["id"] for r in map(orjson.loads, got.splitlines()) if r.get(key)}
            theirs = {r["id"] for r in map(orjson.loads, want.splitlines()) if r.get(key)}
        else:
            mine, theirs = set(removed(parts(rej))), set(removed(local_rej.read_bytes()))
        assert len(theirs) > 100
        assert len(mine & theirs) >= 0.99 * len(theirs) and len(mine - theirs) <= 0.03 * len(theirs)
    lines_in = sum(1 for p in small for line in p.read_bytes().splitlines() if line.strip())
    assert lines_in == len(got.splitlines()) + len(parts(rej).splitlines())
    assert "duplicates=" in res.stderr and "largest clusters=" in res.stderr


@pytest.mark.sysdep("java")
@pytest.mark.parametrize("limits", [
    {"DRIVER_COMPONENTS_LIMIT": 0, "BROADCAST_LIMIT": 0},  # pairs verified on the driver, components on the cluster
    {"DRIVER_CANDIDATES_LIMIT": 0, "DRIVER_COMPONENTS_LIMIT": 0, "BROADCAST_LIMIT": 0},  # all in the JVM and on the cluster
    {"DRIVER_CANDIDATES_LIMIT": 0},  # pairs made and verified in the JVM, components on the driver
    {"DRIVER_SIGNATURE_BYTES": 0},
])
@pytest.mark.parametrize("flags", [[], ["--keep", "longest", "--verify", "--id-field", "id"]])
def test_distributed_components_and_sorted_merge_give_the_same_result(spark, small, tmp_path, monkeypatch, limits, flags):
    """The paths for big inputs (candidate pairs and their verification in the JVM;
    large-star/small-star on the cluster; decisions merged by a sort instead of broadcast)
    decide exactly as the paths for small ones."""
    from llmtools.engines import spark_dedup

    args = ["dedup", *flags, "--on-error", "skip", "-q", "--engine", "spark"]
    base = run_cli([*args, "-o", tmp_path / "a", "--rejects", tmp_path / "ra", *small])
    assert base.exit_code == 0, base.stderr
    for name, value in limits.items():
        monkeypatch.setattr(spark_dedup, name, value)
    big = run_cli([*args, "-o", tmp_path / "b", "--rejects", tmp_path / "rb", *small])
    assert big.exit_code == 0, big.stderr
    assert len(removed(parts(tmp_path / "ra"))) > 100
    assert parts(tmp_path / "b") == parts(tmp_path / "a") and parts(tmp_path / "rb") == parts(tmp_path / "ra")
    manifest = orjson.loads((tmp_path / "b" / "llmtools-manifest.json").read_bytes())
    assert (manifest["params"]["components_rounds"] >= 2) == ("DRIVER_COMPONENTS_LIMIT" in limits)


def test_bucket_pairs_make_the_candidate_pairs_of_every_bucket():
    """The numpy band group-by gives the pairs `candidate_pairs` gives bucket by bucket: all pairs
    of a small bucket, each member with the first and the one before in a large one."""
    import random

    import numpy as np

    from llmtools.engines.spark_dedup import SMALL_BUCKET, bucket_pairs, candidate_pairs

    rng = random.Random(5)
    buckets = {key: rng.sample(range(10_000), rng.choice([1, 2, 3, 7, SMALL_BUCKET, SMALL_BUCKET + 1, 90]))
               for key in rng.sample(range(1 << 59), 60)}
    rows = [(key, order) for key, members in buckets.items() for order in members]
    rows.append(rows[0])  # one record twice in a bucket counts once
    rng.shuffle(rows)
    half = len(rows) // 2
    items = [(0, (np.array([k for k, _ in part], dtype=np.int64), np.array([o for _, o in part], dtype=np.int64)))
             for part in (rows[:half], rows[half:])]
    (x, y), = list(bucket_pairs()(iter(items)))
    want = sorted({pair for bucket in buckets.items() for pair in candidate_pairs(bucket)})
    assert sorted(zip(x.tolist(), y.tolist())) == want
    assert len(want) > 1000 and all(a > b for a, b in want)


def test_large_and_small_star_find_components():
    from llmtools.engines.spark_dedup import _large_star, _small_star, driver_components

    assert driver_components([(5, 3), (3, 9), (7, 8), (9, 1)]) == {3: 1, 5: 1, 9: 1, 8: 7}
    assert sorted(_large_star((3, [5, 1, 9]))) == [(5, 1), (9, 1)]
    assert sorted(_small_star((9, [3, 5]))) == [(5, 3), (9, 3)]


@pytest.mark.sysdep("java")
def test_against_on_spark_matches_local(spark, small, tmp_path):
    refs = tmp_path / "refs.jsonl"
    texts = [orjson.loads(line)["text"] for line in small[1].read_bytes().splitlines()[:40] if b'"text"' in line]
    refs.write_bytes(b"".join(orjson.dumps({"text": t}) + b"\n" for t in texts[:15]))
    args = ["dedup", "--exact", "--against", refs, "--on-error", "skip", "-q"]
    local_rej = tmp_path / "local.jsonl"
    local = run_cli([*args, "--rejects", local_rej, *small])
    res = run_cli([*args, "--engine", "spark", "-o", tmp_path / "out", "--rejects", tmp_path / "rej", *small])
    assert local.exit_code == res.exit_code == 0, res.stderr
    assert parts(tmp_path / "out") == local.stdout_bytes
    assert sorted(parts(tmp_path / "rej").splitlines()) == sorted(local_rej.read_bytes().splitlines())
    assert sum(orjson.loads(x)["reason"] == "contaminated" for x in local_rej.read_bytes().splitlines()) >= 15


@pytest.mark.slow
@pytest.mark.sysdep("java")
def test_near_dedup_of_20k_documents_agrees_with_local_and_the_truth(spark, tmp_path):
    texts, groups = grouped_docs(20_000, size=1024, words_per_edit=300, seed=20)
    data = tmp_path / "docs.jsonl"
    data.write_bytes(b"".join(orjson.dumps({"id": i, "text": t}) + b"\n" for i, t in enumerate(texts)))
    local = run_cli(["dedup", "--mark", "--id-field", "id", "-q", data])
    assert local.exit_code == 0, local.stderr
    out = tmp_path / "out"
    res = run_cli(["dedup", "--mark", "--id-field", "id", "-q", "--engine", "spark", "-o", out, data])
    assert res.exit_code == 0, res.stderr
    mine = [orjson.loads(x) for x in parts(out).splitlines()]
    theirs = local.records()
    assert [r["id"] for r in mine] == list(range(20_000))
    f1_spark = pair_f1(groups, [r["dup_cluster"] for r in mine])[2]
    f1_local = pair_f1(groups, [r["dup_cluster"] for r in theirs])[2]
    assert f1_spark >= f1_local - 0.01 and f1_local > 0.9
    removed_spark = {r["id"] for r in mine if r["is_duplicate"]}
    removed_local = {r["id"] for r in theirs if r["is_duplicate"]}
    assert len(removed_local) > 4000
    # Agreement: the local command's removed records are removed here too. Spark removes a few
    # more: copies that match another copy of their group but missed the kept one's LSH bands,
    # which connected components join and the local greedy pass does not.
    assert len(removed_spark & removed_local) / len(removed_local) >= 0.99


def against_three_ways(args, small, tmp_path, monkeypatch):
    """Run `args` (a dedup with --against) locally and on Spark three ways: references broadcast,
    joined by band key, and joined with their hits merged in by a sort (more hits than the
    broadcast limit). The three Spark runs must agree; returns the local run, its rejects file
    and each Spark run's (output, sorted rejects)."""
    from llmtools.engines import spark_dedup

    args = [*args, "--on-error", "skip", "-q"]
    local_rej = tmp_path / "local.jsonl"
    local = run_cli([*args, "--rejects", local_rej, *small])
    assert local.exit_code == 0, local.stderr
    outs = {}
    # The tests share one Spark session, so the size limit stands for spark.llmtools.dedup.against.
    for name, size_limit, hit_limit in [("broadcast", 1 << 40, None), ("join", 0, None), ("join-merge", 0, 0)]:
        monkeypatch.setattr(spark_dedup, "AGAINST_BROADCAST_BYTES", size_limit)
        if hit_limit is not None:
            monkeypatch.setattr(spark_dedup, "BROADCAST_LIMIT", hit_limit)
        res = run_cli([*args, "--engine", "spark", "-o", tmp_path / name, "--rejects", tmp_path / f"r-{name}", *small])
        assert res.exit_code == 0, res.stderr
        manifest = orjson.loads((tmp_path / name / "llmtools-manifest.json").read_bytes())
        assert manifest["params"]["against_by"] == name.split("-")[0]
        outs[name] = (parts(tmp_path / name), sorted(parts(tmp_path / f"r-{name}").splitlines()))
    assert outs["join"] == outs["broadcast"] == outs["join-merge"]
    return local, local_rej, outs


@pytest.mark.sysdep("java")
@pytest.mark.parametrize("flags", [["--exact"], ["--mark", "--id-field", "id", "--against-threshold", "0.7"]])
def test_against_joined_by_band_key_matches_broadcast_and_local(spark, small, tmp_path, monkeypatch, flags):
    """References above the size limit are signed on the cluster and joined to the records by
    band key: the same hits (and ids, similarities, line numbers) as the broadcast copy and the
    local command; with more hits than the broadcast limit they are merged in by a sort."""
    refs = tmp_path / "refs.jsonl"
    texts = [orjson.loads(line)["text"] for line in small[1].read_bytes().splitlines()[:60] if b'"text"' in line]
    # near copies (a word changed at the end), exact copies, a blank line, one with an id
    lines = [orjson.dumps({"text": t + " extra"}) + b"\n" for t in texts[:10]] + [b"\n"]
    lines += [orjson.dumps({"text": t, "id": f"ref-{i}"}) + b"\n" for i, t in enumerate(texts[10:25])]
    refs.write_bytes(b"".join(lines))
    local, local_rej, outs = against_three_ways(["dedup", *flags, "--against", refs], small, tmp_path, monkeypatch)
    if "--exact" in flags:
        assert outs["join"][0] == local.stdout_bytes
        assert outs["join"][1] == sorted(local_rej.read_bytes().splitlines())
        hits = [orjson.loads(x) for x in local_rej.read_bytes().splitlines() if b'"contaminated"' in x]
        named = {h["dup_of"] for h in hits}  # no --id-field: references are named file:line
        assert len(hits) >= 20 and f"{refs}:1" in named and all(x.startswith(f"{refs}:") for x in named)
    else:
        marked = [orjson.loads(x) for x in outs["join"][0].splitlines()]
        want = [orjson.loads(x) for x in local.stdout_bytes.splitlines()]
        got_hits = {r["id"]: r["contaminated"] for r in marked if "contaminated" in r}
        assert got_hits == {r["id"]: r["contaminated"] for r in want if "contaminated" in r} and len(got_hits) >= 20
        assert any(h["ref"].startswith("ref-") for h in got_hits.values())  # --id-field names references by id


def test_against_mode_by_size_and_conf(tmp_path):
    from types import SimpleNamespace

    from llmtools.engines import spark_dedup
    from llmtools.errors import UsageError

    ref = tmp_path / "r.jsonl"
    ref.write_bytes(b'{"text": "x"}\n' * 100)  # 1,400 bytes

    class Run:
        def __init__(self, conf):
            self.sc = SimpleNamespace(getConf=lambda: SimpleNamespace(get=lambda k, d=None: conf.get(k, d)))

        def resolve(self, paths):
            return [(p, p) for p in paths]

        def _fs(self, uri):
            return SimpleNamespace(getFileStatus=lambda p: SimpleNamespace(getLen=lambda: ref.stat().st_size)), uri

    opts = SimpleNamespace(against=(str(ref),), containment=None)
    assert spark_dedup._against_mode(Run({}), opts) == "broadcast"
    assert spark_dedup._against_mode(Run({"spark.llmtools.dedup.againstBroadcastBytes": "1000"}), opts) == "join"
    assert spark_dedup._against_mode(Run({"spark.llmtools.dedup.against": "join"}), opts) == "join"
    assert spark_dedup._against_mode(Run({"spark.llmtools.dedup.against": "broadcast",
                                          "spark.llmtools.dedup.againstBroadcastBytes": "0"}), opts) == "broadcast"
    with pytest.raises(UsageError):
        spark_dedup._against_mode(Run({"spark.llmtools.dedup.against": "sometimes"}), opts)
    # --containment references are joined too (the LSH Ensemble's bands as join keys)
    assert spark_dedup._against_mode(Run({"spark.llmtools.dedup.against": "join"}),
                                     SimpleNamespace(against=opts.against, containment=0.5)) == "join"


def containment_refs(path, texts):
    """References for --containment: 60-word passages of records (a window inside one is
    contained), whole records with more words (the whole record is contained: --window 0), and
    unrelated texts of many lengths, so the LSH Ensemble has all its 8 size partitions."""
    import random

    rng = random.Random(7)
    lines = []
    for i, t in enumerate(texts[:12]):
        words = t.split()
        start = rng.randrange(0, max(1, len(words) - 60))
        rec = {"text": " ".join(words[start:start + 60])}
        if i % 3 == 0:
            rec["id"] = f"passage-{i}"
        lines.append(orjson.dumps(rec) + b"\n")
    lines += [orjson.dumps({"text": t + " and a few more words at the end"}) + b"\n" for t in texts[12:20]]
    vocab = sorted({w for t in texts[40:] for w in t.split()})
    for n in range(40):
        lines.append(orjson.dumps({"text": " ".join(rng.choice(vocab) for _ in range(5 + 7 * n))}) + b"\n")
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize("window", [32, 8, 0])
def test_containment_plan_asks_what_the_lsh_ensemble_asks(tmp_path, window):
    """The band-key join's candidates are exactly the local LSH Ensemble's: every reference in
    the same size partition, and per query window the same candidate references."""
    from collections import Counter

    import numpy as np

    from llmtools.engines.spark_dedup import ContainmentPlan
    from llmtools.ops import dedup as ops

    texts, _ = grouped_docs(120, size=600, seed=5)
    opts = ops.DedupOptions(against=(str(containment_refs(tmp_path / "refs.jsonl", texts)),), containment=0.7, window=window)
    sh = ops.Shingler(opts.num_perm, opts.seed, opts.n, opts.shingle)
    local = ops.References(sh, opts)
    plan = ContainmentPlan(opts, Counter(len(s) for s in local.sets))
    assert plan.uppers == [u for u in local.lsh.uppers if u is not None] and len(plan.uppers) == 8
    index: dict[bytes, list[tuple[int, int]]] = {}
    for k, (s, sig) in enumerate(zip(local.sets, sh.minhash_arrays(*sh.shingle_arrays(
            [orjson.loads(x)["text"] for x in open(opts.against[0], "rb")])))):
        p, keys = plan.reference_keys(sig, len(s))
        assert all(k in local.lsh.indexes[p][r] for r in local.lsh.indexes[p])
        for key in keys:
            index.setdefault(key, []).append((k, p))
    queries = texts[:40]
    h, starts = sh.shingle_arrays(queries)
    runs, sigs = np.split(h, starts[1:]), sh.minhash_arrays(h, starts)
    asked = found = 0
    for run, sig, rows in zip(runs, sigs, plan.query_rows(sh, runs, sigs)):
        windows = local._windows(run)
        wsigs = sig[None, :] if len(windows) == 1 else sh.minhash_arrays(
            np.concatenate(windows), np.cumsum([0] + [len(x) for x in windows[:-1]]))
        for w, (win, wsig) in enumerate(zip(windows, wsigs)):
            want = set(local.lsh.query(sh.minhash(wsig), len(np.unique(win))))
            got = {k for key, mask, at in rows if w in at for k, p in index.get(key, ()) if mask >> p & 1}
            assert got == want, (w, got ^ want)
            asked += 1
            found += len(want)
    assert found >= 10 and asked >= 40
    assert max(plan.keys_per_reference()) <= sum(opts.num_perm // r for r in range(1, 9))


@pytest.mark.sysdep("java")
@pytest.mark.parametrize("flags", [["--containment", "0.7"],
                                   ["--containment", "0.6", "--window", "0", "--mark", "--id-field", "id"],
                                   ["--exact", "--containment", "0.8", "--window", "16"]])
def test_containment_joined_by_band_key_matches_broadcast_and_local(spark, small, tmp_path, monkeypatch, flags):
    """--containment references joined by band key (the LSH Ensemble's bands): the same output
    and rejects (hits, reference ids, containments) as the broadcast copy and the local command."""
    texts = [orjson.loads(line)["text"] for line in small[1].read_bytes().splitlines()[:100] if b'"text"' in line]
    refs = containment_refs(tmp_path / "refs.jsonl", texts)
    local, local_rej, outs = against_three_ways(["dedup", *flags, "--against", refs], small, tmp_path, monkeypatch)
    if "--mark" in flags:
        marked = [orjson.loads(x) for x in outs["join"][0].splitlines()]
        want = [orjson.loads(x) for x in local.stdout_bytes.splitlines()]
        got_hits = {r["id"]: r["contaminated"] for r in marked if "contaminated" in r}
        assert got_hits == {r["id"]: r["contaminated"] for r in want if "contaminated" in r}
        assert len(got_hits) >= 8 and all(h["measure"] == "containment" for h in got_hits.values())
        assert any(h["ref"].startswith("passage-") for h in got_hits.values())  # --id-field names references by id
    else:
        local_lines = sorted(local_rej.read_bytes().splitlines())
        if "--exact" in flags:
            assert outs["join"] == (local.stdout_bytes, local_lines)
        # near mode: the duplicates may differ from local by chains (docs/dedup.md), the hits not
        contaminated = [x for x in local_lines if orjson.loads(x)["reason"] == "contaminated"]
        assert [x for x in outs["join"][1] if orjson.loads(x)["reason"] == "contaminated"] == contaminated
        hits = [orjson.loads(x) for x in contaminated]
        assert len(hits) >= 12 and all(h["dup_of"].startswith(f"{refs}:") for h in hits)  # no --id-field: file:line


@pytest.mark.sysdep("java")
@pytest.mark.parametrize("flags", [[], ["--exact"]])
def test_a_bad_line_ends_the_run_as_locally(spark, small, tmp_path, flags):
    """--on-error fail (the default): exit 3 naming the first bad file:line, as the local
    command does, and no output folder (near mode reads the records twice: the first pass
    stops it)."""
    local = run_cli(["dedup", *flags, "-q", *small])
    out = tmp_path / "out"
    res = run_cli(["dedup", *flags, "-q", "--engine", "spark", "-o", out, *small])
    assert local.exit_code == res.exit_code == 3, res.stderr
    where = local.stderr.strip().splitlines()[-1]
    assert f"{small[0]}:" in where and res.stderr.strip().splitlines()[-1] == where
    assert not out.exists()
