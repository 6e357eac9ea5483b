"""score: the work, as plain functions over iterators of dicts (no click, no stdout).

    scorer = Scorer(ScoreConfig(metrics=("bleu", "chrf")))
    for record in scorer.run(records):      # each record gains `scores` (and `judgements`)
        ...
    summary = scorer.summary(gates=[...])   # corpus metrics, CIs, comparison, gate results

Records stream through in batches of `batch_size`. What is kept in memory is a few numbers per
record (each metric's sufficient statistics), which the corpus scores and the bootstrap need;
the records themselves are not kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from llmtools.errors import UsageError
from llmtools.io import field_getter, get_field, set_field, top_key
from llmtools.ops.score.metrics import (
    NORMALIZERS,
    ROUGE_TYPES,
    Bleu,
    Chrf,
    Classification,
    ExactMatch,
    Family,
    Item,
    Rouge,
    Ter,
)

JUDGE_METRICS = ("faithfulness", "answer_relevance", "context_precision", "context_recall", "answer_correctness")

# Every name --metric accepts, mapped to the canonical metric(s) it selects.
METRIC_ALIASES: dict[str, tuple[str, ...]] = {
    "accuracy": ("classification",),
    "precision": ("classification",),
    "recall": ("classification",),
    "f1": ("classification",),
    "classification": ("classification",),
    "exact_match": ("exact_match",),
    "em": ("exact_match",),
    "bleu": ("bleu",),
    "sacrebleu": ("bleu",),
    "chrf": ("chrf",),
    "ter": ("ter",),
    "rouge": ROUGE_TYPES,
    **{t: (t,) for t in ROUGE_TYPES},
    **{t.lower(): (t,) for t in ROUGE_TYPES},
    "perplexity": ("perplexity",),
    "ppl": ("perplexity",),
    "embedding": ("embedding_similarity",),
    "embedding_similarity": ("embedding_similarity",),
    "judge": JUDGE_METRICS,
    "rag": ("faithfulness", "answer_relevance", "context_precision", "context_recall"),
    **{m: (m,) for m in JUDGE_METRICS},
}

DEFAULT_METRICS = ("exact_match", "bleu", "chrf", "rouge")


def parse_metrics(specs: Iterable[str]) -> list[str]:
    """Expand `--metric` values (comma-separated, repeatable, aliases) to canonical names."""
    out: list[str] = []
    for spec in specs:
        for name in spec.replace(" ", ",").split(","):
            name = name.strip()
            if not name:
                continue
            key = name if name in METRIC_ALIASES else name.lower().replace("-", "_")
            if key not in METRIC_ALIASES:
                known = ", ".join(sorted(k for k in METRIC_ALIASES if k == k.lower()))
                raise UsageError(f"unknown metric {name!r}; choose from: {known}")
            for canonical in METRIC_ALIASES[key]:
                if canonical not in out:
                    out.append(canonical)
    return out


@dataclass
class ScoreConfig:
    metrics: Sequence[str] = DEFAULT_METRICS
    prediction_field: str = "prediction"
    reference_field: str = "reference"
    label_field: str = "label"
    context_field: str = "context"
    question_field: str = "question"
    text_field: str | None = None  # perplexity text; None = the prediction field
    baseline_field: str | None = None
    scores_field: str = "scores"
    normalize: str = "strip"
    tokenize: str | None = None  # BLEU tokenizer (sacrebleu's -tok); None = 13a
    lowercase: bool = False  # BLEU and chrF (sacrebleu's -lc)
    chrf_word_order: int = 0  # 2 = chrF++
    ter_case_sensitive: bool = False
    rouge_stem: bool = False
    rouge_tokenize: str = "default"
    batch_size: int = 32
    bootstrap: int = 0
    seed: int = 0
    confidence: float = 0.95
    judge_prompts: dict[str, str] = field(default_factory=dict)
    judge_max_tokens: int = 256
    by: Sequence[str] = ()  # --by: fields whose values slice the records into groups
    pair_by: str | None = None  # --pair-by: the item key that pairs records across groups
    min_group: int = 20  # --min-group: smaller groups are reported, not gated

    def __post_init__(self) -> None:
        self.metrics = parse_metrics(self.metrics)
        if self.normalize not in NORMALIZERS:
            raise UsageError(f"--normalize must be one of {', '.join(NORMALIZERS)}")
        if self.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if self.bootstrap < 0:
            raise UsageError("--bootstrap must be >= 0")
        if not 0.0 < self.confidence < 1.0:
            raise UsageError("--confidence must be between 0 and 1")
        self.by = tuple(dict.fromkeys(self.by))
        if self.pair_by and not self.by:
            raise UsageError("--pair-by needs --by (the field whose groups are compared, e.g. --by variant)")
        if self.min_group < 1:
            raise UsageError("--min-group must be at least 1")
        for metric in self.judge_prompts:
            if metric not in JUDGE_METRICS:
                raise UsageError(f"--judge-prompt: {metric!r} is not a judge metric ({', '.join(JUDGE_METRICS)})")

    # which record fields the chosen metrics read
    @property
    def uses_text_metrics(self) -> bool:
        return any(m in ("exact_match", "bleu", "chrf", "ter", "embedding_similarity") or m in ROUGE_TYPES for m in self.metrics)

    @property
    def judge_metrics(self) -> list[str]:
        return [m for m in self.metrics if m in JUDGE_METRICS]

    def needs(self) -> set[str]:
        from llmtools.ops.score.judge import NEEDS

        need: set[str] = set()
        if self.uses_text_metrics:
            need |= {"prediction", "reference"}
        if "classification" in self.metrics:
            need |= {"prediction", "label"}
        if "perplexity" in self.metrics:
            need.add("text")
        for m in self.judge_metrics:
            need |= set(NEEDS[m])
        return need


# --------------------------------------------------------------------------- reading records


def _strings(value: Any) -> list[str] | None:
    """A string or a non-empty list of strings (nulls in a list are dropped), else None."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        items = [v for v in value if v is not None]
        if items and all(isinstance(v, str) for v in items):
            return items
    return None


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


