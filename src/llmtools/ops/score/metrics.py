"""Reference-based metrics for `llmtools score`: classification, exact match, sacrebleu, ROUGE.

Every metric is a *family*: it turns a batch of items into per-record scores and, for each
record, one row of sufficient statistics (plain numbers). Column sums of those rows give the
corpus score (`finalize`), and so do weighted sums, which is how the bootstrap resamples
without scoring anything twice. sacrebleu's own statistics are used as they are, so corpus
BLEU/chrF/TER equal `corpus_score` on all records and sentence scores equal `sentence_score`.

Scales: BLEU, chrF and TER are on sacrebleu's 0-100 scale; everything else here is 0-1.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

# --------------------------------------------------------------------------- items


@dataclass
class Item:
    """What one record contributes: the fields each metric reads, already extracted."""

    prediction: Any = None
    references: list[str] = field(default_factory=list)
    label: Any = None
    context: list[str] = field(default_factory=list)
    question: str | None = None
    text: str | None = None  # the text whose perplexity is measured


class Family:
    """A group of metrics computed together. Subclasses fill in the four members below."""

    #: summary keys this family produces (used for gates and table order)
    keys: tuple[str, ...] = ()
    #: metrics where lower is better (TER, perplexity): gates use --fail-over for them
    lower_is_better: frozenset[str] = frozenset()
    scale: dict[str, str] = {}

    def __init__(self) -> None:
        self.rows: list[list[float]] = []

    def score_batch(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        """Per-record scores for a batch; appends one statistics row per item to `self.rows`."""
        raise NotImplementedError

    def finalize(self, sums: Sequence[float]) -> dict[str, float | None]:
        """Corpus-level metrics from the column sums of (possibly reweighted) statistics rows."""
        raise NotImplementedError

    def width(self) -> int:
        return len(self.rows[0]) if self.rows else 0

    def stat_rows(self) -> list[list[float]]:
        """One row of sufficient statistics per scored record (what the bootstrap resamples)."""
        return self.rows

    def summary(self) -> dict[str, float | None]:
        return self.finalize(column_sums(self.rows, self.width()))

    def extra(self) -> dict[str, Any]:
        """Anything else for the summary record (signatures, per-label tables)."""
        return {}


def column_sums(rows: Sequence[Sequence[float]], width: int) -> list[float]:
    sums = [0.0] * width
    for row in rows:
        for j, v in enumerate(row):
            sums[j] += v
    return sums


# --------------------------------------------------------------------------- normalisation

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD v1.1's answer normalisation: lowercase, drop punctuation and articles, squeeze spaces."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


NORMALIZERS: dict[str, Callable[[str], str]] = {
    "none": lambda s: s,
    "strip": lambda s: s.strip(),
    "lower": lambda s: " ".join(s.lower().split()),
    "squad": squad_normalize,
}


def normalize_value(value: Any, how: str) -> Any:
    return NORMALIZERS[how](value) if isinstance(value, str) else value


def label_key(value: Any) -> str:
    """A label as a summary key: strings as they are, anything else as JSON."""
    if isinstance(value, str):
        return value
    import json

    return json.dumps(value, ensure_ascii=False, sort_keys=True)


# --------------------------------------------------------------------------- exact match


class ExactMatch(Family):
    keys = ("exact_match",)
    scale = {"exact_match": "0-1"}

    def __init__(self, normalize: str = "strip"):
        super().__init__()
        self.norm = NORMALIZERS[normalize]

    def score_batch(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            pred = self.norm(item.prediction)
            hit = 1.0 if any(pred == self.norm(ref) for ref in item.references) else 0.0
            self.rows.append([hit, 1.0])
            out.append({"exact_match": hit})
        return out

    def finalize(self, sums):
        return {"exact_match": sums[0] / sums[1] if sums and sums[1] else None}


# --------------------------------------------------------------------------- classification


class Classification(Family):
    """Accuracy and precision/recall/F1, micro, macro and per label (single-label tasks).

    Macro averages run over every label seen as gold or predicted (scikit-learn's default), and
    a ratio with a zero denominator counts as 0 (scikit-learn's `zero_division=0`).
    """

    keys = ("accuracy", "precision_micro", "recall_micro", "f1_micro", "precision_macro", "recall_macro", "f1_macro")
    scale = {k: "0-1" for k in keys}

    def __init__(self, normalize: str = "strip"):
        super().__init__()
        self.normalize = normalize
        self.labels: dict[str, int] = {}  # label -> index; rows grow as labels appear
        self.pairs: list[tuple[int, int]] = []

    def _index(self, label: Any) -> int:
        key = label_key(label)
        if key not in self.labels:
            self.labels[key] = len(self.labels)
        return self.labels[key]

    def score_batch(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            gold = normalize_value(item.label, self.normalize)
            pred = normalize_value(item.prediction, self.normalize)
            g, p = self._index(gold), self._index(pred)
            self.pairs.append((g, p))
            out.append({"accuracy": 1.0 if g == p else 0.0})
        # Statistics rows are built on demand (`stat_rows`): the label set is known only at the end.
        return out

    def stat_rows(self) -> list[list[float]]:
        """One row per record: [correct, 1, tp_0, fp_0, fn_0, tp_1, ...]."""
        return [self._row(g, p, len(self.labels)) for g, p in self.pairs]

    @staticmethod
    def _row(g: int, p: int, n_labels: int) -> list[float]:
        """One record's statistics row: gold label g, predicted p, out of n_labels."""
        row = [0.0] * (2 + 3 * n_labels)
        row[1] = 1.0
        if g == p:
            row[0] = 1.0
            row[2 + 3 * g] = 1.0
        else:
            row[2 + 3 * p + 1] = 1.0
            row[2 + 3 * g + 2] = 1.0
        return row

    def width(self) -> int:
        return 2 + 3 * len(self.labels)

    def subset_sums(self, indices: Sequence[int]) -> list[float]:
        """The column sums of subset_rows(indices), without building the rows."""
        local: dict[int, int] = {}
        counts: list[float] = []
        correct = 0.0
        for i in indices:
            g, p = self.pairs[i]
            lg = local.get(g)
            if lg is None:
                lg = local[g] = len(local)
                counts.extend((0.0, 0.0, 0.0))
            lp = local.get(p)
            if lp is None:
                lp = local[p] = len(local)
                counts.extend((0.0, 0.0, 0.0))
            if lg == lp:
                correct += 1
                counts[3 * lg] += 1
            else:
                counts[3 * lp + 1] += 1
                counts[3 * lg + 2] += 1
        return [correct, float(len(indices))] + counts

    def subset_rows(self, indices: Sequence[int]) -> list[list[float]]:
        """stat_rows() of some records only, over the labels they use (renumbered): finalize
        gives the same numbers, and a group's rows stay as narrow as its own label set (with
        free-text predictions the full label set can be as large as the input)."""
        local: dict[int, int] = {}
        pairs = []
        for i in indices:
            g, p = self.pairs[i]
            pairs.append((local.setdefault(g, len(local)), local.setdefault(p, len(local))))
        return [self._row(g, p, len(local)) for g, p in pairs]

    def summary(self):
        return self.finalize(self._sums())

    def _sums(self) -> list[float]:
        n_labels = len(self.labels)
        sums = [0.0] * (2 + 3 * n_labels)
        for g, p in self.pairs:
            sums[1] += 1
            if g == p:
                sums[0] += 1
                sums[2 + 3 * g] += 1
            else:
                sums[2 + 3 * p + 1] += 1
                sums[2 + 3 * g + 2] += 1
        return sums

    @staticmethod
    def _prf(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f = 2 * p * r / (p + r) if p + r else 0.0
        return p, r, f

    def finalize(self, sums):
        if not sums or not sums[1]:
            return {k: None for k in self.keys}
        n_labels = (len(sums) - 2) // 3
        tp = sum(sums[2 + 3 * i] for i in range(n_labels))
        fp = sum(sums[3 + 3 * i] for i in range(n_labels))
        fn = sum(sums[4 + 3 * i] for i in range(n_labels))
        pm, rm, fm = self._prf(tp, fp, fn)
        per = [self._prf(*sums[2 + 3 * i: 5 + 3 * i]) for i in range(n_labels)]
        # A label that never occurs in a bootstrap resample (no tp, fp or fn) is left out of the
        # macro average, as it would be had the resample been the real data.
        present = [per[i] for i in range(n_labels) if any(sums[2 + 3 * i: 5 + 3 * i])]
        k = len(present) or 1
        return {
            "accuracy": sums[0] / sums[1],
            "precision_micro": pm,
            "recall_micro": rm,
            "f1_micro": fm,
            "precision_macro": sum(x[0] for x in present) / k,
            "recall_macro": sum(x[1] for x in present) / k,
            "f1_macro": sum(x[2] for x in present) / k,
        }

    def extra(self):
        sums = self._sums()
        per_label = {}
        for name, i in sorted(self.labels.items(), key=lambda kv: kv[0]):
            tp, fp, fn = sums[2 + 3 * i: 5 + 3 * i]
            p, r, f = self._prf(tp, fp, fn)
            per_label[name] = {"precision": p, "recall": r, "f1": f, "support": int(tp + fn)}
        return {"per_label": per_label}


# --------------------------------------------------------------------------- sacrebleu


class _Sacre(Family):
    """Shared plumbing for BLEU/chrF/TER: sacrebleu's own per-segment statistics, once.

    This mirrors `Metric._extract_corpus_statistics` record by record (so input can stream):
    each segment is preprocessed once, its statistics are kept, and both the corpus score and
    the sentence score are computed from them with sacrebleu's own `_compute_score_from_stats`.
    """

    name = ""

    def __init__(self) -> None:
        super().__init__()
        self.nrefs: set[int] = set()
        self.corpus: Any = None  # the sacrebleu Metric for corpus scores
        self.sentence: Any = None  # the one for sentence scores (differs only for BLEU)

    def score_batch(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        metric, sent = self.corpus, self.sentence
        pre = metric._preprocess_segment
        out = []
        name = self.name
        for item in items:
            refs = item.references
            self.nrefs.add(len(refs))
            ref_info = metric._extract_reference_info([pre(r) for r in refs])
            stats = metric._compute_segment_statistics(pre(item.prediction), ref_info)
            self.rows.append(stats)
            out.append({name: sent._compute_score_from_stats(list(stats)).score})
        return out

    def finalize(self, sums):
        if not sums:
            return {self.name: None}
        return {self.name: self.corpus._compute_score_from_stats(list(sums)).score}

    def signature(self) -> str:
        self.corpus.num_refs = next(iter(self.nrefs)) if len(self.nrefs) == 1 else -1
        return self.corpus.get_signature().format()

    def extra(self):
        return {"signature": self.signature()} if self.rows else {}


class Bleu(_Sacre):
    name = "bleu"
    keys = ("bleu",)
    scale = {"bleu": "0-100"}

    def __init__(self, tokenize: str | None = None, lowercase: bool = False):
        super().__init__()
        from sacrebleu.metrics.bleu import BLEU

        # Corpus BLEU as the sacrebleu CLI computes it; sentence BLEU as `sentence_bleu` does
        # (effective order on). Same tokenizer, so the statistics serve both.
        self.corpus = BLEU(tokenize=tokenize, lowercase=lowercase, force=True)
        self.sentence = BLEU(tokenize=tokenize, lowercase=lowercase, force=True, effective_order=True)

    def extra(self):
        if not self.rows:
            return {}
        sums = column_sums(self.rows, self.width())
        score = self.corpus._compute_score_from_stats(list(sums))
        return {"signature": self.signature(), "detail": score.format().split(" = ", 1)[-1]}


class Chrf(_Sacre):
    name = "chrf"
    keys = ("chrf",)
    scale = {"chrf": "0-100"}

    def __init__(self, word_order: int = 0, lowercase: bool = False):
        super().__init__()
        from sacrebleu.metrics.chrf import CHRF

        self.corpus = CHRF(word_order=word_order, lowercase=lowercase)
        self.sentence = self.corpus

    def score_batch(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        metric = self.corpus
        if metric.word_order or any(len(item.references) != 1 for item in items):
            return super().score_batch(items)
        # One reference: sacrebleu's per-reference best-F selection has nothing to choose from,
        # so take its match statistics directly (the same numbers, one F computation fewer).
        from sacrebleu.metrics.helpers import extract_all_char_ngrams

        pre, match, compute = metric._preprocess_segment, metric._get_match_statistics, metric._compute_score_from_stats
        order, space = metric.char_order, metric.whitespace
        out = []
        self.nrefs.add(1)
        for item in items:
            hyp = extract_all_char_ngrams(pre(item.prediction), order, space)
            ref = extract_all_char_ngrams(pre(item.references[0]), order, space)
            stats: list[int] = []
            for h, r in zip(hyp, ref):
                stats.extend(match(h, r))
            self.rows.append(stats)
            out.append({"chrf": compute(stats).score})
        return out


class Ter(_Sacre):
    name = "ter"
    keys = ("ter",)
    scale = {"ter": "0-100, lower is better"}
    lower_is_better = frozenset({"ter"})

    def __init__(self, case_sensitive: bool = False):
        super().__init__()
        from sacrebleu.metrics.ter import TER

        self.corpus = TER(case_sensitive=case_sensitive)
        self.sentence = self.corpus


# --------------------------------------------------------------------------- ROUGE

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


class _UnicodeTokenizer:
    """Lowercased `\\w+` words, so non-Latin text is not erased as rouge-score's default does."""

    def __init__(self, stem: bool):
        import regex

        self._word = regex.compile(r"\w+", regex.UNICODE)
        self._stemmer = None
        if stem:
            from nltk.stem import porter

            self._stemmer = porter.PorterStemmer("ORIGINAL_ALGORITHM")

    def tokenize(self, text: str) -> list[str]:
        tokens = self._word.findall(text.lower())
        if self._stemmer is not None:
            # rouge-score stems only tokens longer than 3 characters; do the same.
            tokens = [self._stemmer.stem(t) if len(t) > 3 else t for t in tokens]
        return tokens


class Rouge(Family):
    """ROUGE F-measures through rouge-score; several references use its `score_multi` (max).

    The corpus figure is the mean of the per-record F-measures.
    """

    scale = {k: "0-1" for k in ROUGE_TYPES}

    def __init__(self, types: Sequence[str] = ROUGE_TYPES, stem: bool = False, tokenize: str = "default"):
        super().__init__()
        from rouge_score import rouge_scorer

        self.keys = tuple(t for t in ROUGE_TYPES if t in types)
        tokenizer = _UnicodeTokenizer(stem) if tokenize == "unicode" else None
        self.scorer = rouge_scorer.RougeScorer(list(self.keys), use_stemmer=stem, tokenizer=tokenizer)

    def score_batch(self, items: Sequence[Item]) -> list[dict[str, Any]]:
        out = []
        for item in items:
            if len(item.references) == 1:
                result = self.scorer.score(item.references[0], item.prediction)
            else:
                result = self.scorer.score_multi(item.references, item.prediction)
            scores = {k: float(result[k].fmeasure) for k in self.keys}
            self.rows.append([scores[k] for k in self.keys] + [1.0])
            out.append(scores)
        return out

    def summary(self):
        # The exactly rounded sum (fsum), so the corpus figure does not depend on the order in
        # which the F-measures are added: scored in parts (ops.score.partial), it is the same.
        return self.finalize([math.fsum(col) for col in zip(*self.rows)] if self.rows else [])

    def finalize(self, sums):
        n = sums[-1] if sums else 0
        return {k: (sums[i] / n if n else None) for i, k in enumerate(self.keys)}


def mean_finalize(key: str, sums: Sequence[float]) -> dict[str, float | None]:
    """For families whose rows are [value, 1] (or [0, 0] when the record has no value)."""
    return {key: sums[0] / sums[1] if sums and sums[1] else None}


def finite(x: float) -> float | None:
    return x if x is not None and math.isfinite(x) else None
