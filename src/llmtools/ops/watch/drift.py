"""Drift statistics between a reference distribution and the current window.

- PSI (population stability index) over bins cut at the reference's quantiles (10 by default):
  ``sum((cur% - ref%) * ln(cur% / ref%))``, with empty bins counted as 0.0001 so a bin seen on
  one side only gives a large but finite term (the convention Evidently uses).
- KS: the two-sample Kolmogorov-Smirnov statistic, the largest gap between the two empirical
  CDFs, with its asymptotic p-value (the Kolmogorov distribution at ``sqrt(n*m/(n+m)) * D``).
- JS: the Jensen-Shannon distance (the square root of the divergence, natural log, as
  ``scipy.spatial.distance.jensenshannon`` computes it) between two categorical distributions.

The numeric statistics read the sketches' bucket histograms, so they cost memory bounded by the
sketch and are exact on the bucketed data: values closer together than the sketch's 1% relative
accuracy are treated as equal.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from llmtools.ops.watch.sketch import Sketch, bin_counts, cdf_points

PSI_BINS = 10
PSI_EMPTY = 0.0001


def psi_from_counts(ref_counts: Sequence[float], cur_counts: Sequence[float], empty: float = PSI_EMPTY) -> float | None:
    """PSI of two binned distributions given as counts over the same bins."""
    nr, nc = sum(ref_counts), sum(cur_counts)
    if nr <= 0 or nc <= 0:
        return None
    total = 0.0
    for r, c in zip(ref_counts, cur_counts):
        pr = r / nr or empty
        pc = c / nc or empty
        total += (pc - pr) * math.log(pc / pr)
    return total


def psi(ref: Sketch, cur: Sketch, bins: int = PSI_BINS) -> float | None:
    if ref.n == 0 or cur.n == 0:
        return None
    rc, cc = bin_counts(ref, cur, bins)
    return psi_from_counts(rc, cc)


def ks(ref: Sketch, cur: Sketch) -> float | None:
    """The two-sample KS statistic D over the two sketches' bucket histograms."""
    if ref.n == 0 or cur.n == 0:
        return None
    return max((abs(a - b) for a, b in cdf_points(ref, cur)), default=0.0)


def kolmogorov_sf(x: float) -> float:
    """P(K > x) for the Kolmogorov distribution (the limit of sqrt(n) * D_n)."""
    if x <= 0.0:
        return 1.0
    if x < 0.2:  # the alternating series converges slowly here; the value is 1 to double precision
        return 1.0
    total = 0.0
    for k in range(1, 101):
        term = math.exp(-2.0 * k * k * x * x)
        total += term if k % 2 else -term
        if term < 1e-17:
            break
    return min(1.0, max(0.0, 2.0 * total))


def ks_pvalue(d: float | None, n: int, m: int) -> float | None:
    """Asymptotic two-sided p-value of a two-sample KS statistic d for sample sizes n and m."""
    if d is None or n == 0 or m == 0:
        return None
    en = n * m / (n + m)
    return kolmogorov_sf(math.sqrt(en) * d)


def js_from_counts(ref: Mapping[str, float], cur: Mapping[str, float]) -> float | None:
    """Jensen-Shannon distance (natural log) between two count tables over any keys."""
    nr, nc = sum(ref.values()), sum(cur.values())
    if nr <= 0 or nc <= 0:
        return None
    div = 0.0
    for key in set(ref) | set(cur):
        p = ref.get(key, 0) / nr
        q = cur.get(key, 0) / nc
        m = (p + q) / 2.0
        if p > 0:
            div += p * math.log(p / m)
        if q > 0:
            div += q * math.log(q / m)
    return math.sqrt(max(div / 2.0, 0.0))


def cosine_distance(a: Iterable[float], b: Iterable[float]) -> float | None:
    a, b = list(a), list(b)
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(x * x for x in b))
    if na == 0 or nb == 0:
        return None
    return 1.0 - sum(x * y for x, y in zip(a, b)) / (na * nb)
