"""Bootstrap intervals over clips: the resample weights, the basic (pivotal) interval and the paired
interval of a difference between two rows of one table.

Why the *basic* interval and not the percentile one. The percentile interval [q_lo, q_hi] of the
replicates assumes that they are centred on the estimate. A statistic that is biased upward at small N
(Fréchet distance above all: its matrix square root of two noisy covariances) is more biased still on a
resample, whose repeated clips make its covariances noisier, so the replicates sit *above* the estimate
and the percentile interval can miss the population value altogether (100 clips, D = 512, one
distribution: value 0.055, percentile interval [0.086, 0.112], population value ~0). The basic
interval uses the spread of θ* − θ̂ as the spread of θ̂ − θ, so it subtracts the bootstrap's estimate of
the bias as well: [2θ̂ − q_hi, 2θ̂ − q_lo] (the example: [−0.002, 0.024]). For an unbiased statistic
whose replicates are symmetric (a mean, MMD² with same-clip pairs left out) it is the percentile
interval. BCa was not chosen: with every replicate above the estimate its bias constant is infinite.
The tests measure coverage on synthetic repetitions for every metric (tests/test_gap_metrics.py).

Paired differences: two rows evaluated on the same clips, in the same order, get the same resample
weights, so the difference of their replicates is the replicate of their difference; its basic
interval is the paired interval (the clips' shared difficulty cancels, as it does not between two
separate intervals).
"""

from __future__ import annotations

import numpy as np
import torch


def bootstrap_weights(n: int, resamples: int, seed: int = 0) -> torch.Tensor:
    """(resamples, n) counts: how often each of n items is drawn in each resample (with replacement)."""
    if not resamples:
        return torch.zeros(0, n, dtype=torch.float64)
    draws = torch.from_numpy(np.random.default_rng(seed).integers(0, n, size=(resamples, n)))
    return torch.stack([torch.bincount(d, minlength=n) for d in draws]).double()


def mean_interval(values, resamples: int, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item values (items resampled). A resampled mean
    is unbiased and near-symmetric, so here the percentile and basic intervals agree."""
    v = torch.as_tensor(np.asarray(values, dtype=np.float64))
    w = bootstrap_weights(len(v), resamples, seed)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(((w @ v) / w.sum(1)).numpy(), [tail, 1 - tail])
    return float(lo), float(hi)


def basic_interval(value: float, replicates, confidence: float = 0.95) -> tuple[float, float]:
    """The basic bootstrap interval [2θ̂ − q_hi, 2θ̂ − q_lo] (q: quantiles of the finite replicates;
    NaN when none is finite, e.g. a tiny set whose resamples hold one distinct clip)."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if not len(r) or not np.isfinite(value):
        return float("nan"), float("nan")
    tail = (1 - confidence) / 2
    q_lo, q_hi = np.quantile(r, [tail, 1 - tail])
    return float(2 * value - q_hi), float(2 * value - q_lo)


def bias_corrected(value: float, replicates) -> float:
    """The bootstrap bias-corrected value 2θ̂ − mean(θ*) (the centre of the basic interval's logic)."""
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    return float(2 * value - r.mean()) if len(r) else float("nan")


def median_sigma(points: torch.Tensor, limit: int | None = 2000, seed: int = 0) -> float:
    """The median-heuristic RBF bandwidth of a set of (L2-normalised) embeddings: σ² = median(‖a − b‖²) / 2
    over pairs of distinct points (of a seeded sample of ``limit`` points when there are more; ``None``: all).
    Repeated points (template captions repeat word for word) count once: with more than half the pairs
    identical, the median would be 0."""
    z = torch.unique(torch.nn.functional.normalize(torch.as_tensor(points).double(), dim=-1), dim=0)
    if limit is not None and len(z) > limit:
        z = z[torch.from_numpy(np.sort(np.random.default_rng(seed).choice(len(z), limit, replace=False)))]
    if len(z) < 2:
        raise ValueError(f"the median heuristic needs at least 2 distinct points, got {len(z)}")
    d2 = torch.cdist(z, z).pow(2)
    values = d2[torch.triu_indices(len(z), len(z), 1).unbind()]
    n = values.numel()  # the usual median (mean of the two middle values)
    median = (torch.kthvalue(values, (n - 1) // 2 + 1).values + torch.kthvalue(values, n // 2 + 1).values) / 2
    return float((median / 2).sqrt())