class Scorer:
    """Scores a stream of records with the configured metric families and builds the summary.

    The loaders are called once, when a metric needs them: `model_loader()` for perplexity,
    `judge_loader()` for the judge metrics, `embedder_loader()` for embedding similarity.
    """

    def __init__(
        self,
        cfg: ScoreConfig,
        model_loader: Callable[[], Any] | None = None,
        judge_loader: Callable[[], Any] | None = None,
        embedder_loader: Callable[[], Any] | None = None,
    ):
        self.cfg = cfg
        self.need = cfg.needs()
        self.model = model_loader() if "perplexity" in cfg.metrics and model_loader else None
        self.judge = judge_loader() if cfg.judge_metrics and judge_loader else None
        self.embedder = embedder_loader() if "embedding_similarity" in cfg.metrics and embedder_loader else None
        if "perplexity" in cfg.metrics and self.model is None:
            raise UsageError("perplexity needs a model (--model)")
        if cfg.judge_metrics and self.judge is None:
            raise UsageError("judge metrics need a judge model (--judge)")
        if "embedding_similarity" in cfg.metrics and self.embedder is None:
            raise UsageError("embedding similarity needs an embedding model (--embedder)")
        self.system = self._families()
        self.baseline = self._families() if cfg.baseline_field else []
        self.n = 0
        self.skipped = 0
        self._scores_key = top_key(cfg.scores_field)
        self._verdicts: dict[int, str | None] = {}  # id(record) -> validate() result, until scored
        self._get_pred = field_getter(cfg.prediction_field)
        self._get_base = field_getter(cfg.baseline_field)
        self._get_ref = field_getter(cfg.reference_field)
        self._get_label = field_getter(cfg.label_field)
        self._get_ctx = field_getter(cfg.context_field)
        self._get_q = field_getter(cfg.question_field)
        self._get_text = field_getter(cfg.text_field) if cfg.text_field else None
        self.groups = None
        if cfg.by:
            from llmtools.ops.score.groups import GroupTracker

            self.groups = GroupTracker(cfg.by, cfg.pair_by)
        judge_pred = {"faithfulness", "answer_relevance", "answer_correctness"}
        self._text_pred = cfg.uses_text_metrics or bool(judge_pred & set(cfg.judge_metrics))

    def _families(self) -> list[Family]:
        cfg = self.cfg
        fams: list[Family] = []
        m = cfg.metrics
        if "classification" in m:
            fams.append(Classification(cfg.normalize))
        if "exact_match" in m:
            fams.append(ExactMatch(cfg.normalize))
        if "bleu" in m:
            fams.append(Bleu(tokenize=cfg.tokenize, lowercase=cfg.lowercase))
        if "chrf" in m:
            fams.append(Chrf(word_order=cfg.chrf_word_order, lowercase=cfg.lowercase))
        if "ter" in m:
            fams.append(Ter(case_sensitive=cfg.ter_case_sensitive))
        rouge_types = [t for t in ROUGE_TYPES if t in m]
        if rouge_types:
            fams.append(Rouge(rouge_types, stem=cfg.rouge_stem, tokenize=cfg.rouge_tokenize))
        if "perplexity" in m:
            from llmtools.ops.score.model_metrics import Perplexity

            fams.append(Perplexity(self.model))
        if "embedding_similarity" in m:
            from llmtools.ops.score.model_metrics import EmbeddingSimilarity

            fams.append(EmbeddingSimilarity(self.embedder))
        if cfg.judge_metrics:
            from llmtools.ops.score.judge import JudgeMetric

            for name in cfg.judge_metrics:
                fams.append(
                    JudgeMetric(name, self.judge, cfg.judge_prompts.get(name), cfg.judge_max_tokens, cfg.seed)
                )
        return fams

    # -- validation: what the command's Job uses to apply --on-error to a record
    def validate(self, record: dict) -> str | None:
        """None if the record can be scored, else why not (a bad-input reason)."""
        reason = self._check(record)
        if len(self._verdicts) > 10_000:  # skipped records never come back to pop theirs
            self._verdicts.clear()  # (safe: a record without an entry is checked again)
        self._verdicts[id(record)] = reason
        return reason

    def _check(self, record: dict) -> str | None:
        cfg, need = self.cfg, self.need
        if "prediction" in need:
            checks = [(cfg.prediction_field, self._get_pred)]
            if cfg.baseline_field:
                checks.append((cfg.baseline_field, self._get_base))
            for path, get in checks:
                value = get(record)
                if value is None:
                    return f"missing field '{path}'"
                if self._text_pred and not isinstance(value, str):
                    return f"field '{path}' is {type(value).__name__}, not a string"
                if not _is_scalar(value):
                    return f"field '{path}' is {type(value).__name__}, not a label"
        if "reference" in need and _strings(self._get_ref(record)) is None:
            return self._why(self._get_ref(record), cfg.reference_field, "a string or a list of strings")
        if "label" in need:
            label = self._get_label(record)
            if label is None:
                label = self._get_ref(record)
                if label is None:
                    return f"missing field '{cfg.label_field}' (or '{cfg.reference_field}')"
            if not _is_scalar(label):
                return f"field '{cfg.label_field}' is {type(label).__name__}, not a label"
        if "context" in need and _strings(self._get_ctx(record)) is None:
            return self._why(self._get_ctx(record), cfg.context_field, "a string or a list of strings")
        if "question" in need and not isinstance(self._get_q(record), str):
            return self._why(self._get_q(record), cfg.question_field, "a string")
        if "text" in need:
            if self._get_text is not None:
                checks = [(cfg.text_field, self._get_text)]
            else:
                checks = [(cfg.prediction_field, self._get_pred)]
                if cfg.baseline_field:
                    checks.append((cfg.baseline_field, self._get_base))
            for path, get in checks:
                if not isinstance(get(record), str):
                    return self._why(get(record), path, "a string")
        return None

    @staticmethod
    def _why(value: Any, path: str, expected: str) -> str:
        if value is None:
            return f"missing field '{path}'"
        return f"field '{path}' is {type(value).__name__}, not {expected}"

    def _item(self, record: dict, baseline: bool = False) -> Item:
        prediction = self._get_base(record) if baseline else self._get_pred(record)
        label = self._get_label(record)
        ref = self._get_ref(record)
        if label is None:
            label = ref
        return Item(
            prediction=prediction,
            references=_strings(ref) or [],
            label=label,
            context=_strings(self._get_ctx(record)) or [],
            question=self._get_q(record),
            text=self._get_text(record) if self._get_text is not None else prediction,
        )

    # -- scoring
    def run(self, records: Iterable[dict]) -> Iterator[dict]:
        """Yield every record, in order; valid ones gain the scores (`--on-error keep` passes
        invalid ones through unchanged)."""
        batch: list[dict] = []
        for record in records:
            batch.append(record)
            if len(batch) >= self.cfg.batch_size:
                yield from self._score(batch)
                batch = []
        if batch:
            yield from self._score(batch)

    def _score(self, batch: list[dict]) -> Iterator[dict]:
        verdicts = self._verdicts
        valid = []
        for r in batch:
            key = id(r)
            reason = verdicts.pop(key) if key in verdicts else self._check(r)
            if reason is None:
                valid.append(r)
        self.skipped += len(batch) - len(valid)
        self.n += len(valid)
        if self.groups is not None:
            for r in valid:
                self.groups.add(r)
        per_record = self._apply(self.system, [self._item(r) for r in valid])
        base_scores = self._apply(self.baseline, [self._item(r, baseline=True) for r in valid]) if self.baseline else None
        out = {id(r): i for i, r in enumerate(valid)}
        for record in batch:
            i = out.get(id(record))
            if i is None:
                yield record
                continue
            scores, judgements = per_record[i]
            if self._scores_key is not None and not isinstance(record.get(self._scores_key), dict):
                record[self._scores_key] = scores  # the common case, without path handling
            else:
                self._put(record, self.cfg.scores_field, scores)
            if judgements:
                self._put(record, "judgements", judgements)
            if base_scores is not None:
                self._put(record, "baseline_scores", base_scores[i][0])
            yield record

    @staticmethod
    def _put(record: dict, path: str, values: dict) -> None:
        existing = get_field(record, path)
        if isinstance(existing, dict):
            existing.update(values)
        else:
            set_field(record, path, values)

    @staticmethod
    def _apply(families: list[Family], items: list[Item]) -> list[tuple[dict, dict]]:
        results: list[tuple[dict, dict]] = [({}, {}) for _ in items]
        if not items:
            return results
        for fam in families:
            for (scores, judgements), got in zip(results, fam.score_batch(items)):
                detail = got.pop("_judgement", None)
                scores.update(got)
                if detail is not None:
                    judgements[fam.keys[0]] = detail
        return results

    # -- summary
    def metrics_of(self, families: list[Family]) -> dict[str, float | None]:
        values: dict[str, float | None] = {}
        for fam in families:
            values.update(fam.summary())
        return values

    def summary(self, gates: Sequence["Gate"] = ()) -> dict:
        cfg = self.cfg
        metrics = self.metrics_of(self.system)
        summary: dict[str, Any] = {"_summary": True, "n": self.n}
        if self.skipped:
            summary["skipped"] = self.skipped
        summary["metrics"] = metrics
        summary["scale"] = {k: v for fam in self.system for k, v in fam.scale.items() if k in metrics}
        signatures = {}
        for fam in self.system:
            extra = fam.extra()
            if "signature" in extra:
                signatures[fam.keys[0]] = extra["signature"]
            if "detail" in extra:
                summary.setdefault("detail", {})[fam.keys[0]] = extra["detail"]
            if "per_label" in extra:
                summary["per_label"] = extra["per_label"]
        if signatures:
            summary["signatures"] = signatures
        judge_info = [fam.extra() | {"metric": fam.keys[0]} for fam in self.system if fam.keys[0] in JUDGE_METRICS]
        if judge_info:
            summary["judge"] = {
                "model": _identity(self.judge),
                "unparsed": {j["metric"]: j["unparsed"] for j in judge_info},
                "failed": {j["metric"]: j["failed"] for j in judge_info},
                "calls": sum(j["judge_calls"] for j in judge_info),
            }
        if self.model is not None:
            summary["perplexity_model"] = _identity(self.model)
        if self.embedder is not None:
            summary["embedder"] = _identity(self.embedder)
        base_metrics = self.metrics_of(self.baseline) if self.baseline else None
        if cfg.bootstrap and self.n:
            self._bootstrap(summary, metrics, base_metrics)
        elif base_metrics is not None:
            summary["baseline"] = {"field": cfg.baseline_field, "metrics": base_metrics}
            summary["comparison"] = {k: {"delta": _delta(metrics.get(k), v)} for k, v in base_metrics.items()}
        if self.groups is not None:
            from llmtools.ops.score.groups import GroupOptions, group_summary

            opts = GroupOptions(min_group=cfg.min_group, bootstrap=cfg.bootstrap, seed=cfg.seed,
                                confidence=cfg.confidence, lower_is_better=frozenset(self.lower_is_better()))
            summary.update(group_summary(self.groups, self.system, self.n, opts))
        if gates:
            summary["gates"] = [g.check_groups(summary.get("disparity", {})) if g.direction == "gap" else g.check(metrics)
                                for g in gates]
        return summary

    def _bootstrap(self, summary: dict, metrics: dict, base_metrics: dict | None) -> None:
        from llmtools.ops.score.bootstrap import bootstrap_scores, confidence_interval, paired_p_value

        cfg = self.cfg
        fams = self.system + self.baseline
        resampled = bootstrap_scores([(f.stat_rows(), f.finalize) for f in fams], self.n, cfg.bootstrap, cfg.seed)
        sys_samples: dict[str, list] = {}
        base_samples: dict[str, list] = {}
        for i, samples in enumerate(resampled):
            (sys_samples if i < len(self.system) else base_samples).update(samples)
        summary["bootstrap"] = {"samples": cfg.bootstrap, "seed": cfg.seed, "confidence": cfg.confidence, "method": "percentile"}
        summary["ci"] = {k: confidence_interval(v, cfg.confidence) for k, v in sys_samples.items() if k in metrics}
        if base_metrics is not None:
            comparison = {}
            for k, b in base_metrics.items():
                s = metrics.get(k)
                delta = _delta(s, b)
                p = paired_p_value(sys_samples.get(k, []), base_samples.get(k, []), delta) if delta is not None else None
                comparison[k] = {"delta": delta, "p_value": p}
            summary["baseline"] = {
                "field": cfg.baseline_field,
                "metrics": base_metrics,
                "ci": {k: confidence_interval(v, cfg.confidence) for k, v in base_samples.items() if k in base_metrics},
            }
            summary["comparison"] = comparison

    def lower_is_better(self) -> set[str]:
        return {k for fam in self.system for k in fam.lower_is_better}

    def metric_keys(self) -> list[str]:
        return [k for fam in self.system for k in fam.keys]


