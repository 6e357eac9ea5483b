"""dedup's LSH bands: chosen for recall at the threshold, candidates verified on signatures,
indexes built with other bands re-banded (file) or refused/adopted with a note (Redis)."""

from __future__ import annotations

import json
import math
import random

import pytest

from tests.dedup.test_dedup import VOCAB, ids, jsonl, near_copy, read_jsonl, words


def test_recall_bands_reach_the_target_with_the_longest_bands():
    from llmtools.ops.dedup.minhash import candidate_probability, recall_bands

    assert recall_bands(0.8, 128) == (16, 6)
    for threshold in (0.3, 0.5, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99):
        for num_perm in (32, 64, 128, 256):
            for target in (0.9, 0.99, 0.999):
                b, r = recall_bands(threshold, num_perm, target)
                assert b * r <= num_perm
                if candidate_probability(threshold, num_perm // 1, 1) >= target:
                    assert candidate_probability(threshold, b, r) >= target, (threshold, num_perm, target)
                    # fewest bands for these rows, and no longer rows would do
                    assert b == 1 or candidate_probability(threshold, b - 1, r) < target
                    for longer in range(r + 1, num_perm + 1):
                        need = next((k for k in range(1, num_perm // longer + 1) if candidate_probability(threshold, k, longer) >= target), None)
                        assert need is None, (threshold, num_perm, target, longer, need)


def test_accept_probability_matches_simulation():
    """The documented curve (exact DP) against a direct simulation of the MinHash model."""
    from llmtools.ops.dedup.minhash import accept_probability

    rng = random.Random(3)
    b, r, n = 16, 6, 128
    for j in (0.72, 0.8, 0.86):
        hits = 0
        trials = 4000
        for _ in range(trials):
            match = [rng.random() < j for _ in range(n)]
            band = any(all(match[i * r : (i + 1) * r]) for i in range(b))
            hits += band and sum(match) >= math.ceil(0.8 * n)
        p = accept_probability(j, 0.8, n, b, r)
        assert abs(hits / trials - p) <= 4 * math.sqrt(p * (1 - p) / trials) + 0.005, (j, hits / trials, p)


def _pair(rng: random.Random, jaccard: float, union: int = 240) -> tuple[list[int], list[int], float]:
    """Two sets of distinct 32-bit shingle hashes with |A & B| / |A | B| as close to `jaccard` as
    `union` allows; returns the exact value too."""
    inter = round(jaccard * union)
    values = rng.sample(range(1, 1 << 32), union)
    a_only = (union - inter) // 2
    a = values[:inter] + values[inter : inter + a_only]
    b = values[:inter] + values[inter + a_only :]
    return a, b, inter / union


@pytest.mark.parametrize("bands", [None, (9, 13)], ids=["recall", "old-9x13"])
def test_accepted_share_follows_the_documented_curve(bands):
    """Property: for pairs of known exact Jaccard, the share found matches accept_probability
    within binomial error, on both sides of the threshold."""
    import numpy as np

    from llmtools.ops.dedup.index import NearIndex
    from llmtools.ops.dedup.minhash import Shingler, accept_probability

    sh = Shingler()
    rng = random.Random(17)
    trials = 300
    for target in (0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.95):
        found = 0
        for _ in range(trials):
            a, b, j = _pair(rng, target)
            h = np.array(a + b, dtype=np.uint32)
            sig = sh.minhash_arrays(h, np.array([0, len(a)], dtype=np.int64))
            index = NearIndex(sh, 0.8, bands=bands)
            hits = index.claim([(sig[0], "a", None), (sig[1], "b", None)])
            found += hits[1] is not None
        used = bands or (16, 6)
        p = accept_probability(j, 0.8, 128, *used)
        sd = math.sqrt(max(p * (1 - p), 1e-4) / trials)
        assert abs(found / trials - p) <= 4 * sd + 0.01, (target, used, found / trials, p)
        if bands is None and j >= 0.88:
            assert found / trials >= 0.98


def test_candidate_below_threshold_is_rejected():
    """A pair sharing whole bands (so an LSH candidate) but agreeing on < 80% of the signature
    is not a duplicate; the same pair above 80% is."""
    import numpy as np

    from llmtools.ops.dedup.index import NearIndex
    from llmtools.ops.dedup.minhash import Shingler

    sh = Shingler()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=128, dtype=np.uint32)
    for agree in (96, 102):  # estimates 0.75 and 0.797
        other = base.copy()
        other[agree:] ^= np.uint32(1)  # the first `agree` rows (all 16 bands) are equal
        index = NearIndex(sh, 0.8)
        index.claim([(base, "a", None)])
        assert index.table.query(index.table.keys(other[None, :])[0]) == [0]  # a candidate
        assert index.claim([(other, "b", None)]) == [None], agree
        assert len(index) == 2
    # just above the threshold: 103/128 = 0.805 is accepted
    other = base.copy()
    other[103:] ^= np.uint32(1)
    index = NearIndex(sh, 0.8)
    index.claim([(base, "a", None)])
    assert index.claim([(other, "b", None)])[0] == ("a", round(103 / 128, 4))


def test_band_table_buckets_and_collisions():
    import numpy as np

    from llmtools.ops.dedup.bands import BandTable

    t = BandTable(128, 16, 6)
    rng = np.random.default_rng(1)
    sigs = rng.integers(0, 2**32, size=(3, 128), dtype=np.uint32)
    sigs[1, :6] = sigs[0, :6]  # shares band 0 with doc 0
    sigs[2, 90:96] = sigs[0, 90:96]  # shares band 15 with doc 0
    sigs[2, 6:12] = sigs[1, 6:12]  # and band 1 with doc 1
    keys = t.keys(sigs)
    assert len(keys) == 3 and all(len(k) == 16 for k in keys)
    assert len(set(keys[0]) | set(keys[1]) | set(keys[2])) == 48 - 3
    t.insert(keys[0], 0)
    assert t.query(keys[1]) == [0]
    t.insert(keys[1], 1)
    assert sorted(t.query(keys[2])) == [0, 1]
    t.insert(keys[2], 2)
    assert t.query(keys[0]) == [0, 1, 2]  # bucket lists, each doc once
    t.insert(keys[0], 0)  # re-inserting is idempotent
    assert t.query(keys[0]) == [0, 1, 2]
    # the same rows in another band are another key
    moved = sigs[0].copy()
    moved[6:12] = sigs[0][:6]
    assert t.keys(moved[None, :])[0][1] != keys[0][0]
    with pytest.raises(ValueError):
        BandTable(64, 16, 6)


def _edited_pairs(seed: int, n: int, edits: int = 2, length: int = 160):
    rng = random.Random(seed)
    vocab = [f"{w}{i}" for i, w in enumerate(VOCAB * 50)]
    recs = []
    for g in range(n):
        base = " ".join(rng.choice(vocab) for _ in range(length))
        recs.append({"id": f"o{g}", "text": base})
        toks = base.split()
        for pos in rng.sample(range(length), edits):
            toks[pos] = rng.choice(vocab)
        recs.append({"id": f"c{g}", "text": " ".join(toks)})
    return recs


def test_two_word_edits_are_found_at_the_defaults(cli, tmp_path):
    """160-word documents with two words replaced (word 5-gram Jaccard ~0.88): the recall bands
    find nearly all; the old 9x13 bands miss about one in seven."""
    recs = _edited_pairs(5, 150)
    new = cli(["dedup", "--id-field", "id", "-v"], input=jsonl(recs))
    old = cli(["dedup", "--id-field", "id", "--bands", "9x13"], input=jsonl(recs))
    assert new.exit_code == 0 and old.exit_code == 0, new.stderr + old.stderr
    missed_new = sum(1 for i in ids(new) if i.startswith("c"))
    missed_old = sum(1 for i in ids(old) if i.startswith("c"))
    assert all(i in ids(new) for i in (f"o{g}" for g in range(150)))  # no original removed
    assert missed_new <= 3, missed_new
    assert missed_old >= 10, missed_old
    assert "lsh bands=16x6 (P(candidate | J=0.8) = 0.992)" in new.stderr


def test_precision_on_near_misses_and_unrelated_text(cli):
    """Pairs at Jaccard ~0.65 are often LSH candidates with these bands, and all are rejected
    on their signatures; unrelated texts never pair."""
    rng = random.Random(8)
    recs = []
    for g in range(120):
        base = words(rng, 200)
        recs.append({"id": f"o{g}", "text": base})
        recs.append({"id": f"m{g}", "text": near_copy(rng, base, 9)})  # ~9 edits in 200 words
    for g in range(200):
        recs.append({"id": f"u{g}", "text": words(rng, 200)})
    res = cli(["dedup", "--id-field", "id", "--mark"], input=jsonl(recs))
    assert res.exit_code == 0, res.stderr
    assert [r["id"] for r in res.records() if r["is_duplicate"]] == []
    # and they were candidates: the bands put most of these pairs in a common bucket
    from llmtools.ops.dedup.index import NearIndex
    from llmtools.ops.dedup.minhash import Shingler

    sh = Shingler()
    index = NearIndex(sh, 0.8)
    sigs = sh.signatures([r["text"] for r in recs[:240]])
    keys = index.table.keys(sigs)
    candidates = 0
    for g in range(120):
        index.table.insert(keys[2 * g], 2 * g)
        candidates += 2 * g in index.table.query(keys[2 * g + 1])
    assert candidates >= 40, candidates


def test_bands_option_and_usage_errors(cli):
    data = jsonl([{"text": "a b c d e f g"}])
    assert cli(["dedup", "--bands", "9x13", "-v"], input=data).exit_code == 0
    for bad in ("9", "x13", "0x5", "9x13x2", "ax3"):
        res = cli(["dedup", "--bands", bad], input=data)
        assert res.exit_code == 2 and "BANDSxROWS" in res.stderr, bad
    res = cli(["dedup", "--bands", "20x7"], input=data)
    assert res.exit_code == 2 and "--num-perm is 128" in res.stderr
    res = cli(["dedup", "--recall-target", "1"], input=data)
    assert res.exit_code == 2
    looser = cli(["dedup", "--recall-target", "0.9", "-v"], input=data)
    assert looser.exit_code == 0 and "lsh bands=13x8" in looser.stderr


def test_file_index_from_other_bands_is_rebanded(cli, tmp_path):
    """An .npz index keeps signatures, not bands: one saved under 9x13 (or by a version that did
    not record bands) is read with this run's bands."""
    import numpy as np

    recs = _edited_pairs(9, 60)
    originals = [r for r in recs if r["id"].startswith("o")]
    copies = [r for r in recs if r["id"].startswith("c")]
    idx = tmp_path / "idx.npz"
    assert cli(["dedup", "--index", idx, "--id-field", "id", "--bands", "9x13"], input=jsonl(originals)).exit_code == 0
    with np.load(idx, allow_pickle=False) as data:
        arrays = dict(data)
    header = json.loads(arrays["header"].tobytes())
    assert header["bands"] == [9, 13]
    del header["bands"]  # as written before bands were recorded
    arrays["header"] = np.frombuffer(json.dumps(header, sort_keys=True).encode(), dtype=np.uint8)
    np.savez(idx, **arrays)
    res = cli(["dedup", "--index", idx, "--id-field", "id", "-v"], input=jsonl(copies))
    assert res.exit_code == 0, res.stderr
    assert len(ids(res)) <= 1  # found against the loaded index with 16x6 bands
    assert "lsh bands=16x6" in res.stderr


def test_against_uses_recall_bands(cli, tmp_path):
    recs = _edited_pairs(21, 80)
    ref = tmp_path / "eval.jsonl"
    ref.write_text(jsonl([r for r in recs if r["id"].startswith("o")]))
    data = jsonl([r for r in recs if r["id"].startswith("c")] + [{"id": "clean", "text": words(random.Random(1), 160)}])
    rejects = tmp_path / "rej.jsonl"
    res = cli(["dedup", "--against", ref, "--id-field", "id", "--rejects", rejects], input=data)
    assert res.exit_code == 0, res.stderr
    assert ids(res)[-1] == "clean" and len(ids(res)) <= 2
    entries = read_jsonl(rejects)
    assert all(e["reason"] == "contaminated" and e["similarity"] >= 0.8 for e in entries)


@pytest.mark.slow
def test_containment_candidates_are_weighted_for_recall(tmp_path):
    """A 56-word passage with its middle word changed, lifted into 240 words of other text: the
    windows inside it are at containment ~0.84. datasketch's LSH Ensemble at its default
    weights (what --recall-target 0.5 gives) finds about half; weighted by the recall target,
    all. Unrelated records are never caught."""
    from llmtools.ops.dedup import DedupOptions, dedup

    vocab = [f"{a}{b}{c}" for a in "bcdfgklmnprstvz" for b in ("a", "e", "i", "o", "u", "ai", "ou") for c in "nrstlmkx"]
    rng = random.Random(31)

    def text(n):
        return " ".join(rng.choice(vocab) for _ in range(n))

    refs = [text(rng.randint(70, 120)) for _ in range(60)]
    ref_path = tmp_path / "refs.jsonl"
    ref_path.write_text(jsonl([{"text": r} for r in refs]))
    recs = []
    for i, ref in enumerate(refs):
        toks = ref.split()
        start = rng.randrange(len(toks) - 56)
        passage = toks[start : start + 56]
        passage[28] = rng.choice(vocab)
        recs.append({"id": f"p{i}", "text": text(120) + " " + " ".join(passage) + " " + text(120)})
    recs += [{"id": f"u{i}", "text": text(296)} for i in range(30)]
    caught = {}
    for target in (0.5, 0.99):
        opts = DedupOptions(against=(str(ref_path),), containment=0.8, mark=True, recall_target=target)
        out = list(dedup([dict(r) for r in recs], opts))
        caught[target] = {r["id"] for r in out if "contaminated" in r}
        assert not any(i.startswith("u") for i in caught[target])
    assert len(caught[0.99]) == 60
    assert len(caught[0.5]) <= 50, len(caught[0.5])


def test_band_table_survives_pickling():
    # --engine spark broadcasts the --against references, band table included.
    import pickle

    import numpy as np

    from llmtools.ops.dedup.bands import BandTable

    table = BandTable(128, 16, 6)
    sigs = np.arange(2 * 128, dtype=np.uint32).reshape(2, 128)
    table.insert_many(sigs, 0)
    copy = pickle.loads(pickle.dumps(table))
    assert copy.keys(sigs) == table.keys(sigs)
    assert copy.query(copy.keys(sigs[:1])[0]) == table.query(table.keys(sigs[:1])[0])
