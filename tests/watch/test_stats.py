"""The sketch's error bound and the drift statistics, checked against scipy and hand values."""

from __future__ import annotations

import math
import random

import pytest

from llmtools.ops.watch import drift as wd
from llmtools.ops.watch.sketch import Sketch, bin_counts


def _sketch(values, **kw) -> Sketch:
    s = Sketch(**kw)
    for v in values:
        s.add(v)
    return s


def _exact(sorted_values, q):
    return sorted_values[math.floor(q * (len(sorted_values) - 1))]


@pytest.mark.parametrize("alpha", [0.01, 0.05])
def test_sketch_quantiles_within_relative_error(alpha):
    rng = random.Random(7)
    values = [rng.lognormvariate(4, 1.5) * rng.choice((1, 1, 1, -1)) for _ in range(20000)] + [0.0] * 50
    s = _sketch(values, alpha=alpha)
    ys = sorted(values)
    worst = 0.0
    for i in range(1, 200):
        q = i / 200
        true, est = _exact(ys, q), s.quantile(q)
        if true == 0:
            assert est == 0
        else:
            worst = max(worst, abs(est - true) / abs(true))
    assert worst <= alpha + 1e-12
    assert s.quantile(0) == min(values) and s.quantile(1) == max(values)
    assert s.n == len(values) and s.total == pytest.approx(sum(values))


def test_sketch_memory_is_bounded_and_merge_matches_single_pass():
    rng = random.Random(1)
    a_vals = [rng.uniform(1, 1000) for _ in range(5000)]
    b_vals = [rng.expovariate(0.01) for _ in range(5000)]
    merged = _sketch(a_vals)
    merged.merge(_sketch(b_vals))
    single = _sketch(a_vals + b_vals)
    assert merged.pos == single.pos and merged.n == single.n
    for q in (0.1, 0.5, 0.99):
        assert merged.quantile(q) == single.quantile(q)
    # A stream spanning 1e-6 .. 1e12 at 1% would need ~1,800 buckets; the cap holds it at 200 while
    # the top quantiles keep their guarantee.
    wide = [10 ** rng.uniform(-6, 12) for _ in range(50000)]
    s = _sketch(wide, max_buckets=200)
    s.compact()
    assert len(s.pos) <= 200
    ys = sorted(wide)
    assert abs(s.quantile(0.99) - _exact(ys, 0.99)) / _exact(ys, 0.99) <= 0.01


def test_empty_sketch():
    s = Sketch()
    assert s.quantile(0.5) is None and s.summary() == {"count": 0}
    assert wd.ks(s, _sketch([1.0])) is None and wd.psi(s, _sketch([1.0])) is None


def test_ks_statistic_matches_scipy_on_integer_data():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    # Small integers each get their own bucket, so the sketch's KS is exact.
    a = [rng.randint(1, 40) for _ in range(700)]
    b = [rng.randint(5, 45) for _ in range(900)]
    d = wd.ks(_sketch(a), _sketch(b))
    expected = stats.ks_2samp(a, b)
    assert d == pytest.approx(expected.statistic, abs=1e-12)
    # The asymptotic p-value is the Kolmogorov distribution at sqrt(n*m/(n+m)) * D.
    en = len(a) * len(b) / (len(a) + len(b))
    assert wd.ks_pvalue(d, len(a), len(b)) == pytest.approx(stats.kstwobign.sf(math.sqrt(en) * d), rel=1e-9)


def test_ks_statistic_close_to_scipy_on_continuous_data():
    stats = pytest.importorskip("scipy.stats")
    rng = random.Random(4)
    a = [rng.gauss(300, 60) for _ in range(3000)]
    b = [rng.gauss(320, 70) for _ in range(3000)]
    d = wd.ks(_sketch(a), _sketch(b))
    # Values within 1% of each other share a bucket: the CDF gap is read at bucket edges only.
    assert d == pytest.approx(stats.ks_2samp(a, b).statistic, abs=0.02)
    same = wd.ks(_sketch(a), _sketch(a))
    assert same == 0.0 and wd.ks_pvalue(same, 3000, 3000) == 1.0