def _delta(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        return None
    return a - b


def _identity(model: Any) -> Any:
    ident = getattr(model, "identity", None)
    if ident is None:
        return None
    return ident.to_dict() if hasattr(ident, "to_dict") else str(ident)


# --------------------------------------------------------------------------- gates


@dataclass
class Gate:
    """`--fail-under METRIC=VALUE` (direction "under") or `--fail-over METRIC=VALUE` ("over")."""

    metric: str
    threshold: float
    direction: str = "under"

    @classmethod
    def parse(cls, spec: str, direction: str = "under") -> "Gate":
        name, sep, value = spec.partition("=")
        name = name.strip()
        try:
            threshold = float(value)
        except ValueError:
            threshold = math.nan
        if not sep or not name or not math.isfinite(threshold):
            raise UsageError(f"--fail-{direction} wants METRIC=VALUE (e.g. bleu=30), got {spec!r}")
        return cls(name, threshold, direction)

    def check(self, metrics: dict) -> dict:
        value = metrics.get(self.metric)
        if value is None or (isinstance(value, float) and math.isnan(value)):
            passed = False
        elif self.direction == "under":
            passed = value >= self.threshold
        else:
            passed = value <= self.threshold
        return {"metric": self.metric, self.direction: self.threshold, "value": value, "passed": passed}

    def describe_result(self, result: dict) -> str:
        return self.describe(result.get("value"))

    def describe(self, value: Any) -> str:
        op = "<" if self.direction == "under" else ">"
        shown = "no value" if value is None else f"{value:.4g}"
        return f"{self.metric}={shown} {op} {self.threshold:g} (--fail-{self.direction} {self.metric}={self.threshold:g})"


def check_gate_names(gates: Sequence[Any], scorer: Scorer) -> None:
    """Refuse a gate on a metric that will not be computed (exit 2, before any work)."""
    keys = scorer.metric_keys()
    for gate in gates:
        option = getattr(gate, "option", f"--fail-{gate.direction}")
        if gate.metric not in keys:
            raise UsageError(f"{option} {gate.metric}: not a computed metric (computed: {', '.join(keys)})")
        if gate.direction == "gap" and not scorer.cfg.by:
            raise UsageError(f"{option} needs --by (the field whose groups are compared)")
