"""Modality-gap metrics as torchmetrics ``Metric``s: they accumulate over batches and synchronise
across processes. Inputs are paired embeddings x (audio, raw or bridged) and c (text), each row a
pair; every metric L2-normalises its inputs.

Metrics whose statistics are sums (paired cosine, centroid distance, cone, Frechet) keep sums;
those that need every sample (linear probe, MMD, retrieval) keep ``cat`` states.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric, MetricCollection


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.double(), dim=-1)


class PairedCosine(Metric):
    """mean_i cos(x_i, c_i) (similarity criterion)."""

    full_state_update = False

    def __init__(self, **kw):
        super().__init__(**kw)
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, c: torch.Tensor) -> None:
        self.total += (_unit(x) * _unit(c)).sum()
        self.count += len(x)

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class CentroidDistance(Metric):
    """||mean(x) - mean(c)||: the length of the gap vector ("Mind the Gap")."""

    full_state_update = False

    def __init__(self, dim: int, **kw):
        super().__init__(**kw)
        self.add_state("sum_x", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("sum_c", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, c: torch.Tensor) -> None:
        self.sum_x += _unit(x).sum(0)
        self.sum_c += _unit(c).sum(0)
        self.count += len(x)

    def compute(self) -> torch.Tensor:
        return ((self.sum_x - self.sum_c) / self.count).norm()


class ConeCosine(Metric):
    """Mean cosine between distinct x_i, x_j (the "cone"): (||sum x||^2 - n) / (n (n - 1)) for unit x."""

    full_state_update = False

    def __init__(self, dim: int, **kw):
        super().__init__(**kw)
        self.add_state("sum_x", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, c: torch.Tensor | None = None) -> None:
        self.sum_x += _unit(x).sum(0)
        self.count += len(x)

    def compute(self) -> torch.Tensor:
        n = self.count.double()
        return (self.sum_x.dot(self.sum_x) - n) / (n * (n - 1))


class FrechetDistance(Metric):
    """Frechet distance between Gaussian fits of x and c: ||mu_x - mu_c||^2 + Tr(S_x + S_c - 2 (S_x S_c)^(1/2))."""

    full_state_update = False

    def __init__(self, dim: int, **kw):
        super().__init__(**kw)
        for name in ("x", "c"):
            self.add_state(f"sum_{name}", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"outer_{name}", torch.zeros(dim, dim, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, x: torch.Tensor, c: torch.Tensor) -> None:
        x, c = _unit(x), _unit(c)
        self.sum_x += x.sum(0)
        self.sum_c += c.sum(0)
        self.outer_x += x.T @ x
        self.outer_c += c.T @ c
        self.count += len(x)

    def compute(self) -> torch.Tensor:
        n = self.count.double()
        mu_x, mu_c = self.sum_x / n, self.sum_c / n
        cov_x = (self.outer_x - n * torch.outer(mu_x, mu_x)) / (n - 1)
        cov_c = (self.outer_c - n * torch.outer(mu_c, mu_c)) / (n - 1)
        return frechet_from_moments(mu_x, cov_x, mu_c, cov_c)


def frechet_from_moments(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """Tr((S1 S2)^(1/2)) through the symmetric S1^(1/2) S2 S1^(1/2), whose eigenvalues are real."""
    vals, vecs = torch.linalg.eigh(cov1)
    root1 = (vecs * vals.clamp(min=0).sqrt()) @ vecs.T
    middle = root1 @ cov2 @ root1
    trace_root = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return (mu1 - mu2).pow(2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * trace_root


class _Samples(Metric):
    """Keeps every x and c (cat states, gathered across processes)."""

    full_state_update = False

    def __init__(self, **kw):
        super().__init__(**kw)
        self.add_state("xs", [], dist_reduce_fx="cat")
        self.add_state("cs", [], dist_reduce_fx="cat")

    def update(self, x: torch.Tensor, c: torch.Tensor) -> None:
        self.xs.append(_unit(x))
        self.cs.append(_unit(c))

    def _all(self) -> tuple[torch.Tensor, torch.Tensor]:
        cat = lambda s: torch.cat(s) if isinstance(s, list) else s  # noqa: E731 (synced states are tensors)
        return cat(self.xs), cat(self.cs)


class LinearProbeSeparability(_Samples):
    """Held-out accuracy of a logistic-regression probe telling x from c (0.5 = indistinguishable).

    Pairs are split deterministically: even positions (in a fixed random order) train, odd test; a
    pair's x and c fall on the same side, so the probe cannot memorise a pair. Pairs are put in a
    canonical order first (sorted by content), so the split does not depend on how batches or
    processes delivered them.
    """

    def __init__(self, seed: int = 0, max_iter: int = 1000, **kw):
        super().__init__(**kw)
        self.seed, self.max_iter = seed, max_iter

    def compute(self) -> torch.Tensor:
        from sklearn.linear_model import LogisticRegression

        x, c = (t.cpu().numpy() for t in self._all())
        canonical = np.lexsort(np.concatenate([x, c], axis=1).T[::-1])
        x, c = x[canonical], c[canonical]
        order = np.random.default_rng(self.seed).permutation(len(x))
        train, test = order[::2], order[1::2]
        features = lambda idx: np.concatenate([x[idx], c[idx]])  # noqa: E731
        labels = lambda idx: np.concatenate([np.zeros(len(idx)), np.ones(len(idx))])  # noqa: E731
        probe = LogisticRegression(max_iter=self.max_iter).fit(features(train), labels(train))
        return torch.tensor(probe.score(features(test), labels(test)), dtype=torch.float64)


class RBFMMD(_Samples):
    """Unbiased MMD^2 between x and c with an RBF kernel; bandwidth by the median heuristic on the
    pooled samples unless ``sigma`` is given."""

    def __init__(self, sigma: float | None = None, **kw):
        super().__init__(**kw)
        self.sigma = sigma

    def compute(self) -> torch.Tensor:
        x, c = (t.double() for t in self._all())
        pooled = torch.cat([x, c])
        d2 = torch.cdist(pooled, pooled).pow(2)
        sigma2 = self.sigma**2 if self.sigma else _median(d2[torch.triu_indices(len(pooled), len(pooled), 1).unbind()]) / 2
        k = torch.exp(-d2 / (2 * sigma2))
        n, m = len(x), len(c)
        kxx, kcc, kxc = k[:n, :n], k[n:, n:], k[:n, n:]
        return (kxx.sum() - kxx.trace()) / (n * (n - 1)) + (kcc.sum() - kcc.trace()) / (m * (m - 1)) - 2 * kxc.mean()


def _median(values: torch.Tensor) -> torch.Tensor:
    """The usual median (mean of the two middle values); torch.median returns the lower one."""
    n = values.numel()
    low = torch.kthvalue(values, (n - 1) // 2 + 1).values
    return (low + torch.kthvalue(values, n // 2 + 1).values) / 2


class RetrievalRecall(Metric):
    """x -> c recall@k against all texts: a query hits if any of its own references ranks in the
    top k among every text of the set. References come padded: (B, R, D) with counts ``n_refs``."""

    full_state_update = False

    def __init__(self, ks: tuple[int, ...] = (1, 5, 10), **kw):
        super().__init__(**kw)
        self.ks = ks
        self.add_state("xs", [], dist_reduce_fx="cat")
        self.add_state("refs", [], dist_reduce_fx="cat")
        self.add_state("n_refs", [], dist_reduce_fx="cat")

    def update(self, x: torch.Tensor, refs: torch.Tensor, n_refs: torch.Tensor) -> None:
        self.xs.append(_unit(x).float())
        self.refs.append(_unit(refs).float())
        self.n_refs.append(n_refs.long())

    def _flat(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries x (N, D), every valid reference (M, D) and the clip each reference belongs to (M,)."""
        cat = lambda s: torch.cat(s) if isinstance(s, list) else s  # noqa: E731
        x, refs, n_refs = cat(self.xs), cat(self.refs), cat(self.n_refs)
        r = refs.shape[1]
        valid = torch.arange(r, device=x.device)[None] < n_refs[:, None]  # (N, R)
        owner = torch.arange(len(x), device=x.device)[:, None].expand(-1, r)[valid]
        return x, refs[valid], owner

    def compute(self) -> dict[str, torch.Tensor]:
        x, texts, owner = self._flat()
        sims = x @ texts.T  # (N, M)
        own = owner[None] == torch.arange(len(x), device=x.device)[:, None]
        best_own = sims.masked_fill(~own, float("-inf")).max(dim=1).values
        rank = (sims > best_own[:, None]).sum(dim=1)  # texts strictly better than the best own reference
        return {f"R@{k}": (rank < k).double().mean() for k in self.ks}


class TextToAudioRecall(RetrievalRecall):
    """c -> x recall@k: each reference (every caption of every clip) queries all clips; it hits when
    its own clip ranks in the top k. Same inputs as :class:`RetrievalRecall`."""

    def compute(self) -> dict[str, torch.Tensor]:
        x, texts, owner = self._flat()
        sims = texts @ x.T  # (M, N)
        own = sims.gather(1, owner[:, None])
        rank = (sims > own).sum(dim=1)
        return {f"R@{k}": (rank < k).double().mean() for k in self.ks}


def gap_metrics(dim: int, probe_seed: int = 0, mmd_sigma: float | None = None) -> MetricCollection:
    """Every pair metric of the gap table; retrieval is separate (it takes all references)."""
    return MetricCollection(
        {
            "paired_cosine": PairedCosine(),
            "centroid_distance": CentroidDistance(dim),
            "cone_cosine": ConeCosine(dim),
            "probe_accuracy": LinearProbeSeparability(seed=probe_seed),
            "frechet": FrechetDistance(dim),
            "mmd": RBFMMD(sigma=mmd_sigma),
        },
        compute_groups=False,
    )
