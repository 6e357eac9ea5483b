"""llmtools dedup: keep policies, --mark, exact switches, --against, persistent index, --jobs."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "su", "te", "ra", "vo", "ni", "pe", "do") for b in ("n", "rt", "lis", "m", "x", "gen", "pa", "ck", "u", "sh")]


def words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(VOCAB) for _ in range(n))


def near_copy(rng: random.Random, text: str, edits: int) -> str:
    toks = text.split()
    for _ in range(edits):
        toks[rng.randrange(len(toks))] = rng.choice(VOCAB)
    return " ".join(toks)


def jsonl(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.fixture
def corpus():
    """6 groups: an original, an exact copy, a 1-edit near copy; plus 6 unrelated texts."""
    rng = random.Random(7)
    recs = []
    for g in range(6):
        base = words(rng, 120)
        recs.append({"id": f"g{g}-orig", "text": base})
        recs.append({"id": f"g{g}-copy", "text": base})
        recs.append({"id": f"g{g}-near", "text": near_copy(rng, base, 1) + " extra tail words here"})
    for u in range(6):
        recs.append({"id": f"u{u}", "text": words(rng, 120)})
    rng.shuffle(recs)
    return recs


def ids(result):
    return [r["id"] for r in result.records()]


def read_jsonl(path):
    return [orjson.loads(line) for line in open(path, "rb") if line.strip()]


def test_keep_first_removes_copies_in_order(cli, corpus, tmp_path):
    rejects = tmp_path / "rej.jsonl"
    res = cli(["dedup", "--id-field", "id", "--rejects", rejects], input=jsonl(corpus))
    assert res.exit_code == 0, res.stderr
    first_of = {}
    for r in corpus:
        first_of.setdefault(r["id"].split("-")[0], r["id"])
    expected = [r["id"] for r in corpus if r["id"].startswith("u") or first_of[r["id"].split("-")[0]] == r["id"]]
    assert ids(res) == expected
    rej = read_jsonl(rejects)
    assert len(rej) == 12
    for entry in rej:
        assert entry["reason"] == "duplicate"
        assert entry["dup_of"] == first_of[entry["record"]["id"].split("-")[0]]
        assert 0.8 <= entry["similarity"] <= 1.0
        assert isinstance(entry["line"], int)


def test_dup_of_is_line_number_without_id_field(cli, tmp_path):
    text = "alpha beta gamma delta epsilon zeta eta theta iota kappa"
    rejects = tmp_path / "r.jsonl"
    res = cli(["dedup", "--rejects", rejects], input=jsonl([{"text": "other words entirely here now ok"}, {"text": text}, {"text": text}]))
    assert res.exit_code == 0
    assert read_jsonl(rejects)[0]["dup_of"] == 2


def test_keep_longest_keeps_longest_of_each_group(cli):
    rng = random.Random(3)
    base = words(rng, 100)
    longer = base + " " + words(rng, 8)
    recs = [{"id": "short", "text": base}, {"id": "other", "text": words(rng, 100)}, {"id": "long", "text": longer}]
    res = cli(["dedup", "--keep", "longest", "--id-field", "id", "--threshold", "0.8"], input=jsonl(recs))
    assert res.exit_code == 0, res.stderr
    assert ids(res) == ["other", "long"]  # input order, longest of the group
    first = cli(["dedup", "--id-field", "id"], input=jsonl(recs))
    assert ids(first) == ["short", "other"]


def test_mark_keeps_everything(cli, corpus):
    res = cli(["dedup", "--mark", "--id-field", "id"], input=jsonl(corpus))
    out = res.records()
    assert [r["id"] for r in out] == [r["id"] for r in corpus]
    dups = [r for r in out if r["is_duplicate"]]
    assert len(dups) == 12
    for r in out:
        assert r["dup_cluster"].split("-")[0] == r["id"].split("-")[0]
        if not r["is_duplicate"]:
            assert r["dup_cluster"] == r["id"]
    # fields of the input come first, unchanged
    assert list(out[0])[:2] == ["id", "text"]


@pytest.mark.parametrize(
    "flags,expected",
    [
        ([], ["a", "c", "d", "e"]),  # whitespace-insensitive by default
        (["--ignore-case"], ["a", "d", "e"]),
        (["--ignore-case", "--ignore-punctuation"], ["a", "e"]),
        (["--no-ignore-whitespace"], ["a", "b", "c", "d", "e"]),
    ],
)
def test_exact_switches(cli, flags, expected):
    recs = [
        {"id": "a", "text": "Hello world, again."},
        {"id": "b", "text": "  Hello   world, again.\n"},
        {"id": "c", "text": "hello WORLD, again."},
        {"id": "d", "text": "hello world again"},
        {"id": "e", "text": "something else"},
    ]
    res = cli(["dedup", "--exact", "--id-field", "id", *flags], input=jsonl(recs))
    assert res.exit_code == 0, res.stderr
    assert ids(res) == expected


def test_near_mode_ignores_case_and_punctuation_but_not_content(cli):
    recs = [{"id": "a", "text": "One two three four five six seven eight nine ten."},
            {"id": "b", "text": "one, TWO three four five six seven eight nine ten"},
            {"id": "c", "text": "one two three four five six seven eight nine eleven"}]
    res = cli(["dedup", "--id-field", "id"], input=jsonl(recs))
    assert ids(res) == ["a", "c"]


def test_char_shingles_and_threshold(cli):
    recs = [{"id": "a", "text": "colour of the harbour at night"}, {"id": "b", "text": "color of the harbor at night"}]
    loose = cli(["dedup", "--id-field", "id", "--shingle", "char", "--ngram", "3", "--threshold", "0.5"], input=jsonl(recs))
    strict = cli(["dedup", "--id-field", "id", "--shingle", "char", "--ngram", "3", "--threshold", "0.95"], input=jsonl(recs))
    assert ids(loose) == ["a"] and ids(strict) == ["a", "b"]


def test_verify_reports_exact_jaccard(cli, tmp_path):
    # With --verify the decision and the reported similarity are the exact Jaccard.
    rng = random.Random(11)
    base = words(rng, 200)
    copy = near_copy(rng, base, 2)
    rejects = tmp_path / "r.jsonl"
    res = cli(["dedup", "--verify", "--rejects", rejects], input=jsonl([{"text": base}, {"text": copy}]))
    assert res.exit_code == 0
    rej = read_jsonl(rejects)
    assert len(rej) == 1
    from llmtools.ops.dedup.minhash import Shingler

    s = Shingler()
    a, b = set(s.shingles(base).tolist()), set(s.shingles(copy).tolist())
    assert rej[0]["similarity"] == round(len(a & b) / len(a | b), 4)


def test_against_jaccard_and_reference_never_output(cli, tmp_path):
    rng = random.Random(5)
    ref_text = words(rng, 80)
    ref = tmp_path / "eval.jsonl"
    ref.write_text(jsonl([{"id": "q1", "text": ref_text}, {"id": "q2", "text": words(rng, 80)}]))
    recs = [{"id": "leak", "text": near_copy(rng, ref_text, 1)}, {"id": "clean", "text": words(rng, 80)}]
    rejects = tmp_path / "rej.jsonl"
    res = cli(["dedup", "--against", ref, "--id-field", "id", "--rejects", rejects], input=jsonl(recs))
    assert res.exit_code == 0, res.stderr
    assert ids(res) == ["clean"]
    (entry,) = read_jsonl(rejects)
    assert entry["reason"] == "contaminated" and entry["dup_of"] == "q1" and entry["measure"] == "jaccard"


def test_against_containment_catches_partial_copy(cli, tmp_path):
    rng = random.Random(9)
    paragraph = words(rng, 40)
    ref = tmp_path / "eval.jsonl"
    ref.write_text(jsonl([{"text": words(rng, 30) + " " + paragraph}, {"text": words(rng, 60)}]))
    partial = {"id": "partial", "text": words(rng, 150) + " " + paragraph + " " + words(rng, 150)}
    unrelated = {"id": "unrelated", "text": words(rng, 340)}
    data = jsonl([partial, unrelated])
    jac = cli(["dedup", "--against", ref, "--id-field", "id"], input=data)
    assert ids(jac) == ["partial", "unrelated"]  # low Jaccard: not caught
    rejects = tmp_path / "rej.jsonl"
    con = cli(["dedup", "--against", ref, "--containment", "0.5", "--id-field", "id", "--rejects", rejects], input=data)
    assert con.exit_code == 0, con.stderr
    assert ids(con) == ["unrelated"]
    (entry,) = read_jsonl(rejects)
    assert entry["dup_of"] == f"{ref}:1" and entry["measure"] == "containment" and entry["similarity"] >= 0.5


def test_against_records_are_not_indexed(cli, tmp_path):
    ref = tmp_path / "eval.jsonl"
    ref.write_text(jsonl([{"text": "reference text that should never be indexed by dedup at all"}]))
    idx = tmp_path / "idx.npz"
    res = cli(["dedup", "--against", ref, "--index", idx, "-v"], input=jsonl([{"text": "a new unrelated record with other content"}]))
    assert res.exit_code == 0 and "index after=1" in res.stderr


def test_persistent_index_across_runs(cli, corpus, tmp_path):
    idx = tmp_path / "state" / "idx.npz"
    day1, day2 = corpus[:12], corpus[12:]
    r1 = cli(["dedup", "--index", idx, "--id-field", "id", "-v"], input=jsonl(day1))
    assert r1.exit_code == 0, r1.stderr
    rejects = tmp_path / "rej.jsonl"
    r2 = cli(["dedup", "--index", idx, "--id-field", "id", "--rejects", rejects, "-v"], input=jsonl(day2))
    assert r2.exit_code == 0, r2.stderr
    whole = cli(["dedup", "--id-field", "id"], input=jsonl(corpus))
    assert ids(r1) + ids(r2) == ids(whole)
    assert f"index before={len(r1.records())}" in r2.stderr
    # an entry kept on day 1 is named as dup_of on day 2
    day1_ids = set(ids(r1))
    assert any(e["dup_of"] in day1_ids for e in read_jsonl(rejects))
    # the file is a plain npz: loadable without pickle
    import numpy as np

    with np.load(idx, allow_pickle=False) as data:
        assert data["signatures"].shape == (len(whole.records()), 128)


def test_index_with_other_settings_is_usage_error(cli, tmp_path):
    idx = tmp_path / "idx.npz"
    assert cli(["dedup", "--index", idx], input=jsonl([{"text": "a b c d e f"}])).exit_code == 0
    res = cli(["dedup", "--index", idx, "--num-perm", "64"], input=jsonl([{"text": "a b c d e f"}]))
    assert res.exit_code == 2 and "other settings" in res.stderr


def test_corrupt_index_is_bad_input(cli, tmp_path):
    idx = tmp_path / "idx.npz"
    idx.write_bytes(b"not a zip file")
    res = cli(["dedup", "--index", idx], input=jsonl([{"text": "a b c"}]))
    assert res.exit_code == 3 and "cannot read index" in res.stderr


def test_exact_persistent_index(cli, tmp_path):
    idx = tmp_path / "exact.npz"
    cli(["dedup", "--exact", "--index", idx], input=jsonl([{"text": "A"}, {"text": "B"}]))
    res = cli(["dedup", "--exact", "--index", idx], input=jsonl([{"text": "B"}, {"text": "C"}]))
    assert [r["text"] for r in res.records()] == ["C"]


def test_malformed_input(cli, tmp_path):
    data = '{"text": "fine record one two three"}\nnot json\n{"text": 5}\n[1]\n{"text": "fine record one two three"}\n'
    res = cli(["dedup"], input=data)
    assert res.exit_code == 3 and "<stdin>:2" in res.stderr and "Traceback" not in res.stderr
    rejects = tmp_path / "rej.jsonl"
    skip = cli(["dedup", "--on-error", "skip", "--rejects", rejects], input=data)
    assert skip.exit_code == 0 and len(skip.records()) == 1
    reasons = [e["reason"] for e in read_jsonl(rejects)]
    assert sum(r.startswith("invalid JSON") for r in reasons) == 1 and reasons.count("duplicate") == 1
    assert len(reasons) == 4
    keep = cli(["dedup", "--on-error", "keep"], input=data)
    assert keep.exit_code == 0 and {"text": 5} in keep.records()
    missing_id = cli(["dedup", "--id-field", "id"], input='{"text": "x"}\n')
    assert missing_id.exit_code == 3 and "missing id field 'id'" in missing_id.stderr


def test_usage_errors(cli):
    assert cli(["dedup", "--containment", "0.5"], input="").exit_code == 2
    assert cli(["dedup", "--threshold", "1.5"], input="").exit_code == 2
    assert cli(["dedup", "--index", "redis://host/notanumber"], input="").exit_code == 2


def test_deterministic_output(cli, corpus, tmp_path):
    data = jsonl(corpus)
    runs = [cli(["dedup", "--seed", "42", "--mark", "--id-field", "id"], input=data).stdout_bytes for _ in range(2)]
    assert runs[0] == runs[1]
    # byte-identical across processes too (no salted hash() anywhere)
    path = tmp_path / "in.jsonl"
    path.write_text(data)
    procs = [subprocess.run([sys.executable, "-m", "llmtools", "dedup", "--seed", "42", "--mark", str(path)], capture_output=True, env={"PYTHONHASHSEED": str(s), "PATH": ""}) for s in (1, 2)]
    assert procs[0].returncode == 0, procs[0].stderr
    assert procs[0].stdout == procs[1].stdout


def test_jobs_preserve_order(cli):
    rng = random.Random(1)
    bases = [words(rng, 60) for _ in range(40)]
    recs = []
    for i in range(600):
        b = bases[rng.randrange(40)] if rng.random() < 0.5 else words(rng, 60)
        recs.append({"id": i, "text": b})
    data = jsonl(recs)
    serial = cli(["dedup", "--id-field", "id", "--mark"], input=data)
    from llmtools.ops.dedup import DedupOptions, dedup

    opts = DedupOptions(jobs=2, chunk=37, mark=True, id_field="id")
    parallel = list(dedup([dict(r) for r in recs], opts, record_id=lambda r: r["id"]))
    assert [orjson.dumps(r) for r in parallel] == [orjson.dumps(r) for r in serial.records()]
    res = cli(["dedup", "--id-field", "id", "--jobs", "2"], input=data)
    assert res.stdout_bytes == cli(["dedup", "--id-field", "id"], input=data).stdout_bytes


def test_signatures_equal_datasketch_update_batch():
    """The batched path is datasketch's MinHash, just vectorised: same values, bit for bit."""
    from datasketch import MinHash

    from llmtools.ops.dedup.minhash import Shingler

    rng = random.Random(2)
    texts = [words(rng, rng.randrange(0, 90)) for _ in range(30)] + ["", "Ünïcode — text, with “quotes”."]
    for unit, n in (("word", 5), ("char", 4)):
        s = Shingler(num_perm=64, seed=3, ngram=n, unit=unit)
        sigs = s.signatures(texts)
        for text, sig in zip(texts, sigs):
            m = MinHash(num_perm=64, seed=3, hashfunc=s.hashfunc())
            m.update_batch(s.token_shingles(text))
            assert (m.hashvalues == sig).all()