def test_js_matches_scipy():
    distance = pytest.importorskip("scipy.spatial.distance")
    ref = {"gpt": 50, "llama": 30, "smol": 20}
    cur = {"gpt": 10, "llama": 30, "smol": 40, "new": 20}
    keys = sorted(set(ref) | set(cur))
    expected = distance.jensenshannon([ref.get(k, 0) for k in keys], [cur.get(k, 0) for k in keys])
    assert wd.js_from_counts(ref, cur) == pytest.approx(expected, abs=1e-12)
    assert wd.js_from_counts(ref, ref) == 0.0
    # Disjoint supports: the distance is sqrt(ln 2), the maximum in natural-log units.
    assert wd.js_from_counts({"a": 1}, {"b": 1}) == pytest.approx(math.sqrt(math.log(2)))


def test_psi_hand_values():
    # ref 25/25/50 %, cur 50/25/25 %: 0.25*ln(2) + 0 + (-0.25)*ln(0.5) = 0.5*ln 2
    assert wd.psi_from_counts([25, 25, 50], [50, 25, 25]) == pytest.approx(0.5 * math.log(2))
    assert wd.psi_from_counts([10, 10], [10, 10]) == 0.0
    # An empty bin counts as 0.0001, as Evidently does.
    expected = (0.0001 - 0.5) * math.log(0.0001 / 0.5) + (1 - 0.5) * math.log(1 / 0.5)
    assert wd.psi_from_counts([5, 5], [0, 8]) == pytest.approx(expected)


def test_psi_from_sketches_matches_an_independent_decile_binning():
    rng = random.Random(5)
    ref = [rng.randint(1, 40) for _ in range(1000)]
    cur = [rng.randint(10, 50) for _ in range(800)]
    got = wd.psi(_sketch(ref), _sketch(cur), bins=10)
    # Independent computation: cut the sorted distinct reference values into bins of at least a
    # tenth of the reference each, count both samples per bin, apply the PSI formula.
    counts = {}
    for v in ref:
        counts[v] = counts.get(v, 0) + 1
    uppers, acc, cut = [], 0, len(ref) / 10
    values = sorted(counts)
    for v in values[:-1]:
        acc += counts[v]
        if acc >= cut - 1e-9:
            uppers.append(v)
            while cut <= acc + 1e-9:
                cut += len(ref) / 10

    def binned(sample):
        out = [0] * (len(uppers) + 1)
        for v in sample:
            out[sum(1 for u in uppers if v > u)] += 1
        return out

    r, c = binned(ref), binned(cur)
    expected = sum(
        ((ci / len(cur) or 1e-4) - (ri / len(ref) or 1e-4)) * math.log((ci / len(cur) or 1e-4) / (ri / len(ref) or 1e-4))
        for ri, c_, ci in zip(r, r, c)
    )
    assert got == pytest.approx(expected, rel=1e-12)
    assert got > 0.2  # a real shift reads as significant
    assert bin_counts(_sketch(ref), _sketch(ref), 10)[0] == r
    assert wd.psi(_sketch(ref), _sketch(ref)) == 0.0


def test_monitor_inlined_sketch_add_matches_sketch_add():
    """Monitor._add keeps its own copy of Sketch.add in the per-record loop (a call per value
    showed in the profile); the two must build the same sketch, bucket for bucket."""
    from llmtools.ops.watch import Monitor, WatchConfig
    from llmtools.ops.watch.sketch import MIN_INDEXABLE

    rng = random.Random(11)
    values = [rng.lognormvariate(3, 2) * rng.choice((1, -1)) for _ in range(3000)]
    values += [0, 0.0, MIN_INDEXABLE / 2, -MIN_INDEXABLE / 2, MIN_INDEXABLE * 3, 1, -1, 10**6, -(10**6), 7, 2.5e-7, 1e12]
    monitor = Monitor(WatchConfig(window=str(10 * len(values)), drift=False))
    for v in values:
        monitor.feed({"x": v})
    inlined = monitor.pane.num["x"]
    reference = _sketch(values)
    for attr in ("n", "total", "lo", "hi", "pos", "neg", "zero"):
        assert getattr(inlined, attr) == getattr(reference, attr), attr
