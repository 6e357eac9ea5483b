"""`llmtools score`: classification arithmetic, bootstrap, paired comparison, gates, bad input."""

from __future__ import annotations

import json

import pytest
import sacrebleu

from tests.helpers.score_data import DATA, jsonl, ref_streams, run_score


# gold a a b b c c / predicted a b b b c a, worked by hand:
#   a: tp 1, fp 1 (gold c), fn 1 (predicted b) -> P 1/2, R 1/2, F 1/2
#   b: tp 2, fp 1 (gold a), fn 0              -> P 2/3, R 1,   F 4/5
#   c: tp 1, fp 0,          fn 1 (predicted a) -> P 1,   R 1/2, F 2/3
CLASSIFY = [
    {"prediction": "a", "label": "a"},
    {"prediction": "b", "label": "a"},
    {"prediction": "b", "label": "b"},
    {"prediction": " b", "label": "b"},
    {"prediction": "c", "label": "c"},
    {"prediction": "a", "label": "c"},
]


def test_classification_against_hand_computed_values(cli):
    out, summary = run_score(cli, ["--metric", "accuracy,f1"], CLASSIFY)
    m = summary["metrics"]
    assert [r["scores"]["accuracy"] for r in out] == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision_micro"] == m["recall_micro"] == m["f1_micro"] == pytest.approx(4 / 6)
    assert m["precision_macro"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["recall_macro"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["f1_macro"] == pytest.approx((1 / 2 + 4 / 5 + 2 / 3) / 3)
    per = summary["per_label"]
    assert per["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert per["b"] == pytest.approx({"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2})
    assert per["c"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})


def test_classification_matches_scikit_learn_conventions_with_unseen_predicted_label(cli):
    # "d" is predicted but never gold: it joins the macro average with P=R=F=0 (zero_division=0).
    data = [{"prediction": "a", "label": "a"}, {"prediction": "d", "label": "b"}, {"prediction": "b", "label": "b"}]
    _, summary = run_score(cli, ["--metric", "f1"], data)
    m = summary["metrics"]
    # a: P1 R1 F1; b: P1 R1/2 F2/3; d: P0 R0 F0
    assert m["precision_macro"] == pytest.approx(2 / 3)
    assert m["recall_macro"] == pytest.approx(0.5)
    assert m["f1_macro"] == pytest.approx((1 + 2 / 3) / 3)
    assert summary["per_label"]["d"]["support"] == 0


def test_classification_label_falls_back_to_reference_and_accepts_numbers(cli):
    data = [{"prediction": "1", "reference": 1}, {"prediction": "0", "reference": 1}, {"prediction": True, "gold": True}]
    res = cli(["score", "--metric", "accuracy"], input=jsonl(data[:2]))
    assert res.records()[-1]["metrics"]["accuracy"] == 0.5
    res = cli(["score", "--metric", "accuracy", "--label-field", "gold"], input=jsonl(data[2:]))
    assert res.records()[-1]["metrics"]["accuracy"] == 1.0


def test_bootstrap_is_deterministic_and_seeded(cli):
    args = ["--metric", "bleu,chrf,rouge1,em", "--bootstrap", "200", "--summary-only"]
    a = run_score(cli, [*args, "--seed", "7"])[1]
    b = run_score(cli, [*args, "--seed", "7"])[1]
    c = run_score(cli, [*args, "--seed", "8"])[1]
    assert a["ci"] == b["ci"]
    assert a["ci"] != c["ci"]
    assert a["bootstrap"] == {"samples": 200, "seed": 7, "confidence": 0.95, "method": "percentile"}
    for key in ("bleu", "chrf", "rouge1", "exact_match"):
        lo, hi = a["ci"][key]
        assert lo <= hi
        assert lo < a["metrics"][key] < hi or key == "exact_match"


