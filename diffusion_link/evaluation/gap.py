"""Modality-gap metrics over clips, as a torchmetrics ``Metric`` (accumulates over batches, gathers
across processes), with bootstrap intervals over clips.

A clip brings one (raw or bridged) audio embedding x_i and its R_i reference text embeddings
c_i1..c_iR. Every metric L2-normalises its inputs. Which set each metric compares:

* **paired cosine** -- mean over every (clip, reference) pair of cos(x_i, c_ir);
* **centroid distance, cone, Fréchet, MMD², probe** -- the *distinct* clips' audio {x_i} against all
  reference texts {c_ir}: a clip's audio is never repeated once per reference (that repetition
  biases MMD², the cone and the Fréchet floor, and lets a probe see the same vector on both sides);
* MMD² leaves out same-clip pairs (x_i with its own c_ir, and c_ir with c_is), which are correlated
  by construction, so identical distributions give ~0 whatever the number of references;
* the **linear probe** is split by clip (a clip's audio and references fall on the same side) and
  scored by balanced accuracy (0.5 = indistinguishable), with classes weighted in training;
* **R@k** (audio -> text) ranks each clip's best own reference among all texts of the set.

Intervals: a percentile bootstrap over clips (``bootstrap`` resamples; clips, never pairs, are drawn).
Every metric is recomputed on each resample, except two that keep a fitted part fixed: the probe
(the interval covers its held-out clips for the fitted probe) and R@k (the gallery stays the full set).
Clips are put in a canonical order (sorted by content; exact duplicates, such as the repeats a
distributed sampler pads with, counted once), so the results do not depend on batching or processes.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchmetrics import Metric

#: the gap table's metrics, in column order
GAP_METRICS = ("paired_cosine", "centroid_distance", "cone_cosine", "probe_accuracy", "frechet", "mmd", "R@1", "R@5", "R@10")


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.double(), dim=-1)


@dataclass
class Clips:
    """Clips in canonical order: audio x (N, D), every reference c (M, D), the clip each reference belongs to."""

    x: torch.Tensor
    c: torch.Tensor
    owner: torch.Tensor

    @classmethod
    def from_padded(cls, x: torch.Tensor, refs: torch.Tensor, n_refs: torch.Tensor) -> "Clips":
        valid = torch.arange(refs.shape[1], device=refs.device)[None] < n_refs[:, None]
        return cls.from_flat(x, refs[valid], n_refs)

    @classmethod
    def from_flat(cls, x: torch.Tensor, c: torch.Tensor, n_refs: torch.Tensor) -> "Clips":
        x, c = _unit(x).cpu(), _unit(c).cpu()
        n_refs = n_refs.long().cpu()
        owner = torch.repeat_interleave(torch.arange(len(x)), n_refs)
        first = torch.cumsum(n_refs, 0) - n_refs
        # canonical order: by the audio vector, then its first reference; exact duplicates once
        keys = torch.cat([x, c[first]], dim=1).numpy()
        order = np.lexsort(keys.T[::-1])
        keep = [order[0]] + [j for i, j in zip(order[:-1], order[1:]) if not np.array_equal(keys[i], keys[j])]
        keep = torch.as_tensor(np.asarray(keep))
        rank = torch.full((len(x),), -1, dtype=torch.long)
        rank[keep] = torch.arange(len(keep))
        chosen = rank[owner] >= 0
        new_owner = rank[owner][chosen]
        ref_order = torch.argsort(new_owner, stable=True)
        return cls(x[keep], c[chosen][ref_order], new_owner[ref_order])

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def n_refs(self) -> torch.Tensor:
        return torch.bincount(self.owner, minlength=self.n).double()


@dataclass
class Estimate:
    value: float
    lo: float | None = None
    hi: float | None = None


def paired_cosine(s: Clips, w: torch.Tensor) -> torch.Tensor:
    per_clip = torch.zeros(s.n, dtype=torch.float64).index_add_(0, s.owner, (s.x[s.owner] * s.c).sum(-1))
    return (w @ per_clip) / (w @ s.n_refs)


def centroid_distance(s: Clips, w: torch.Tensor) -> torch.Tensor:
    wc = w[:, s.owner]
    return ((w @ s.x) / w.sum(1, keepdim=True) - (wc @ s.c) / wc.sum(1, keepdim=True)).norm(dim=-1)


def cone_cosine(s: Clips, w: torch.Tensor) -> torch.Tensor:
    """Mean cosine between the audio of distinct clips: (||sum x||^2 - n) / (n (n - 1)) (a resample's
    copies of one clip are the same clip, not a pair)."""
    total, n, ties = w @ s.x, w.sum(1), (w * w).sum(1)
    return ((total * total).sum(-1) - ties) / (n * n - ties)


def _factor(z: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted mean and a factor L of the weighted covariance S = L L^T (D x min(rows, D))."""
    keep = weights > 0
    z, weights = z[keep], weights[keep]
    n = weights.sum()
    mean = (weights @ z) / n
    rows = (z - mean) * (weights / (n - 1)).sqrt()[:, None]
    if len(rows) <= z.shape[1]:
        return mean, rows.T
    vals, vecs = torch.linalg.eigh(rows.T @ rows)
    return mean, vecs * vals.clamp(min=0).sqrt()


