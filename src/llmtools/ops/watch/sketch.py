"""A bounded-memory quantile sketch with a relative-error guarantee (DDSketch-style).

Values are counted in logarithmic buckets: a positive value v goes to bucket
``ceil(log(v) / log(gamma))`` with ``gamma = (1 + alpha) / (1 - alpha)``. Every value in a bucket
lies within a factor gamma of the others, so reporting the bucket's midpoint
``2 * gamma**k / (gamma + 1)`` is within relative error ``alpha`` of any value in it: a quantile
read from the sketch is within ``alpha`` (1% by default) of the exact one, for any stream length.

Memory is one dict entry per non-empty bucket. Covering 1e-3 .. 1e9 at alpha=1% takes about 1,400
buckets; beyond `max_buckets` the lowest buckets are merged into one (as DDSketch's
"collapsing lowest" store does), which keeps the high quantiles (p95, p99: what latency alerts
read) exact to alpha and bounds memory for any input.

The sketch also keeps count, sum, min and max, and it is mergeable: windows are built from panes
by merging, and drift statistics (KS, PSI) are computed over the bucket histograms.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Iterator

DEFAULT_ALPHA = 0.01
DEFAULT_MAX_BUCKETS = 2048
# Values closer to zero than this count as zero (log buckets cannot reach zero).
MIN_INDEXABLE = 1e-9


class Sketch:
    """Count, sum, min, max and a log-bucket histogram of a numeric stream."""

    __slots__ = ("alpha", "gamma", "inv_log_gamma", "max_buckets", "n", "total", "lo", "hi", "pos", "neg", "zero")

    def __init__(self, alpha: float = DEFAULT_ALPHA, max_buckets: int = DEFAULT_MAX_BUCKETS):
        if not 0.0 < alpha < 1.0:
            raise ValueError("alpha must be in (0, 1)")
        self.alpha = alpha
        self.gamma = (1.0 + alpha) / (1.0 - alpha)
        self.inv_log_gamma = 1.0 / math.log(self.gamma)
        self.max_buckets = max_buckets
        self.n = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.zero = 0

    # ------------------------------------------------------------------ building

    def add(self, v: float) -> None:
        self.n += 1
        self.total += v
        if v < self.lo:
            self.lo = v
        if v > self.hi:
            self.hi = v
        if v > MIN_INDEXABLE:
            k = math.ceil(math.log(v) * self.inv_log_gamma)
            self.pos[k] = self.pos.get(k, 0) + 1
        elif v < -MIN_INDEXABLE:
            k = math.ceil(math.log(-v) * self.inv_log_gamma)
            self.neg[k] = self.neg.get(k, 0) + 1
        else:
            self.zero += 1

    def merge(self, other: "Sketch") -> None:
        if other.gamma != self.gamma:
            raise ValueError("cannot merge sketches with different accuracy")
        self.n += other.n
        self.total += other.total
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)
        self.zero += other.zero
        for src, dst in ((other.pos, self.pos), (other.neg, self.neg)):
            for k, c in src.items():
                dst[k] = dst.get(k, 0) + c
        self.compact()

    def copy(self) -> "Sketch":
        s = Sketch(self.alpha, self.max_buckets)
        s.merge(self)
        return s

    def compact(self) -> None:
        """Fold the lowest buckets together when there are more than `max_buckets`."""
        extra = len(self.pos) + len(self.neg) - self.max_buckets
        if extra <= 0:
            return
        # Collapse from the bottom of the value order: most negative first, then small positives.
        # For negatives the largest key is the most negative value.
        extra = _collapse(self.neg, sorted(self.neg, reverse=True), extra)
        _collapse(self.pos, sorted(self.pos), extra)

    # ------------------------------------------------------------------ reading

    def value_of(self, signed_key: tuple[int, int]) -> float:
        """The representative value of a bucket: (-1, k) negative, (0, 0) zero, (1, k) positive."""
        sign, k = signed_key
        if sign == 0:
            return 0.0
        v = 2.0 * self.gamma**k / (self.gamma + 1.0)
        return v if sign > 0 else -v

    def buckets(self) -> Iterator[tuple[tuple[int, int], int]]:
        """Buckets in ascending value order as ((sign, key), count)."""
        for k in sorted(self.neg, reverse=True):
            yield (-1, k), self.neg[k]
        if self.zero:
            yield (0, 0), self.zero
        for k in sorted(self.pos):
            yield (1, k), self.pos[k]

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0 <= q <= 1) within relative error alpha; None when empty.

        The target is the value of rank ``floor(q * (n - 1))`` in the sorted stream (0-based).
        The extremes are exact: q=0 is the minimum and q=1 the maximum.
        """
        if self.n == 0:
            return None
        if q <= 0.0:
            return self.lo
        if q >= 1.0:
            return self.hi
        rank = math.floor(q * (self.n - 1))
        seen = 0
        for key, c in self.buckets():
            seen += c
            if seen > rank:
                v = self.value_of(key)
                # The bucket midpoint can overshoot the true extremes; clamp to what was seen.
                return min(max(v, self.lo), self.hi)
        return self.hi

    def mean(self) -> float | None:
        return self.total / self.n if self.n else None

    def summary(self, quantiles: tuple[float, ...] = (0.5, 0.95, 0.99)) -> dict:
        if self.n == 0:
            return {"count": 0}
        out: dict = {"count": self.n, "mean": self.total / self.n, "min": self.lo, "max": self.hi}
        for q in quantiles:
            out[quantile_name(q)] = self.quantile(q)
        return out


