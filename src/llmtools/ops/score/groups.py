"""Fairness slices for `llmtools score --by FIELD`: every metric per group, disparities, paired ranks.

The Scorer keeps, for each scored record, the index of its group under each --by field (and its
--pair-by key), beside the statistics rows the metric families already keep. A group's corpus
score is then `finalize(column sums of the group's rows)`: exactly the score of that group
scored alone (corpus BLEU is the group's corpus BLEU, macro F1 averages the labels the group
has), and its bootstrap CI resamples the group's own rows.

    tracker = GroupTracker(("meta.channel",), pair_by="id")
    tracker.add(record)                      # once per scored record, in order
    table = group_summary(tracker, families, ...)
"""

from __future__ import annotations

import math
from array import array
from dataclasses import dataclass
from typing import Any, Sequence

from llmtools.errors import UsageError
from llmtools.io import field_getter
from llmtools.ops.score.metrics import Family, label_key

MISSING_GROUP = "(missing)"


class GroupTracker:
    """Which group each scored record is in, for each --by field, and its pairing key."""

    def __init__(self, by: Sequence[str], pair_by: str | None = None):
        self.by = tuple(by)
        self._getters = [field_getter(f) for f in self.by]
        self.names: list[list[str]] = [[] for _ in self.by]  # group index -> name, per field
        self._index: list[dict[Any, int]] = [{} for _ in self.by]
        self.of: list[array] = [array("i") for _ in self.by]  # record -> group index, per field
        self.pair_by = pair_by
        self._get_pair = field_getter(pair_by) if pair_by else None
        self.pair_keys: list[Any] = []

    def add(self, record: dict) -> None:
        for getter, index, names, of in zip(self._getters, self._index, self.names, self.of):
            value = getter(record)
            key = value if type(value) is str else _key(value)
            i = index.get(key)
            if i is None:
                i = index[key] = len(names)
                names.append(key)
            of.append(i)
        if self._get_pair is not None:
            value = self._get_pair(record)
            self.pair_keys.append(None if value is None else (value if type(value) is str else _key(value)))


def _key(value: Any) -> str:
    return MISSING_GROUP if value is None else label_key(value)


# --------------------------------------------------------------------------- per-group scores


class _Rows:
    """A family's statistics rows for subsets of the records. Per-group sums are plain Python
    (numpy, ~0.15 s to import, is loaded only for the bootstrap and the paired test); a family
    that can narrow its rows (classification: only the labels a subset uses) builds them per
    subset."""

    def __init__(self, family: Family, n: int):
        self.family = family
        self.n = n
        self.narrow = getattr(family, "subset_rows", None)
        self._mat = None

    @property
    def mat(self) -> Any:
        import numpy as np

        if self._mat is None:
            rows = self.family.stat_rows()
            self._mat = np.asarray(rows, dtype=np.float64).reshape(self.n, -1) if self.n else np.zeros((0, 0))
        return self._mat

    def take(self, indices: Any) -> Any:
        import numpy as np

        if self.narrow is None:
            return self.mat[np.asarray(indices, dtype=np.int64)]
        rows = self.narrow([int(i) for i in indices])
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)

    def group_values(self, of: Any, groups: int, members: list) -> list[dict]:
        """finalize() of each group's column sums."""
        fam = self.family
        if self.narrow is not None:
            subset_sums = getattr(fam, "subset_sums", None)
            out = []
            for g in range(groups):
                sums = subset_sums(members[g]) if subset_sums else _column_sums(self.narrow(members[g]))
                out.append(_clean(fam.finalize(sums)))
            return out
        rows = fam.stat_rows()
        width = len(rows[0]) if rows else 0
        sums = [[0.0] * width for _ in range(groups)]
        for g, row in zip(of, rows):
            acc = sums[g]
            for j, v in enumerate(row):
                acc[j] += v
        return [_clean(fam.finalize(s)) if width else _clean(fam.finalize([])) for s in sums]


def _column_sums(rows: list[list[float]]) -> list[float]:
    if not rows:
        return []
    sums = [0.0] * len(rows[0])
    for row in rows:
        for j, v in enumerate(row):
            sums[j] += v
    return sums


@dataclass
class GroupOptions:
    min_group: int = 20
    bootstrap: int = 0
    seed: int = 0
    confidence: float = 0.95
    lower_is_better: frozenset[str] = frozenset()