def test_bootstrap_resamples_corpus_bleu_not_sentence_means():
    """One resample with known weights must give sacrebleu's corpus BLEU of that resample."""
    from llmtools.ops.score import ScoreConfig, Scorer
    from llmtools.ops.score.bootstrap import resample_weights

    scorer = Scorer(ScoreConfig(metrics=["bleu"]))
    list(scorer.run([dict(r) for r in DATA]))
    fam = scorer.system[0]
    weights = next(resample_weights(len(DATA), 1, seed=3))[0]
    assert list(weights) != [1.0] * len(DATA)  # a real resample, not the original
    streams = ref_streams(DATA)
    hyps, refs = [], [[] for _ in streams]
    for i, (w, rec) in enumerate(zip(weights, DATA)):
        for _ in range(int(w)):
            hyps.append(rec["prediction"])
            for out, stream in zip(refs, streams):
                out.append(stream[i])
    sums = [sum(w * row[j] for w, row in zip(weights, fam.stat_rows())) for j in range(fam.width())]
    assert fam.finalize(sums)["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, refs).score, abs=1e-9)


def test_paired_comparison_against_baseline(cli):
    data = [dict(r, old=r["prediction"][::-1]) for r in DATA]
    _, s = run_score(cli, ["--metric", "bleu,rouge1", "--baseline-field", "old", "--bootstrap", "300", "--seed", "1"], data)
    hyps = [r["old"] for r in data]
    assert s["baseline"]["metrics"]["bleu"] == sacrebleu.corpus_bleu(hyps, ref_streams(data)).score
    assert s["comparison"]["bleu"]["delta"] == pytest.approx(s["metrics"]["bleu"] - s["baseline"]["metrics"]["bleu"])
    assert s["comparison"]["bleu"]["delta"] > 0
    assert 0 < s["comparison"]["bleu"]["p_value"] < 0.05  # reversed text is clearly worse
    assert s["baseline"]["ci"]["bleu"][0] <= s["baseline"]["metrics"]["bleu"] <= s["baseline"]["ci"]["bleu"][1]


def test_paired_comparison_of_a_system_with_itself_is_not_significant(cli):
    data = [dict(r, same=r["prediction"]) for r in DATA]
    out, s = run_score(cli, ["--metric", "chrf", "--baseline-field", "same", "--bootstrap", "100"], data)
    assert s["comparison"]["chrf"] == {"delta": 0.0, "p_value": 1.0}
    assert out[0]["baseline_scores"] == out[0]["scores"]


def test_paired_p_value_arithmetic():
    from llmtools.ops.score.bootstrap import paired_p_value

    # |diffs| = 1, 3, 2, 6 -> mean 3 -> centred -2, 0, -1, 3; observed 2 -> one (3) is >= 2
    assert paired_p_value([2, 4, 3, 7], [1, 1, 1, 1], 2.0) == pytest.approx(2 / 5)


def test_baseline_without_bootstrap_gives_delta_only(cli):
    data = [dict(r, old="") for r in DATA]
    _, s = run_score(cli, ["--metric", "chrf", "--baseline-field", "old"], data)
    assert s["baseline"]["metrics"]["chrf"] == 0.0
    assert s["comparison"]["chrf"] == {"delta": s["metrics"]["chrf"]}


# --------------------------------------------------------------------------- gates


def test_gate_pass(cli):
    res = cli(["score", "--metric", "bleu,ter", "--fail-under", "bleu=1", "--fail-over", "ter=99"], input=jsonl(DATA))
    assert res.exit_code == 0, res.stderr
    gates = res.records()[-1]["gates"]
    assert [g["passed"] for g in gates] == [True, True]
    assert gates[0] == {"metric": "bleu", "under": 1.0, "value": res.records()[-1]["metrics"]["bleu"], "passed": True}


def test_gate_failure_exits_1_names_each_failed_gate_and_still_writes(cli, tmp_path):
    out = tmp_path / "scored.jsonl"
    res = cli(
        ["score", "--metric", "bleu,chrf,ter", "--fail-under", "bleu=99", "--fail-under", "chrf=1", "--fail-over", "ter=5", "-o", out],
        input=jsonl(DATA),
    )
    assert res.exit_code == 1
    assert "gate failed: bleu=" in res.stderr and "--fail-under bleu=99" in res.stderr
    assert "gate failed: ter=" in res.stderr
    assert "chrf" not in res.stderr.split("gate(s) failed:")[-1]
    lines = out.read_text().splitlines()
    assert len(lines) == len(DATA) + 1  # the records and the summary are kept for the CI log
    assert [g["passed"] for g in json.loads(lines[-1])["gates"]] == [False, True, False]


@pytest.mark.parametrize("spec", ["bleu", "bleu=", "=3", "bleu=abc"])
def test_malformed_gate_is_a_usage_error(cli, spec):
    res = cli(["score", "--metric", "bleu", "--fail-under", spec], input=jsonl(DATA[:1]))
    assert res.exit_code == 2
    assert "METRIC=VALUE" in res.stderr


def test_gate_on_a_metric_not_computed_is_a_usage_error(cli):
    res = cli(["score", "--metric", "bleu", "--fail-under", "rougeL=0.3"], input=jsonl(DATA[:1]))
    assert res.exit_code == 2
    assert "rougeL" in res.stderr and "computed: bleu" in res.stderr


def test_gate_with_no_scored_records_fails(cli):
    res = cli(["score", "--metric", "bleu", "--fail-under", "bleu=0"], input="")
    assert res.exit_code == 1
    assert "bleu=no value" in res.stderr


# --------------------------------------------------------------------------- summary placement


def test_summary_file_and_summary_only(cli, tmp_path):
    path = tmp_path / "summary.json"
    res = cli(["score", "--metric", "chrf", "--summary", path], input=jsonl(DATA))
    assert res.exit_code == 0
    assert len(res.records()) == len(DATA) and all("_summary" not in r for r in res.records())
    assert json.loads(path.read_text())["metrics"]["chrf"] > 0
    res = cli(["score", "--metric", "chrf", "--summary-only"], input=jsonl(DATA))
    assert [r.get("_summary") for r in res.records()] == [True]


def test_verbose_summary_line_on_stderr(cli):
    res = cli(["score", "--metric", "bleu", "-v", "--bootstrap", "50"], input=jsonl(DATA))
    assert "llmtools score: summary: records=12" in res.stderr
    assert "bleu=" in res.stderr and "[" in res.stderr


# --------------------------------------------------------------------------- bad input


def test_bad_json_line_exits_3_with_location(cli):
    res = cli(["score", "--metric", "bleu"], input=jsonl(DATA[:1]) + "{not json\n")
    assert res.exit_code == 3
    assert "<stdin>:2" in res.stderr


@pytest.mark.parametrize(
    "record, reason",
    [
        ({"reference": "x"}, "missing field 'prediction'"),
        ({"prediction": "x"}, "missing field 'reference'"),
        ({"prediction": 3, "reference": "x"}, "field 'prediction' is int, not a string"),
        ({"prediction": "x", "reference": [1, 2]}, "not a string or a list of strings"),
        ({"prediction": "x", "reference": []}, "not a string or a list of strings"),
    ],
)
def test_invalid_records_exit_3(cli, record, reason):
    res = cli(["score", "--metric", "bleu"], input=jsonl([DATA[0], record]))
    assert res.exit_code == 3
    assert reason in res.stderr and "<stdin>:2" in res.stderr


def test_on_error_skip_and_keep(cli, tmp_path):
    rejects = tmp_path / "rejects.jsonl"
    data = [DATA[0], {"prediction": "orphan"}, DATA[1]]
    res = cli(["score", "--metric", "bleu", "--on-error", "skip", "--rejects", rejects], input=jsonl(data))
    assert res.exit_code == 0
    recs = res.records()
    assert len(recs) == 3 and recs[-1]["n"] == 2
    assert json.loads(rejects.read_text())["record"] == {"prediction": "orphan"}
    res = cli(["score", "--metric", "bleu", "--on-error", "keep"], input=jsonl(data))
    recs = res.records()
    assert recs[1] == {"prediction": "orphan"}  # passed through unchanged, not scored
    assert recs[-1]["n"] == 2 and recs[-1]["skipped"] == 1
    hyps = [DATA[0]["prediction"], DATA[1]["prediction"]]
    assert recs[-1]["metrics"]["bleu"] == sacrebleu.corpus_bleu(hyps, ref_streams([DATA[0], DATA[1]])).score
