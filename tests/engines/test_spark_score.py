"""score --engine spark: partitions hand the driver their sufficient statistics, so the corpus
scores equal the local command's and sacrebleu's / rouge-score's; with --bootstrap and --by the
per-record statistics come in input order, so intervals and groups are the local ones; the
summary record is the last part file, so the parts read in order are the local output."""

from __future__ import annotations

import json
import math
import random

import orjson
import pytest
import sacrebleu
from rouge_score import rouge_scorer

from llmtools.ops.score import Scorer, ScoreConfig
from llmtools.ops.score.partial import absorb, export
from tests.conftest import run_cli
from tests.engines.test_spark_records import parts, write
from tests.helpers.score_data import DATA


def corpus(n: int, bad_every: int = 0) -> list[bytes]:
    """DATA's records (ragged references, unicode, empty predictions) with labels and groups."""
    rng = random.Random(3)
    lines = []
    for i in range(n):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append([b'{"prediction": 5, "reference": "x"}\n', b"{oops\n"][(i // bad_every) % 2])
            continue
        rec = dict(rng.choice(DATA), id=i, grp="abc"[i % 3], label=["yes", "no", 1][i % 3])
        if i % 5 == 0:
            rec["prediction"] = rec["prediction"] + " and more"
        lines.append(orjson.dumps(rec) + b"\n")
    return lines


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("score-in")
    return [write(root / "a.jsonl", corpus(900, bad_every=97)), write(root / "b.jsonl.gz", corpus(40))]


def _split(records: list[dict], cfg: ScoreConfig, cuts: list[int], per_record: bool) -> dict:
    whole = Scorer(cfg)
    for lo, hi in zip([0] + cuts, cuts + [len(records)]):
        part = Scorer(cfg)
        list(part.run([dict(r) for r in records[lo:hi]]))
        absorb(whole, export(part, per_record))
    return whole.summary()


@pytest.mark.parametrize("per_record", [False, True])
def test_parts_sum_to_the_whole_without_spark(per_record):
    records = [orjson.loads(line) for line in corpus(200)]
    cfg = ScoreConfig(metrics=("bleu", "chrf", "ter", "rouge", "exact_match", "accuracy", "f1"),
                      bootstrap=30 if per_record else 0, by=("grp",) if per_record else ())
    one = Scorer(cfg)
    list(one.run([dict(r) for r in records]))
    assert _split(records, cfg, [0, 37, 38, 120], per_record) == one.summary()


@pytest.mark.sysdep("java")
@pytest.mark.parametrize("on_error", ["skip", "keep"])
def test_corpus_scores_equal_local_and_the_libraries(spark, inputs, tmp_path, on_error):
    opts = ["--metric", "bleu,chrf,ter,rouge,exact_match,accuracy,f1", "--on-error", on_error, "-q"]
    local_rej = tmp_path / "local-rejects.jsonl"
    local = run_cli(["score", *opts, "--rejects", local_rej, *inputs])
    assert local.exit_code == 0, local.stderr
    out, rej = tmp_path / "out", tmp_path / "rej"
    res = run_cli(["score", *opts, "--engine", "spark", "-o", out, "--rejects", rej, *inputs])
    assert res.exit_code == 0, res.stderr
    assert len([p for p in out.iterdir() if p.name.startswith("part-")]) >= 4
    assert parts(out) == local.stdout_bytes  # scored records, then the summary record
    assert parts(rej) == local_rej.read_bytes()
    lines = parts(out).splitlines()
    summary = orjson.loads(lines[-1])
    scored = [orjson.loads(line) for line in lines[:-1] if b'"scores"' in line]
    hyps = [r["prediction"] for r in scored]
    refs = [r["reference"] if isinstance(r["reference"], list) else [r["reference"]] for r in scored]
    streams = [[rs[k] if k < len(rs) else None for rs in refs] for k in range(max(map(len, refs)))]
    assert summary["metrics"]["bleu"] == sacrebleu.corpus_bleu(hyps, streams).score
    assert summary["metrics"]["chrf"] == sacrebleu.corpus_chrf(hyps, streams).score
    assert summary["metrics"]["ter"] == sacrebleu.corpus_ter(hyps, streams).score
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    expected = [scorer.score_multi(rs, h)["rougeL"].fmeasure for h, rs in zip(hyps, refs)]
    assert summary["metrics"]["rougeL"] == math.fsum(expected) / len(expected)  # the exact mean of rouge-score's
    # Nothing lost: every line is a record in the output (scored, or kept unchanged) or a reject.
    lines_in = sum(len(corpus(n, b)) for n, b in ((900, 97), (40, 0)))
    assert lines_in == len(lines) - 1 + len(parts(rej).splitlines())
    assert (on_error == "keep") == (len(scored) < len(lines) - 1)


@pytest.mark.sysdep("java")
def test_bootstrap_groups_summary_file_and_gates(spark, inputs, tmp_path):
    opts = ["--metric", "bleu,rougeL,accuracy", "--bootstrap", "40", "--seed", "3", "--by", "grp",
            "--on-error", "skip", "--fail-under", "bleu=99", "-q"]
    local = run_cli(["score", *opts, "--summary-only", *inputs])
    assert local.exit_code == 1  # the gate failed; the summary is still written
    out, report = tmp_path / "out", tmp_path / "report.json"
    res = run_cli(["score", *opts, "--engine", "spark", "-o", out, "--summary", report, *inputs])
    assert res.exit_code == 1 and "gate failed: bleu=" in res.stderr
    assert report.read_bytes() == local.stdout_bytes
    assert json.loads(report.read_text())["ci"]["bleu"]
    assert b'"_summary"' not in parts(out) and len(parts(out).splitlines()) > 800
    only = tmp_path / "only"
    res = run_cli(["score", *opts, "--engine", "spark", "--summary-only", "-o", only, *inputs])
    assert res.exit_code == 1 and parts(only) == local.stdout_bytes


def test_model_metrics_are_refused_on_spark(tmp_path):
    (tmp_path / "in.jsonl").write_text('{"prediction": "a", "reference": "a"}\n')
    res = run_cli(["score", "--metric", "perplexity", "--engine", "spark", tmp_path / "in.jsonl", "-o", tmp_path / "o"])
    assert res.exit_code == 2 and "perplexity" in res.stderr