def group_summary(tracker: GroupTracker, families: list[Family], n: int, opts: GroupOptions) -> dict[str, Any]:
    """{"groups": {field: {...}}, "disparity": {field: {...}}, "paired": {field: {...}}}."""
    mats = [_Rows(f, n) for f in families]
    groups_out: dict[str, Any] = {}
    disparity_out: dict[str, Any] = {}
    paired_out: dict[str, Any] = {}
    for f, field in enumerate(tracker.by):
        names = tracker.names[f]
        members: list[list[int]] = [[] for _ in names]
        for i, g in enumerate(tracker.of[f]):
            members[g].append(i)
        values = [m.group_values(tracker.of[f], len(names), members) for m in mats]
        table: dict[str, Any] = {}
        for g, name in enumerate(names):
            metrics: dict[str, Any] = {}
            for v in values:
                metrics.update(v[g])
            size = len(members[g])
            entry: dict[str, Any] = {"n": size, "metrics": metrics}
            if size < opts.min_group:
                entry["small"] = True
            table[name] = entry
        if opts.bootstrap:
            _group_cis(table, names, members, families, mats, opts)
        groups_out[field] = dict(sorted(table.items(), key=lambda kv: (-kv[1]["n"], kv[0])))
        disparity_out[field] = disparity(table, opts)
        if tracker.pair_by:
            paired_out[field] = paired(tracker, f, families, mats, opts)
    out: dict[str, Any] = {"groups": groups_out, "disparity": disparity_out, "min_group": opts.min_group}
    if paired_out:
        out["paired"] = paired_out
    return out


def _clean(values: dict) -> dict:
    return {k: (v if v is not None and math.isfinite(v) else None) for k, v in values.items()}


def _group_cis(table: dict, names: list[str], members: list, families: list[Family], mats: list,
               opts: GroupOptions) -> None:
    from llmtools.ops.score.bootstrap import bootstrap_scores, confidence_interval

    for g, name in enumerate(names):
        rows_of = members[g]
        size = len(rows_of)
        if not size:
            continue
        resampled = bootstrap_scores([(m.take(rows_of), fam.finalize) for fam, m in zip(families, mats)], size,
                                     opts.bootstrap, opts.seed)
        ci: dict[str, Any] = {}
        for samples in resampled:
            for key, values in samples.items():
                ci[key] = confidence_interval(values, opts.confidence)
        table[name]["ci"] = {k: v for k, v in ci.items() if k in table[name]["metrics"]}


# --------------------------------------------------------------------------- disparity


def disparity(table: dict[str, Any], opts: GroupOptions) -> dict[str, Any]:
    """For each metric, over the groups of at least min_group records: the worst and best group,
    the gap (|best - worst|) and the ratio (smaller / larger value; 1 = parity)."""
    gated = {name: e for name, e in table.items() if e["n"] >= opts.min_group}
    small = sorted(name for name, e in table.items() if e["n"] < opts.min_group)
    keys: list[str] = []
    for e in table.values():
        keys.extend(k for k in e["metrics"] if k not in keys)
    metrics: dict[str, Any] = {}
    for key in keys:
        values = {name: e["metrics"].get(key) for name, e in gated.items() if e["metrics"].get(key) is not None}
        if len(values) < 2:
            metrics[key] = {"worst": None, "best": None, "gap": None, "ratio": None, "groups": len(values)}
            continue
        lower = key in opts.lower_is_better
        ordered = sorted(values.items(), key=lambda kv: (kv[1], kv[0]))
        worst, best = (ordered[-1], ordered[0]) if lower else (ordered[0], ordered[-1])
        hi, lo = max(values.values()), min(values.values())
        metrics[key] = {
            "worst": {"group": worst[0], "value": worst[1]},
            "best": {"group": best[0], "value": best[1]},
            "gap": abs(best[1] - worst[1]),
            "ratio": (lo / hi) if hi > 0 and lo >= 0 else None,
            "groups": len(values),
        }
    out: dict[str, Any] = {"metrics": metrics, "gated_groups": len(gated)}
    if small:
        out["small_groups"] = small
        out["note"] = (f"{len(small)} group(s) below --min-group {opts.min_group} records are reported but left out "
                       "of the disparity table and its gates")
    return out


# --------------------------------------------------------------------------- paired ranking