def frechet(s: Clips, w: torch.Tensor) -> torch.Tensor:
    """||mu_x - mu_c||^2 + Tr(S_x) + Tr(S_c) - 2 Tr((S_x S_c)^(1/2)), where Tr((S_x S_c)^(1/2)) is the
    nuclear norm of L_c^T L_x for any factors S = L L^T (exact, and cheap when clips < D)."""
    out = []
    for weights in w:
        mu_x, lx = _factor(s.x, weights)
        mu_c, lc = _factor(s.c, weights[s.owner])
        root = torch.linalg.svdvals(lc.T @ lx).sum()
        out.append((mu_x - mu_c).pow(2).sum() + lx.pow(2).sum() + lc.pow(2).sum() - 2 * root)
    return torch.stack(out)


class _MMD:
    """Unbiased RBF MMD² with same-clip pairs left out, for any clip weights (one kernel, many resamples).
    Bandwidth: the median heuristic on the pooled full sample unless ``sigma`` is given."""

    def __init__(self, s: Clips, sigma: float | None):
        pooled = torch.cat([s.x, s.c])
        d2 = torch.cdist(pooled, pooled).pow(2)
        sigma2 = sigma**2 if sigma else _median(d2[torch.triu_indices(len(pooled), len(pooled), 1).unbind()]) / 2
        k = torch.exp(-d2 / (2 * sigma2))
        n = s.n
        self.s, self.kxx, self.kcc, self.kxc = s, k[:n, :n], k[n:, n:], k[:n, n:]
        same = s.owner[:, None] == s.owner[None]
        self.cc_own = torch.zeros(n, dtype=torch.float64).index_add_(0, s.owner, (self.kcc * same).sum(1))
        self.xc_own = self.kxc[s.owner, torch.arange(len(s.owner))]
        self.xc_own = torch.zeros(n, dtype=torch.float64).index_add_(0, s.owner, self.xc_own)

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        """Averages over pairs from distinct clips (a resample's copies of one clip count as that clip)."""
        s, m = self.s, self.s.n_refs
        b, ww = w[:, s.owner], w * w
        n_x, n_c = w.sum(1), b.sum(1)
        xx = (((w @ self.kxx) * w).sum(1) - ww.sum(1)) / (n_x * n_x - ww.sum(1))  # K(x, x) = 1
        cc = (((b @ self.kcc) * b).sum(1) - ww @ self.cc_own) / (n_c * n_c - ww @ (m * m))
        xc = (((w @ self.kxc) * b).sum(1) - ww @ self.xc_own) / (n_x * n_c - ww @ m)
        return xx + cc - 2 * xc