def test_summary_names_largest_clusters(cli, corpus):
    res = cli(["dedup", "--id-field", "id", "-v"], input=jsonl(corpus))
    assert "in=24, unique=12, duplicates=12" in res.stderr
    assert "largest clusters=g" in res.stderr and "(3)" in res.stderr


def test_signatures_across_blocks_and_oversized_documents():
    """Documents that straddle vectorised blocks, and one larger than a block, sign exactly as
    datasketch's per-document update_batch does."""
    from datasketch import MinHash

    from llmtools.ops.dedup import minhash
    from llmtools.ops.dedup.minhash import Shingler

    rng = random.Random(7)
    texts = [words(rng, rng.randrange(1500, 3500)) for _ in range(6)]
    texts.insert(3, words(rng, minhash.BLOCK_SHINGLES + 500))
    s = Shingler(num_perm=16, seed=5)
    sigs = s.signatures(texts)
    for text, sig in zip(texts, sigs):
        m = MinHash(num_perm=16, seed=5, hashfunc=s.hashfunc())
        m.update_batch(s.token_shingles(text))
        assert (m.hashvalues == sig).all()


_TOKEN_ALPHABET = "abcXYZ019_ -.,'\"\n\t\u00a0\u2028éÉßΣσ\u0130\u2019\u2018\u201c\u201d\u2026\u2014\u2013\u00b7\u00b0\u20ac"


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=_TOKEN_ALPHABET, max_size=40))
def test_word_tokens_fast_path_matches_regex(text):
    import re

    assert word_tokens(text) == re.findall(r"\w+", text.lower())


