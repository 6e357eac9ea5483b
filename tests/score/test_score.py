"""`llmtools score`: text metrics must equal sacrebleu and rouge-score called directly."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import sacrebleu
from rouge_score import rouge_scorer

from tests.helpers.score_data import DATA, jsonl, ref_streams, refs_of, run_score


def test_sacrebleu_corpus_and_sentence_scores_are_identical(cli):
    out, summary = run_score(cli, ["--metric", "bleu,chrf,ter"])
    hyps = [r["prediction"] for r in DATA]
    streams = ref_streams(DATA)
    assert summary["metrics"]["bleu"] == sacrebleu.corpus_bleu(hyps, streams).score
    assert summary["metrics"]["chrf"] == sacrebleu.corpus_chrf(hyps, streams).score
    assert summary["metrics"]["ter"] == sacrebleu.corpus_ter(hyps, streams).score
    for rec, src in zip(out, DATA):
        refs = refs_of(src)
        assert rec["scores"]["bleu"] == sacrebleu.sentence_bleu(src["prediction"], refs).score
        assert rec["scores"]["chrf"] == sacrebleu.sentence_chrf(src["prediction"], refs).score
        assert rec["scores"]["ter"] == sacrebleu.sentence_ter(src["prediction"], refs).score
    # the corpus score is not the mean of sentence scores (a real corpus BLEU)
    mean = sum(r["scores"]["bleu"] for r in out) / len(out)
    assert not math.isclose(mean, summary["metrics"]["bleu"])


def test_sacrebleu_signature_matches_the_library(cli):
    _, summary = run_score(cli, ["--metric", "bleu,chrf,ter"])
    hyps = [r["prediction"] for r in DATA]
    for name, metric in (("bleu", sacrebleu.BLEU()), ("chrf", sacrebleu.CHRF()), ("ter", sacrebleu.TER())):
        metric.corpus_score(hyps, ref_streams(DATA))
        assert summary["signatures"][name] == str(metric.get_signature())
    assert "nrefs:var" in summary["signatures"]["bleu"]
    assert summary["scale"]["bleu"] == "0-100"


def test_single_reference_signature_and_scores(cli):
    single = [{"prediction": r["prediction"], "reference": refs_of(r)[0]} for r in DATA]
    out, summary = run_score(cli, ["--metric", "bleu,chrf"], single)
    hyps = [r["prediction"] for r in single]
    refs = [[r["reference"] for r in single]]
    assert summary["metrics"]["chrf"] == sacrebleu.corpus_chrf(hyps, refs).score
    assert summary["metrics"]["bleu"] == sacrebleu.corpus_bleu(hyps, refs).score
    assert summary["signatures"]["bleu"].startswith("nrefs:1|")
    for rec in out:
        assert rec["scores"]["chrf"] == sacrebleu.sentence_chrf(rec["prediction"], [rec["reference"]]).score


@pytest.mark.parametrize(
    "args, bleu_kw, chrf_kw, ter_kw",
    [
        (["--lowercase", "--tokenize", "intl"], {"lowercase": True, "tokenize": "intl"}, {"lowercase": True}, {}),
        (["--tokenize", "zh", "--chrf-word-order", "2", "--ter-case-sensitive"], {"tokenize": "zh"}, {"word_order": 2}, {"case_sensitive": True}),
        (["--tokenize", "char"], {"tokenize": "char"}, {}, {}),
    ],
)
def test_sacrebleu_options_map_to_the_library(cli, args, bleu_kw, chrf_kw, ter_kw):
    out, summary = run_score(cli, ["--metric", "bleu,chrf,ter", *args])
    hyps = [r["prediction"] for r in DATA]
    streams = ref_streams(DATA)
    assert summary["metrics"]["bleu"] == sacrebleu.BLEU(**bleu_kw).corpus_score(hyps, streams).score
    assert summary["metrics"]["chrf"] == sacrebleu.CHRF(**chrf_kw).corpus_score(hyps, streams).score
    assert summary["metrics"]["ter"] == sacrebleu.TER(**ter_kw).corpus_score(hyps, streams).score
    sent_bleu = sacrebleu.BLEU(effective_order=True, **bleu_kw)
    for rec, src in zip(out, DATA):
        assert rec["scores"]["bleu"] == sent_bleu.sentence_score(src["prediction"], refs_of(src)).score
        assert rec["scores"]["chrf"] == sacrebleu.CHRF(**chrf_kw).sentence_score(src["prediction"], refs_of(src)).score


@pytest.mark.parametrize("stem", [False, True])
def test_rouge_equals_rouge_score(cli, stem):
    args = ["--metric", "rouge"] + (["--rouge-stem"] if stem else [])
    out, summary = run_score(cli, args)
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    scorer = rouge_scorer.RougeScorer(types, use_stemmer=stem)
    expected = []
    for rec, src in zip(out, DATA):
        refs = refs_of(src)
        got = scorer.score(refs[0], src["prediction"]) if len(refs) == 1 else scorer.score_multi(refs, src["prediction"])
        expected.append(got)
        for t in types:
            assert rec["scores"][t] == got[t].fmeasure, (t, src)
    for t in types:
        assert summary["metrics"][t] == pytest.approx(sum(e[t].fmeasure for e in expected) / len(expected), abs=1e-15)
    assert summary["scale"]["rouge1"] == "0-1"


def test_rouge_stemming_changes_scores(cli):
    plain, _ = run_score(cli, ["--metric", "rouge1"], [DATA[9]])
    stemmed, _ = run_score(cli, ["--metric", "rouge1", "--rouge-stem"], [DATA[9]])
    assert stemmed[0]["scores"]["rouge1"] > plain[0]["scores"]["rouge1"]
    assert set(plain[0]["scores"]) == {"rouge1"}


def test_rouge_unicode_tokenizer_scores_non_latin_text(cli):
    data = [{"prediction": "Der Hund läuft", "reference": "Der Hund rennt"}, {"prediction": "猫 在 睡觉", "reference": "猫 在 吃饭"}]
    default, _ = run_score(cli, ["--metric", "rouge1"], data)
    uni, _ = run_score(cli, ["--metric", "rouge1", "--rouge-tokenize", "unicode"], data)
    assert default[1]["scores"]["rouge1"] == 0.0  # rouge-score's tokenizer drops CJK entirely
    assert uni[1]["scores"]["rouge1"] == pytest.approx(2 / 3)
    assert uni[0]["scores"]["rouge1"] == pytest.approx(2 / 3)  # "läuft" is one word, not "l uft"


@pytest.mark.parametrize(
    "norm, expected",
    [("none", [0.0, 0.0, 1.0, 0.0]), ("strip", [1.0, 0.0, 1.0, 0.0]), ("lower", [1.0, 1.0, 1.0, 0.0]), ("squad", [1.0, 1.0, 1.0, 1.0])],
)
def test_exact_match_normalisation(cli, norm, expected):
    data = [
        {"prediction": " Paris ", "reference": "Paris"},
        {"prediction": "PARIS", "reference": "paris"},
        {"prediction": "Lyon", "reference": ["Paris", "Lyon"]},
        {"prediction": "The Eiffel Tower!", "reference": "eiffel tower"},
    ]
    out, summary = run_score(cli, ["--metric", "exact_match", "--normalize", norm], data)
    assert [r["scores"]["exact_match"] for r in out] == expected
    assert summary["metrics"]["exact_match"] == sum(expected) / 4


def test_records_keep_their_fields_and_order(cli):
    data = [{"z": 1, "prediction": "a b c", "reference": "a b c", "meta": {"k": [1, 2]}, "scores": {"old": 5}}]
    out, _ = run_score(cli, ["--metric", "bleu"], data)
    assert list(out[0]) == ["z", "prediction", "reference", "meta", "scores"]
    assert out[0]["meta"] == {"k": [1, 2]}
    assert out[0]["scores"] == {"old": 5, "bleu": pytest.approx(100.0)}


def test_nested_field_paths(cli):
    data = [{"out": {"text": "the cat sat"}, "gold": {"refs": ["the cat sat", "a cat sat"]}}]
    out, summary = run_score(cli, ["--metric", "bleu,em", "--prediction-field", "out.text", "--reference-field", "gold.refs", "--scores-field", "eval.s"], data)
    assert out[0]["eval"]["s"]["exact_match"] == 1.0
    assert summary["metrics"]["bleu"] == sacrebleu.corpus_bleu(["the cat sat"], [["the cat sat"], ["a cat sat"]]).score


def test_default_metrics(cli):
    out, summary = run_score(cli, [], DATA[:3])
    assert set(summary["metrics"]) == {"exact_match", "bleu", "chrf", "rouge1", "rouge2", "rougeL", "rougeLsum"}
    assert set(out[0]["scores"]) == set(summary["metrics"])


def test_unknown_metric_is_a_usage_error(cli):
    res = cli(["score", "--metric", "bleurt"], input=jsonl(DATA[:1]))
    assert res.exit_code == 2
    assert "unknown metric 'bleurt'" in res.stderr


def test_unknown_bleu_tokenizer_is_a_usage_error(cli):
    res = cli(["score", "--metric", "bleu", "--tokenize", "nope"], input=jsonl(DATA[:1]))
    assert res.exit_code == 2 and "--tokenize" in res.stderr


def test_real_pipe_and_light_imports(tmp_path, venv_bin):
    """Through a real process: stdin to stdout, and scoring BLEU never imports torch."""
    code = (
        "import sys, runpy; sys.argv = ['llmtools', 'score', '--metric', 'bleu,chrf']\n"
        "try:\n    runpy.run_module('llmtools', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "bad = [m for m in ('torch', 'transformers', 'numpy', 'llama_cpp') if m in sys.modules]\n"
        "sys.stderr.write('HEAVY:' + ','.join(bad) + '\\n')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], input=jsonl(DATA).encode(), capture_output=True, timeout=120)
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(DATA) + 1
    assert json.loads(lines[-1])["_summary"] is True
    assert "HEAVY:\n" in proc.stderr.decode()
