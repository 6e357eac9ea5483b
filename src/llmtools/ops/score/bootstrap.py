"""Bootstrap confidence intervals and the paired bootstrap test for `llmtools score`.

Every metric family keeps one row of sufficient statistics per record, and its corpus score is
a function of the column sums (see metrics.Family). A bootstrap resample is a vector of
per-record weights (how often each record was drawn), so a resampled score is
`finalize(weights @ rows)`: no record is scored twice, and corpus BLEU is resampled as corpus
BLEU, not as a mean of sentence scores.

The paired test is the one sacrebleu's `--paired-bs` runs (Koehn 2004, as in Moses'
bootstrap-hypothesis-difference-significance.pl): the same resamples for system and baseline,
test statistic |system - baseline|, centred sample differences, p = (c + 1) / (B + 1) where
c counts resamples whose centred difference is at least the observed one.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator, Sequence

Finalize = Callable[[Sequence[float]], dict]


def resample_weights(n: int, samples: int, seed: int, chunk: int = 64) -> Iterator["object"]:
    """Yield (chunk x n) count matrices; together they hold `samples` bootstrap resamples.

    Drawn from numpy's PCG64 seeded with `seed`, in a fixed order, so the same seed gives the
    same resamples for every metric and for system and baseline alike.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    done = 0
    while done < samples:
        c = min(chunk, samples - done)
        idx = rng.integers(0, n, size=(c, n))
        flat = (idx + (np.arange(c)[:, None] * n)).ravel()
        yield np.bincount(flat, minlength=c * n).reshape(c, n).astype(np.float64)
        done += c


def bootstrap_scores(
    families: Sequence[tuple[Sequence[Sequence[float]], Finalize]],
    n: int,
    samples: int,
    seed: int,
) -> list[dict[str, list[float]]]:
    """For each (rows, finalize) pair: {metric: [score of each resample, None where undefined]}."""
    import numpy as np

    mats = [np.asarray(rows, dtype=np.float64).reshape(n, -1) if n else None for rows, _ in families]
    out: list[dict[str, list[float]]] = [{} for _ in families]
    if n == 0 or samples <= 0:
        return out
    for weights in resample_weights(n, samples, seed):
        for f, ((_, finalize), mat) in enumerate(zip(families, mats)):
            sums = weights @ mat
            for row in sums:
                for key, value in finalize(row.tolist()).items():
                    ok = value is not None and math.isfinite(value)
                    out[f].setdefault(key, []).append(value if ok else None)
    return out


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default method) of already sorted values."""
    if not sorted_values:
        return math.nan
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def confidence_interval(values: Sequence[float], confidence: float) -> list[float] | None:
    """The percentile interval holding `confidence` of the resampled scores."""
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    alpha = (1.0 - confidence) / 2.0
    return [percentile(ordered, alpha), percentile(ordered, 1.0 - alpha)]


def paired_p_value(system: Sequence[float | None], baseline: Sequence[float | None], observed_diff: float) -> float | None:
    """sacrebleu's paired-bootstrap p-value from the same resamples of system and baseline."""
    diffs = [abs(s - b) for s, b in zip(system, baseline) if s is not None and b is not None]
    if not diffs:
        return None
    mean = sum(diffs) / len(diffs)
    # `>=` (sacrebleu has `>`): a system compared with itself must get p = 1, not 1 / (B + 1).
    c = sum(1 for d in diffs if d - mean >= abs(observed_diff))
    return (c + 1) / (len(diffs) + 1)