def word_tokens(text: str) -> list[str]:
    """The words dedup hashes, as strings."""
    from llmtools.ops.dedup.minhash import word_bytes

    return word_bytes(text).decode("utf-8", "surrogatepass").split()


def _fmix64_int(x: int) -> int:
    """MurmurHash3's 64-bit finalizer on one Python int (datasketch's `_fmix` is the array form)."""
    mask = (1 << 64) - 1
    x ^= x >> 33
    x = (x * 0xFF51AFD7ED558CCD) & mask
    x ^= x >> 33
    x = (x * 0xC4CEB9FE1A85EC53) & mask
    return x ^ (x >> 33)


def _reference_word_value(word: str) -> int:
    """The documented word value, one word at a time in plain Python."""
    data = word.encode("utf-8", "surrogatepass")
    poly = sum(b * pow(0x100000001B3, i, 1 << 64) for i, b in enumerate(data)) % (1 << 64)
    return _fmix64_int(poly ^ len(data))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=_TOKEN_ALPHABET + "\u4e2d\U0001f600\u00e9\u0301", max_size=30), max_size=6))
def test_vectorised_word_values_match_reference(texts):
    from llmtools.ops.dedup.minhash import Shingler

    s = Shingler(num_perm=16)
    values, lengths = s.token_arrays(texts)
    expected = [_reference_word_value(w) for t in texts for w in word_tokens(t)]
    assert values.tolist() == expected
    assert lengths.tolist() == [len(word_tokens(t)) for t in texts]


