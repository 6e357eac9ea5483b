"""`score --by`: per-group metrics equal each group scored alone (sacrebleu, rouge-score, hand
counts), the disparity table, --min-group, the --max-gap gate and the --pair-by ranking."""

from __future__ import annotations

import math
import random

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tests.helpers.score_data import DATA, jsonl, ref_streams, refs_of, run_score

# DATA with a group field: three channels of different sizes, one record without the field.
CHANNELS = ["email", "chat", "email", "phone", "chat", "email", "phone", "email", "chat", "email", "phone", None]
GROUPED = [dict(r, meta={"channel": c}) if c else dict(r) for r, c in zip(DATA, CHANNELS)]


def _members(name):
    return [r for r, c in zip(DATA, CHANNELS) if (c or "(missing)") == name]


def test_per_group_sacrebleu_and_rouge_equal_each_group_alone(cli):
    _, summary = run_score(cli, ["--metric", "bleu,chrf,ter,rouge", "--by", "meta.channel", "--min-group", "1"],
                           data=GROUPED)
    groups = summary["groups"]["meta.channel"]
    assert set(groups) == {"email", "chat", "phone", "(missing)"}
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL", "rougeLsum"])
    for name, entry in groups.items():
        members = _members(name)
        assert entry["n"] == len(members)
        hyps = [r["prediction"] for r in members]
        streams = ref_streams(members)
        m = entry["metrics"]
        assert m["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, streams).score, abs=1e-9)
        assert m["chrf"] == pytest.approx(sacrebleu.corpus_chrf(hyps, streams).score, abs=1e-9)
        assert m["ter"] == pytest.approx(sacrebleu.corpus_ter(hyps, streams).score, abs=1e-9)
        for key in ("rouge1", "rougeL", "rougeLsum"):
            each = [max(scorer.score(ref, r["prediction"])[key].fmeasure for ref in refs_of(r)) if len(refs_of(r)) > 1
                    else scorer.score(refs_of(r)[0], r["prediction"])[key].fmeasure for r in members]
            assert m[key] == pytest.approx(sum(each) / len(each), abs=1e-12)
    # the same numbers as scoring each group alone with the command itself
    _, alone = run_score(cli, ["--metric", "bleu,chrf,ter,rouge"], data=[r for r in GROUPED if r.get("meta", {}).get("channel") == "email"])
    assert groups["email"]["metrics"] == pytest.approx(alone["metrics"])


def test_classification_per_group_by_hand(cli):
    data = (
        [{"g": "a", "prediction": "pos", "label": "pos"}] * 3 + [{"g": "a", "prediction": "neg", "label": "pos"}]
        + [{"g": "b", "prediction": "neg", "label": "neg"}] * 2 + [{"g": "b", "prediction": "pos", "label": "neg"}] * 2
        + [{"g": "b", "prediction": "neu", "label": "pos"}]
    )
    _, summary = run_score(cli, ["--metric", "accuracy,f1", "--by", "g", "--min-group", "1"], data=data)
    a = summary["groups"]["g"]["a"]["metrics"]
    b = summary["groups"]["g"]["b"]["metrics"]
    assert a["accuracy"] == 0.75 and b["accuracy"] == 0.4
    # group a: labels pos (tp 3, fn 1) and neg (fp 1): P/R/F1 pos = 1, .75, 6/7; neg = 0, 0, 0
    assert a["f1_macro"] == pytest.approx((6 / 7 + 0) / 2)
    assert a["precision_macro"] == pytest.approx(0.5) and a["recall_macro"] == pytest.approx(0.375)
    # group b: neg tp 2 fp 0 fn 2 -> P 1 R .5 F 2/3; pos tp 0 fp 2 fn 1 -> 0; neu fp 1 -> 0
    assert b["f1_macro"] == pytest.approx((2 / 3) / 3)
    assert b["f1_micro"] == pytest.approx(0.4)
    d = summary["disparity"]["g"]["metrics"]["accuracy"]
    assert d["worst"] == {"group": "b", "value": 0.4} and d["best"] == {"group": "a", "value": 0.75}
    assert d["gap"] == pytest.approx(0.35) and d["ratio"] == pytest.approx(0.4 / 0.75)


def test_lower_is_better_metric_picks_the_highest_as_worst(cli):
    _, summary = run_score(cli, ["--metric", "ter", "--by", "meta.channel", "--min-group", "1"], data=GROUPED)
    groups = summary["groups"]["meta.channel"]
    d = summary["disparity"]["meta.channel"]["metrics"]["ter"]
    values = {k: v["metrics"]["ter"] for k, v in groups.items()}
    assert d["worst"]["value"] == max(values.values()) and d["best"]["value"] == min(values.values())


def test_min_group_reports_small_groups_without_gating_them(cli):
    _, summary = run_score(cli, ["--metric", "exact_match", "--by", "meta.channel", "--min-group", "4"], data=GROUPED)
    table = summary["disparity"]["meta.channel"]
    assert table["small_groups"] == ["(missing)", "chat", "phone"]
    assert "--min-group 4" in table["note"]
    assert summary["groups"]["meta.channel"]["chat"]["small"] is True
    assert table["metrics"]["exact_match"]["gap"] is None  # only one group is big enough


def test_group_bootstrap_ci_brackets_the_group_value(cli):
    _, summary = run_score(cli, ["--metric", "chrf", "--by", "meta.channel", "--bootstrap", "200", "--min-group", "1"],
                           data=GROUPED)
    for entry in summary["groups"]["meta.channel"].values():
        lo, hi = entry["ci"]["chrf"]
        assert lo <= entry["metrics"]["chrf"] + 1e-9 and entry["metrics"]["chrf"] <= hi + 1e-9


def _classified(n_per_group: int, accuracy: dict[str, float], seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for group, acc in accuracy.items():
        for i in range(n_per_group):
            ok = i < round(acc * n_per_group)
            out.append({"id": f"{group}{i}", "channel": group, "label": "yes", "prediction": "yes" if ok else "no"})
    rng.shuffle(out)
    return out


def test_max_gap_gate_exit_codes(cli):
    data = jsonl(_classified(30, {"web": 0.9, "phone": 0.7}) + _classified(5, {"fax": 0.0}))
    ok = cli(["score", "--metric", "accuracy", "--by", "channel", "--max-gap", "accuracy=0.25", "--summary-only"], input=data)
    assert ok.exit_code == 0, ok.stderr
    (summary,) = ok.records()
    gate = summary["gates"][0]
    assert gate["passed"] and gate["value"] == pytest.approx(0.2) and gate["worst"] == "phone"  # fax is too small
    bad = cli(["score", "--metric", "accuracy", "--by", "channel", "--max-gap", "accuracy=0.1", "--summary-only"], input=data)
    assert bad.exit_code == 1
    assert "gap(accuracy) by channel = 0.2 > 0.1" in bad.stderr
    smaller = cli(["score", "--metric", "accuracy", "--by", "channel", "--min-group", "5", "--max-gap", "accuracy=0.5",
                   "--summary-only"], input=data)
    assert smaller.exit_code == 1  # with fax counted, the gap is 0.9
    assert cli(["score", "--metric", "accuracy", "--max-gap", "accuracy=0.1"], input=data).exit_code == 2  # needs --by
    assert cli(["score", "--metric", "accuracy", "--by", "channel", "--max-gap", "bleu=1"], input=data).exit_code == 2
    assert cli(["score", "--metric", "accuracy", "--by", "channel", "--max-gap", "accuracy"], input=data).exit_code == 2
    assert cli(["score", "--metric", "accuracy", "--pair-by", "id"], input=data).exit_code == 2


def test_pair_by_ranks_variants_with_paired_p_values(cli):
    rng = random.Random(3)
    items = [f"q{i}" for i in range(80)]
    truth = {k: rng.choice(["a", "b", "c"]) for k in items}
    rates = {"zero": 0.4, "3shot": 0.8, "cot": 0.78}
    records = []
    for variant, rate in rates.items():
        for k in items:
            right = rng.random() < rate
            records.append({"id": k, "variant": variant, "reference": truth[k],
                            "prediction": truth[k] if right else "x"})
    records.append({"id": "extra", "variant": "zero", "reference": "a", "prediction": "a"})  # unpaired
    res = cli(["score", "--metric", "exact_match", "--by", "variant", "--pair-by", "id", "--bootstrap", "500",
               "--summary-only"], input=jsonl(records))
    assert res.exit_code == 0, res.stderr
    paired = res.records()[0]["paired"]["variant"]
    assert paired["n"] == 80 and paired["unpaired"] == 1
    ranking = paired["metrics"]["exact_match"]["ranking"]
    assert ranking[-1]["group"] == "zero" and ranking[-1]["p_vs_best"] < 0.01
    assert {ranking[0]["group"], ranking[1]["group"]} == {"3shot", "cot"}
    assert ranking[1]["p_vs_best"] > 0.05  # 0.8 vs 0.78 on 80 items is not a real difference
    # values are on the shared items: the unpaired extra record is left out
    zero_alone = sum(1 for r in records[:-1] if r["variant"] == "zero" and r["prediction"] == r["reference"]) / 80
    assert ranking[-1]["value"] == pytest.approx(zero_alone)
    pairs = paired["metrics"]["exact_match"]["pairs"]
    assert len(pairs) == 3
    same = cli(["score", "--metric", "exact_match", "--by", "variant", "--pair-by", "id", "--summary-only"],
               input=jsonl([dict(r, variant=v) for r in records[:80] for v in ("x", "y")]))
    (p,) = [e["p_vs_best"] for e in same.records()[0]["paired"]["variant"]["metrics"]["exact_match"]["ranking"][1:]]
    assert p == 1.0  # a variant against an identical one


def test_summary_table_shows_groups_and_gaps(cli):
    data = jsonl(_classified(25, {"web": 0.9, "phone": 0.7}))
    res = cli(["score", "--metric", "accuracy", "--by", "channel", "-v", "--summary-only"], input=data)
    assert "channel=web (n=25)" in res.stderr and "gap accuracy by channel" in res.stderr
    assert not math.isnan(res.records()[0]["disparity"]["channel"]["metrics"]["accuracy"]["gap"])


def test_free_text_predictions_as_labels_stay_narrow_per_group(cli):
    """accuracy over free-text predictions makes every prediction a label; each group's rows
    hold only its own labels, so 4,000 distinct labels cost no 4,000-wide matrix."""
    data = [{"g": f"g{i % 4}", "label": "yes" if i % 3 else f"text {i}", "prediction": f"text {i}" if i % 3 == 0 else "no"}
            for i in range(4000)]
    _, summary = run_score(cli, ["--metric", "accuracy", "--by", "g"], data=data)
    for name, entry in summary["groups"]["g"].items():
        members = [r for r in data if r["g"] == name]
        assert entry["metrics"]["accuracy"] == pytest.approx(
            sum(r["label"] == r["prediction"] for r in members) / len(members))


def test_classification_subset_sums_equal_the_rows_they_stand_for():
    from llmtools.ops.score.metrics import Classification, Item

    fam = Classification()
    rng = random.Random(5)
    fam.score_batch([Item(prediction=rng.choice("abcd"), label=rng.choice("abce")) for _ in range(200)])
    subset = sorted(rng.sample(range(200), 60))
    rows = fam.subset_rows(subset)
    sums = [sum(col) for col in zip(*rows)]
    assert fam.subset_sums(subset) == sums
    assert fam.finalize(sums) == pytest.approx(fam.finalize([sum(c) for c in zip(*[fam.stat_rows()[i] for i in subset])]))
