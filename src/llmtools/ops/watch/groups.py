"""Per-group window metrics for `watch --by FIELD`, in bounded memory.

Each pane keeps a GroupTable: for each group (a value of the --by field) its count, errors,
accuracy and feedback tallies, and latency and TTFT sketches. A table holds full statistics for
at most `capacity` groups (2 x --top-groups); events of any further group go to one `other`
aggregate, so a field with 100k distinct values costs no more than one with `capacity`. Which
groups hold a slot follows the heavy hitters: the groups in `other` are counted by a
Misra-Gries summary (bounded too), and one whose count passes the smallest tracked group's takes
that group's slot (the evicted group's statistics join `other`; the newcomer is tracked from
then on). When a window is emitted, its top --top-groups groups by count are reported and the
rest are merged into `other`.

Alert rules read the groups through `gap(M)` (largest minus smallest value of group metric M),
`ratio(M)` (smallest / largest), `min(M)` and `max(M)`, over the groups (not `other`) with at
least --min-group events in the window.
"""

from __future__ import annotations

import math
from typing import Any

from llmtools.ops.watch import drift as wd
from llmtools.ops.watch.sketch import Sketch, quantile_name

OTHER_GROUP = "__other__"
MISSING_GROUP = "(missing)"


class GroupAgg:
    """What one group did in a pane or window."""

    __slots__ = ("count", "errors", "acc_ok", "acc_n", "fb_sum", "fb_n", "latency", "ttft")

    def __init__(self) -> None:
        self.count = 0
        self.errors = 0
        self.acc_ok = 0
        self.acc_n = 0
        self.fb_sum = 0.0
        self.fb_n = 0
        self.latency: Sketch | None = None
        self.ttft: Sketch | None = None

    def merge(self, other: "GroupAgg") -> None:
        self.count += other.count
        self.errors += other.errors
        self.acc_ok += other.acc_ok
        self.acc_n += other.acc_n
        self.fb_sum += other.fb_sum
        self.fb_n += other.fb_n
        for name in ("latency", "ttft"):
            theirs = getattr(other, name)
            if theirs is None:
                continue
            mine = getattr(self, name)
            if mine is None:
                setattr(self, name, theirs.copy())
            else:
                mine.merge(theirs)

    def metrics(self, quantiles: tuple[float, ...], latency_name: str, ttft_name: str) -> dict[str, Any]:
        out: dict[str, Any] = {"count": self.count, "errors": self.errors,
                               "error_rate": self.errors / self.count if self.count else None}
        for sk, short in ((self.latency, latency_name), (self.ttft, ttft_name)):
            if sk is None:
                continue
            for q in quantiles:
                out[f"{quantile_name(q)}_{short}"] = sk.quantile(q)
        if self.acc_n:
            out["accuracy"] = self.acc_ok / self.acc_n
        if self.fb_n:
            out["feedback_mean"] = self.fb_sum / self.fb_n
        return out


class GroupTable:
    """Per-group aggregates of one pane, window or reference; at most `capacity` groups."""

    __slots__ = ("groups", "other", "capacity", "alpha", "pending", "floor")

    def __init__(self, capacity: int, alpha: float):
        self.groups: dict[str, GroupAgg] = {}
        self.other = GroupAgg()
        self.capacity = capacity
        self.alpha = alpha
        self.pending: dict[str, int] = {}  # Misra-Gries counts of groups in `other`
        self.floor = 0  # a lower bound of the smallest tracked count (tracked counts only grow)

    def slot(self, key: Any) -> GroupAgg:
        """The aggregate an event of group `key` goes to."""
        name = key if type(key) is str else (MISSING_GROUP if key is None else str(key))
        agg = self.groups.get(name)
        if agg is not None:
            return agg
        if len(self.groups) < self.capacity:
            agg = self.groups[name] = GroupAgg()
            return agg
        pending = self.pending
        seen = pending.get(name, 0) + 1
        if seen > self.floor + 1:
            smallest = min(self.groups, key=lambda n: self.groups[n].count)
            self.floor = self.groups[smallest].count
            if seen > self.floor + 1:
                # A heavy hitter outgrew the smallest tracked group: swap them.
                self.other.merge(self.groups.pop(smallest))
                pending.pop(name, None)
                agg = self.groups[name] = GroupAgg()
                self.floor = 0
                return agg
        pending[name] = seen
        if len(pending) > self.capacity:
            # Misra-Gries: take one from every count, drop the zeros (amortised O(1) an event).
            for n in [n for n, c in pending.items() if c <= 1]:
                del pending[n]
            for n in pending:
                pending[n] -= 1
        return self.other

    def add(self, key: Any, error: bool, latency: Any, ttft: Any, correct: bool | None, feedback: float | None) -> None:
        agg = self.slot(key)
        agg.count += 1
        if error:
            agg.errors += 1
        tv = type(latency)
        if tv is float or tv is int:
            sk = agg.latency
            if sk is None:
                sk = agg.latency = Sketch(self.alpha)
            sk.add(latency)
        tv = type(ttft)
        if tv is float or tv is int:
            sk = agg.ttft
            if sk is None:
                sk = agg.ttft = Sketch(self.alpha)
            sk.add(ttft)
        if correct is not None:
            agg.acc_n += 1
            if correct:
                agg.acc_ok += 1
        if feedback is not None:
            agg.fb_sum += feedback
            agg.fb_n += 1

    def merge(self, other: "GroupTable") -> None:
        for name, agg in sorted(other.groups.items(), key=lambda kv: -kv[1].count):
            mine = self.groups.get(name)
            if mine is None:
                mine = self.other if len(self.groups) >= self.capacity else self.groups.setdefault(name, GroupAgg())
            mine.merge(agg)
        self.other.merge(other.other)

    def compact(self) -> None:
        for agg in (*self.groups.values(), self.other):
            for sk in (agg.latency, agg.ttft):
                if sk is not None:
                    sk.compact()