def test_long_words_and_typographic_punctuation():
    from llmtools.ops.dedup.minhash import Shingler

    s = Shingler(num_perm=16)
    long_word = "x" * 5000 + "y"
    values, _ = s.token_arrays([long_word, "a " + long_word[:-1] + "z"])
    assert values.tolist() == [_reference_word_value(long_word), _reference_word_value("a"), _reference_word_value(long_word[:-1] + "z")]
    assert s.signatures(["don\u2019t stop the music now please"])[0].tolist() == s.signatures(["don t stop the music now please"])[0].tolist()


@pytest.mark.slow
def test_lsh_bands_match_datasketch_choice():
    """lsh_params (Gauss-Legendre, no scipy) picks the bands datasketch's own optimiser picks."""
    from datasketch.lsh import _optimal_param

    from llmtools.ops.dedup.minhash import lsh_params

    for num_perm in (16, 64, 128, 256):
        for threshold in (0.1, 0.3, 0.5, 0.7, 0.8, 0.85, 0.9, 0.97):
            assert lsh_params(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5), (threshold, num_perm)


def test_datasketch_import_skips_scipy_integrate():
    code = (
        "import sys\n"
        "from llmtools.ops.dedup.minhash import import_datasketch\n"
        "ds = import_datasketch()\n"
        "assert 'scipy.integrate' not in sys.modules, 'scipy.integrate imported'\n"
        "ds.MinHashLSH(num_perm=16, params=(4, 4))\n"
        "import scipy.integrate\n"
        "assert scipy.integrate.quad(lambda x: x, 0, 1)[0] == 0.5\n"
        "from datasketch.lsh import integrate\n"
        "assert abs(integrate(lambda x: x, 0, 2)[0] - 2) < 1e-9\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_gauss_legendre_matches_numpy():
    import numpy as np

    from llmtools.ops.dedup.minhash import _gauss_legendre

    for m in (1, 2, 5, 33, 65, 129, 513):
        x, w = _gauss_legendre(m)
        order = np.argsort(x)
        ref_x, ref_w = np.polynomial.legendre.leggauss(m)
        assert np.allclose(x[order], ref_x, atol=1e-13) and np.allclose(w[order], ref_w, atol=1e-12)


def test_word_longer_than_the_power_cache():
    from llmtools.ops.dedup import minhash
    from llmtools.ops.dedup.minhash import Shingler

    s = Shingler(num_perm=16)
    blob = "ab" * (minhash._POW_CACHE // 2 + 100)
    values, lengths = s.token_arrays([blob, "short words"])
    assert values.tolist() == [_reference_word_value(blob), _reference_word_value("short"), _reference_word_value("words")]
    assert len(s._pow) <= minhash._POW_CACHE


def test_huge_record_is_hashed_in_segments(monkeypatch):
    """A text longer than a segment is cut at spaces: same words, same values, same counts."""
    from llmtools.ops.dedup import minhash
    from llmtools.ops.dedup.minhash import Shingler

    rng = random.Random(3)
    texts = [words(rng, 400), "", words(rng, 30) + " " + "z" * 300 + " tail", words(rng, 5)]
    s = Shingler(num_perm=16)
    whole_values, whole_lengths = s.token_arrays(texts)
    monkeypatch.setattr(minhash, "SEGMENT_BYTES", 64)
    values, lengths = s.token_arrays(texts)
    assert values.tolist() == whole_values.tolist() == [_reference_word_value(w) for t in texts for w in word_tokens(t)]
    assert lengths.tolist() == whole_lengths.tolist() == [len(word_tokens(t)) for t in texts]
    assert s.signatures(texts).tolist() == Shingler(num_perm=16).signatures(texts).tolist()