def paired(tracker: GroupTracker, f: int, families: list[Family], mats: list, opts: GroupOptions) -> dict[str, Any]:
    """Rank the groups of field f (prompt variants, say) on the items every group has, matched by
    the --pair-by key, with sacrebleu's paired bootstrap between every two groups."""
    import numpy as np

    from llmtools.ops.score.bootstrap import bootstrap_scores, paired_p_value

    names = tracker.names[f]
    of = tracker.of[f]
    position: list[dict[Any, int]] = [{} for _ in names]
    duplicates = 0
    for row, (g, key) in enumerate(zip(of, tracker.pair_keys)):
        if key is None:
            continue
        if key in position[g]:
            duplicates += 1
            continue
        position[g][key] = row
    members = [g for g in range(len(names)) if position[g]]
    if len(members) < 2:
        return {"pair_by": tracker.pair_by, "n": 0, "note": "fewer than two groups with --pair-by keys"}
    first = position[members[0]]
    common = [k for k in first if all(k in position[g] for g in members[1:])]
    unpaired = sum(len(position[g]) for g in members) - len(common) * len(members)
    out: dict[str, Any] = {"pair_by": tracker.pair_by, "n": len(common), "groups": [names[g] for g in members]}
    if unpaired:
        out["unpaired"] = unpaired
    if duplicates:
        out["duplicates"] = duplicates
    if not common:
        out["note"] = "no --pair-by key is shared by every group"
        return out
    rows_of = {g: np.asarray([position[g][k] for k in common]) for g in members}
    plan = [(g, fam, m) for g in members for fam, m in zip(families, mats)]
    samples = opts.bootstrap or 1000
    taken = [m.take(rows_of[g]) for g, _, m in plan]
    resampled = bootstrap_scores([(t, fam.finalize) for t, (_, fam, _) in zip(taken, plan)], len(common), samples,
                                 opts.seed)
    values: dict[int, dict[str, Any]] = {g: {} for g in members}
    boot: dict[int, dict[str, list]] = {g: {} for g in members}
    for (g, fam, m), t, got in zip(plan, taken, resampled):
        values[g].update(_clean(fam.finalize(t.sum(axis=0).tolist())))
        boot[g].update(got)
    metrics: dict[str, Any] = {}
    for key in values[members[0]]:
        lower = key in opts.lower_is_better
        scored = [g for g in members if values[g].get(key) is not None]
        ranked = sorted(scored, key=lambda g: (values[g][key] if lower else -values[g][key], names[g]))
        ranking = []
        for rank, g in enumerate(ranked, 1):
            entry: dict[str, Any] = {"group": names[g], "value": values[g][key], "rank": rank}
            if rank > 1:
                best = ranked[0]
                delta = values[g][key] - values[best][key]
                entry["delta_vs_best"] = delta
                entry["p_vs_best"] = paired_p_value(boot[g].get(key, []), boot[best].get(key, []), delta)
            ranking.append(entry)
        pairs = []
        for i, a in enumerate(ranked):
            for b in ranked[i + 1:]:
                delta = values[a][key] - values[b][key]
                pairs.append({"a": names[a], "b": names[b], "delta": delta,
                              "p_value": paired_p_value(boot[a].get(key, []), boot[b].get(key, []), delta)})
        metrics[key] = {"ranking": ranking, "pairs": pairs}
    out["bootstrap"] = {"samples": samples, "seed": opts.seed}
    out["metrics"] = metrics
    return out


# --------------------------------------------------------------------------- the gap gate


@dataclass
class GapGate:
    """`--max-gap METRIC=X`: fail when the gap between the best and the worst group of any --by
    field (groups of at least --min-group records) is above X."""

    metric: str
    threshold: float
    direction: str = "gap"
    option: str = "--max-gap"

    @classmethod
    def parse(cls, spec: str) -> "GapGate":
        name, sep, value = spec.partition("=")
        name = name.strip()
        try:
            threshold = float(value)
        except ValueError:
            threshold = math.nan
        if not sep or not name or not math.isfinite(threshold) or threshold < 0:
            raise UsageError(f"--max-gap wants METRIC=GAP (e.g. exact_match=0.05), got {spec!r}")
        return cls(name, threshold)

    def check_groups(self, disparities: dict[str, Any]) -> dict:
        worst_field, worst = None, None
        for field, table in disparities.items():
            entry = table["metrics"].get(self.metric) or {}
            gap = entry.get("gap")
            if gap is not None and (worst is None or gap > worst["gap"]):
                worst_field, worst = field, entry
        result: dict[str, Any] = {"metric": self.metric, "max_gap": self.threshold}
        if worst is None:
            result.update(value=None, passed=True,
                          note="fewer than two groups of at least --min-group records: not gated")
            return result
        result.update(value=worst["gap"], by=worst_field, worst=worst["worst"]["group"], best=worst["best"]["group"],
                      passed=worst["gap"] <= self.threshold)
        return result

    def describe_result(self, result: dict) -> str:
        return (f"gap({self.metric}) by {result.get('by')} = {result['value']:.4g} > {self.threshold:g} "
                f"(worst {result.get('worst')}, best {result.get('best')}; --max-gap {self.metric}={self.threshold:g})")