def summarize(table: GroupTable, reference: GroupTable | None, *, field: str, top: int, min_group: int,
              quantiles: tuple[float, ...], latency_name: str, ttft_name: str, psi_bins: int, psi_threshold: float,
              ks_pvalue: float, ks_max_n: int) -> dict[str, Any]:
    """The `by` part of a window's metric record: the top groups' metrics (with latency drift
    against the same group in the reference), `other`, and the disparity of every metric."""
    ranked = sorted(table.groups.items(), key=lambda kv: (-kv[1].count, kv[0]))
    shown, rest = ranked[:top], ranked[top:]
    other = GroupAgg()
    other.merge(table.other)
    for _, agg in rest:
        other.merge(agg)
    groups: dict[str, Any] = {}
    for name, agg in shown:
        entry = agg.metrics(quantiles, latency_name, ttft_name)
        ref = reference.groups.get(name) if reference is not None else None
        if ref is not None:
            drift = {}
            for short, cur_sk, ref_sk in ((latency_name, agg.latency, ref.latency), (ttft_name, agg.ttft, ref.ttft)):
                # A drift test on a handful of events says nothing (and costs a histogram
                # per group per window): only groups with --min-group events on both sides.
                if cur_sk is None or ref_sk is None or min(cur_sk.n, ref_sk.n) < min_group:
                    continue
                d = wd.ks(ref_sk, cur_sk)
                p = wd.ks_pvalue(d, ref_sk.n, cur_sk.n)
                psi = wd.psi(ref_sk, cur_sk, psi_bins)
                if min(ref_sk.n, cur_sk.n) <= ks_max_n:
                    flag = p is not None and p < ks_pvalue
                else:
                    flag = psi is not None and psi >= psi_threshold
                drift[short] = {"psi": psi, "ks": d, "ks_p": p, "drift": flag}
            if drift:
                entry["drift"] = drift
        groups[name] = entry
    out: dict[str, Any] = {"field": field, "groups": groups, "distinct_tracked": len(table.groups)}
    if other.count:
        out["other"] = other.metrics(quantiles, latency_name, ttft_name)
        out["other_groups"] = len(rest) + (1 if table.other.count else 0)
    out["disparity"] = disparity(groups, min_group)
    return out


def disparity(groups: dict[str, dict], min_group: int) -> dict[str, Any]:
    """min, max, gap and ratio of every group metric, over groups with >= min_group events."""
    eligible = {name: m for name, m in groups.items() if m["count"] >= min_group}
    keys: list[str] = []
    for m in eligible.values():
        keys.extend(k for k in m if k not in keys and k not in ("errors", "drift"))
    out: dict[str, Any] = {}
    for key in keys:
        values = {name: m[key] for name, m in eligible.items() if isinstance(m.get(key), (int, float))}
        if not values:
            continue
        lo_name = min(values, key=lambda n: (values[n], n))
        hi_name = max(values, key=lambda n: (values[n], n))
        lo, hi = values[lo_name], values[hi_name]
        out[key] = {"min": lo, "min_group": lo_name, "max": hi, "max_group": hi_name, "gap": hi - lo,
                    "ratio": lo / hi if hi > 0 and lo >= 0 else None, "groups": len(values)}
    return out


def group_value(record: dict, fn: str, metric: str) -> Any:
    """gap/ratio/min/max of a group metric, from a window record's `by` part (None if absent)."""
    by = record.get("by")
    if not by:
        return None
    entry = by["disparity"].get(metric)
    if entry is None:
        return None
    value = entry[fn]
    return value if value is None or math.isfinite(value) else None