def _collapse(store: dict[int, int], keys_low_first: list[int], extra: int) -> int:
    """Fold the `extra + 1` lowest buckets of `store` into one; returns how many are still extra."""
    take = keys_low_first[: extra + 1]
    if extra <= 0 or len(take) < 2:
        return extra
    folded = sum(store.pop(k) for k in take[:-1])
    store[take[-1]] += folded
    return extra - (len(take) - 1)


def quantile_name(q: float) -> str:
    """0.5 -> p50, 0.95 -> p95, 0.999 -> p99.9."""
    pct = q * 100
    return f"p{int(pct)}" if float(pct).is_integer() else f"p{pct:g}"


def cdf_points(a: Sketch, b: Sketch) -> Iterator[tuple[float, float]]:
    """The two empirical CDFs evaluated at the upper edge of every bucket either one holds."""
    ha = dict(a.buckets())
    hb = dict(b.buckets())
    keys = sorted(set(ha) | set(hb), key=_order)
    ca = cb = 0
    for key in keys:
        ca += ha.get(key, 0)
        cb += hb.get(key, 0)
        yield ca / a.n, cb / b.n


def bin_counts(ref: Sketch, cur: Sketch, bins: int) -> tuple[list[int], list[int]]:
    """Counts of both sketches over about `bins` bins cut at the reference's quantiles.

    Bin edges fall on bucket boundaries, so each bucket lands in exactly one bin; a bucket holding
    more than 1/bins of the reference is a bin on its own (discrete values keep their own bin).
    """
    ref_buckets = list(ref.buckets())
    if not ref_buckets:
        return [], []
    edges: list[tuple[int, int]] = []  # inclusive upper bucket of each bin but the last
    target = ref.n / bins
    acc = 0
    next_cut = target
    for key, c in ref_buckets[:-1]:
        acc += c
        if acc >= next_cut - 1e-9:
            edges.append(key)
            while next_cut <= acc + 1e-9:
                next_cut += target
    orders = [_order(e) for e in edges]
    ref_counts = [0] * (len(edges) + 1)
    cur_counts = [0] * (len(edges) + 1)
    for key, c in ref_buckets:
        ref_counts[bisect_left(orders, _order(key))] += c
    for key, c in cur.buckets():
        cur_counts[bisect_left(orders, _order(key))] += c
    return ref_counts, cur_counts


def _order(key: tuple[int, int]) -> float:
    """A number that sorts buckets in value order (a negative bucket's key grows as value falls)."""
    sign, k = key
    return float(k) + 1e12 if sign > 0 else (0.0 if sign == 0 else -float(k) - 1e12)