def _median(values: torch.Tensor) -> torch.Tensor:
    """The usual median (mean of the two middle values); torch.median returns the lower one."""
    n = values.numel()
    low = torch.kthvalue(values, (n - 1) // 2 + 1).values
    return (low + torch.kthvalue(values, n // 2 + 1).values) / 2


class _Probe:
    """Logistic regression telling audio from text, trained on half the clips (a clip's audio and its
    references on the same side), scored by balanced accuracy on the other half."""

    def __init__(self, s: Clips, seed: int, max_iter: int = 1000):
        from sklearn.linear_model import LogisticRegression

        order = np.random.default_rng(seed).permutation(s.n)
        train = np.zeros(s.n, dtype=bool)
        train[order[::2]] = True
        x, c, owner = s.x.numpy(), s.c.numpy(), s.owner.numpy()
        features = np.concatenate([x[train], c[train[owner]]])
        labels = np.r_[np.zeros(train.sum()), np.ones(train[owner].sum())]
        probe = LogisticRegression(max_iter=max_iter, class_weight="balanced").fit(features, labels)
        self.test = torch.from_numpy(~train)
        self.x_right = torch.from_numpy(probe.predict(x) == 0).double()
        self.c_right = torch.zeros(s.n, dtype=torch.float64).index_add_(0, s.owner, torch.from_numpy(probe.predict(c) == 1).double())
        self.n_refs = s.n_refs

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        w = w * self.test
        return 0.5 * ((w @ self.x_right) / w.sum(1) + (w @ self.c_right) / (w @ self.n_refs))


def _a2t_hits(s: Clips, k: int) -> torch.Tensor:
    """Per clip: does its best own reference rank in the top k among every text of the set."""
    sims = s.x @ s.c.T
    own = s.owner[None] == torch.arange(s.n)[:, None]
    best_own = sims.masked_fill(~own, float("-inf")).max(dim=1).values
    return ((sims > best_own[:, None]).sum(dim=1) < k).double()


def bootstrap_weights(n: int, resamples: int, seed: int = 0) -> torch.Tensor:
    """(resamples, n) counts: how often each of n items is drawn in each resample (with replacement)."""
    if not resamples:
        return torch.zeros(0, n, dtype=torch.float64)
    draws = torch.from_numpy(np.random.default_rng(seed).integers(0, n, size=(resamples, n)))
    return torch.stack([torch.bincount(d, minlength=n) for d in draws]).double()


def mean_interval(values, resamples: int, seed: int = 0, confidence: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-item values (items resampled)."""
    v = torch.as_tensor(np.asarray(values, dtype=np.float64))
    w = bootstrap_weights(len(v), resamples, seed)
    tail = (1 - confidence) / 2
    lo, hi = np.quantile(((w @ v) / w.sum(1)).numpy(), [tail, 1 - tail])
    return float(lo), float(hi)


@contextmanager
def _flush_denormals():
    """LAPACK's eigen and singular-value solvers slow down ~50x on these covariances' denormal
    intermediates (7 s instead of 0.1 s for D = 512); flushing them changes nothing above 1e-308."""
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


def gap_statistics(
    s: Clips,
    bootstrap: int = 0,
    seed: int = 0,
    probe_seed: int = 0,
    mmd_sigma: float | None = None,
    confidence: float = 0.95,
    ks: tuple[int, ...] = (1, 5, 10),
    only: tuple[str, ...] | None = None,
) -> dict[str, Estimate]:
    """Every gap-table metric of a clip set (or ``only`` those named), with a percentile bootstrap
    interval over clips when ``bootstrap`` > 0 (the same resamples for every metric)."""
    if s.n < 2:
        raise ValueError(f"the gap metrics need at least 2 distinct clips, got {s.n}")
    ones = torch.ones(1, s.n, dtype=torch.float64)
    w = bootstrap_weights(s.n, bootstrap, seed)
    with _flush_denormals():
        return _statistics(s, w, ones, (1 - confidence) / 2, probe_seed, mmd_sigma, ks, only)


def _statistics(
    s: Clips, w: torch.Tensor, ones: torch.Tensor, tail: float, probe_seed: int, mmd_sigma: float | None, ks: tuple[int, ...], only: tuple[str, ...] | None
) -> dict[str, Estimate]:
    recall = lambda k: (lambda hits: lambda v: (v @ hits) / v.sum(1))(_a2t_hits(s, k))  # noqa: E731
    functions = {  # built on first use: the kernel and the probe are the costly parts
        "paired_cosine": lambda: lambda v: paired_cosine(s, v),
        "centroid_distance": lambda: lambda v: centroid_distance(s, v),
        "cone_cosine": lambda: lambda v: cone_cosine(s, v),
        "probe_accuracy": lambda: _Probe(s, probe_seed),
        "frechet": lambda: lambda v: frechet(s, v),
        "mmd": lambda: _MMD(s, mmd_sigma),
        **{f"R@{k}": (lambda k=k: recall(k)) for k in ks},
    }
    if unknown := set(only or ()) - set(functions):
        raise ValueError(f"unknown gap metrics {sorted(unknown)}; known: {sorted(functions)}")
    return {name: _estimate(make(), ones, w, tail) for name, make in functions.items() if only is None or name in only}


def _estimate(fn, ones: torch.Tensor, w: torch.Tensor, tail: float) -> Estimate:
    value = float(fn(ones)[0])
    if not len(w):
        return Estimate(value)
    replicates = fn(w).numpy()
    replicates = replicates[np.isfinite(replicates)]  # a tiny set's resample can hold one distinct clip: no pairs
    if not len(replicates):
        return Estimate(value, float("nan"), float("nan"))
    lo, hi = np.quantile(replicates, [tail, 1 - tail])
    return Estimate(value, float(lo), float(hi))


class GapMetrics(Metric):
    """Collects clips (audio or bridged audio, padded references, reference counts) and computes
    :func:`gap_statistics`. ``compute()`` returns each metric's value and, with ``bootstrap`` > 0,
    ``<name>_lo`` / ``<name>_hi``."""

    full_state_update = False

    def __init__(self, bootstrap: int = 0, seed: int = 0, probe_seed: int = 0, mmd_sigma: float | None = None, **kw):
        super().__init__(**kw)
        self.options = dict(bootstrap=bootstrap, seed=seed, probe_seed=probe_seed, mmd_sigma=mmd_sigma)
        self.add_state("xs", [], dist_reduce_fx="cat")
        self.add_state("cs", [], dist_reduce_fx="cat")
        self.add_state("n_refs", [], dist_reduce_fx="cat")

    def update(self, x: torch.Tensor, refs: torch.Tensor, n_refs: torch.Tensor) -> None:
        valid = torch.arange(refs.shape[1], device=refs.device)[None] < n_refs[:, None]
        self.xs.append(_unit(x))
        self.cs.append(_unit(refs[valid]))
        self.n_refs.append(n_refs.long())

    def clips(self) -> Clips:
        cat = lambda s: torch.cat(s) if isinstance(s, list) else s  # noqa: E731 (synced states are tensors)
        return Clips.from_flat(cat(self.xs), cat(self.cs), cat(self.n_refs))

    def compute(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, e in gap_statistics(self.clips(), **self.options).items():
            out[name] = torch.tensor(e.value, dtype=torch.float64)
            if e.lo is not None:
                out[f"{name}_lo"], out[f"{name}_hi"] = torch.tensor(e.lo, dtype=torch.float64), torch.tensor(e.hi, dtype=torch.float64)
        return out


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
