"""Scoring in parts: what a Scorer that saw some of the records hands on, and how a Scorer that
saw none of them takes several parts in, in input order, so that its summary (corpus scores,
signatures, per-label tables, bootstrap intervals, --by groups) is the one a single Scorer over
all the records gives.

    part = export(scorer, per_record=...)     # where the records were scored
    absorb(whole, part)                       # one part after the other, in input order
    whole.summary(gates)

Without `per_record`, a part is each metric's sufficient statistics summed: sacrebleu's n-gram
match counts (BLEU, chrF), hits for exact match, and the confusion counts of (gold, prediction)
labels for classification, all integers, so their sums are exact in any order; ROUGE's
per-record F-measures are summed as exact fractions, and the whole Scorer sums them exactly too
(math.fsum). TER's statistics hold the mean reference length, a fraction that sacrebleu adds
up in record order, so a part sends TER's two numbers per record and the whole adds them in
the same order. The bootstrap and --by need each record's statistics (a
resample weights records), so with `per_record` a part holds them, in order.

Only metrics computed from the records themselves can be split this way; the model metrics
(perplexity, embedding, judge) are refused by `check_splittable`.
"""

from __future__ import annotations

from collections import Counter
from fractions import Fraction
from typing import Any

from llmtools.errors import UsageError
from llmtools.ops.score.metrics import Classification, Family, Rouge, Ter, column_sums

SPLITTABLE = ("classification", "exact_match", "bleu", "chrf", "ter", "rouge1", "rouge2", "rougeL", "rougeLsum")


def check_splittable(metrics: list[str], where: str = "--engine spark") -> None:
    """Model metrics need a model on every worker and keep more than numbers: refuse them (exit 2)."""
    other = [m for m in metrics if m not in SPLITTABLE]
    if other:
        raise UsageError(f"{where} computes the text and classification metrics (exact_match, accuracy/f1, bleu, "
                         f"chrf, ter, rouge); {', '.join(other)} run(s) without it")


def export(scorer: Any, per_record: bool) -> dict:
    """What `scorer` saw, as plain data (picklable, compact without `per_record`)."""
    part: dict[str, Any] = {"n": scorer.n, "skipped": scorer.skipped, "per_record": per_record,
                            "system": [_family(f, per_record) for f in scorer.system],
                            "baseline": [_family(f, per_record) for f in scorer.baseline]}
    if scorer.groups is not None:
        g = scorer.groups
        part["groups"] = {"names": [list(n) for n in g.names], "of": [list(o) for o in g.of],
                          "pair_keys": list(g.pair_keys)}
    return part


def _family(fam: Family, per_record: bool) -> dict:
    state: dict[str, Any] = {}
    if isinstance(fam, Classification):
        names = [None] * len(fam.labels)
        for name, i in fam.labels.items():
            names[i] = name
        state["labels"] = names
        if per_record:
            state["pairs"] = list(fam.pairs)
        else:
            state["confusion"] = dict(Counter(fam.pairs))
        return state
    if hasattr(fam, "nrefs"):
        state["nrefs"] = sorted(fam.nrefs)
    if per_record or isinstance(fam, Ter):
        state["rows"] = fam.rows
    elif fam.rows:
        if isinstance(fam, Rouge):
            state["exact_sums"] = [sum((Fraction(v) for v in col), Fraction(0)) for col in zip(*fam.rows)]
        else:
            state["sums"] = column_sums(fam.rows, fam.width())
    return state


def absorb(scorer: Any, part: dict) -> None:
    """Add a part to `scorer` (a Scorer that scored nothing itself), after the parts before it."""
    scorer.n += part["n"]
    scorer.skipped += part["skipped"]
    for families, states in ((scorer.system, part["system"]), (scorer.baseline, part["baseline"])):
        for fam, state in zip(families, states):
            _absorb_family(fam, state)
    groups = part.get("groups")
    if groups is not None and scorer.groups is not None:
        g = scorer.groups
        for f, (names, of) in enumerate(zip(groups["names"], groups["of"])):
            index, own, out = g._index[f], g.names[f], g.of[f]
            for i in of:
                key = names[i]
                j = index.get(key)
                if j is None:
                    j = index[key] = len(own)
                    own.append(key)
                out.append(j)
        g.pair_keys.extend(groups["pair_keys"])


def _absorb_family(fam: Family, state: dict) -> None:
    if isinstance(fam, Classification):
        # Labels are numbered in order of first appearance: a part's own order, after the parts before it.
        remap = [fam._index(name) for name in state["labels"]]  # names are label_key()s: kept as they are
        if "pairs" in state:
            fam.pairs.extend((remap[g], remap[p]) for g, p in state["pairs"])
        else:
            for (g, p), count in state["confusion"].items():
                fam.pairs.extend([(remap[g], remap[p])] * count)
        return
    if "nrefs" in state:
        fam.nrefs.update(state["nrefs"])
    if "rows" in state:
        fam.rows.extend(state["rows"])
        return
    if "exact_sums" in state:
        exact = getattr(fam, "_exact_sums", None)
        if exact is None:
            fam._exact_sums = list(state["exact_sums"])
        else:
            fam._exact_sums = [a + b for a, b in zip(exact, state["exact_sums"])]
        fam.rows[:] = [[float(v) for v in fam._exact_sums]]  # one row: the exact total, rounded once
        return
    if "sums" in state:  # integers: added in any grouping, the sums are exact
        if fam.rows:
            fam.rows[0] = [a + b for a, b in zip(fam.rows[0], state["sums"])]
        else:
            fam.rows.append(list(state["sums"]))
