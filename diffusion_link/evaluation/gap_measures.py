"""The gap metrics' measures on clips in canonical order (:class:`Clips`), each a function of clip
weights (R resamples x N clips) -> (R,): the value is the all-ones weight, a bootstrap replicate a
resample's counts. What each one compares, and why, is in :mod:`diffusion_link.evaluation.gap`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.double(), dim=-1)


def text_ids(captions: list[list[str]]) -> torch.Tensor:
    """An int64 identity per caption (equal texts, after whitespace is normalised, get equal ids), flat."""
    digest = lambda t: int.from_bytes(hashlib.blake2b(" ".join(t.split()).encode(), digest_size=8).digest(), "little", signed=True)  # noqa: E731
    return torch.tensor([digest(t) for caps in captions for t in caps], dtype=torch.long)


@dataclass
class Clips:
    """Clips in canonical order: audio x (N, D), every reference c (M, D), the clip each reference belongs
    to, and, where given, each clip's key (N,) and each reference's text id (M,)."""

    x: torch.Tensor
    c: torch.Tensor
    owner: torch.Tensor
    key: torch.Tensor | None = None
    text_id: torch.Tensor | None = None

    @classmethod
    def from_padded(cls, x: torch.Tensor, refs: torch.Tensor, n_refs: torch.Tensor, key: torch.Tensor | None = None) -> "Clips":
        valid = torch.arange(refs.shape[1], device=refs.device)[None] < n_refs[:, None]
        return cls.from_flat(x, refs[valid], n_refs, key)

    @classmethod
    def from_flat(cls, x: torch.Tensor, c: torch.Tensor, n_refs: torch.Tensor, key: torch.Tensor | None = None, text_id: torch.Tensor | None = None) -> "Clips":
        x, c = _unit(x).cpu(), _unit(c).cpu()
        n_refs = n_refs.long().cpu()
        owner = torch.repeat_interleave(torch.arange(len(x)), n_refs)
        if key is not None:  # by key; a repeated key once
            key = key.long().cpu()
            order = np.argsort(key.numpy(), kind="stable")
            sorted_keys = key.numpy()[order]
            keep = order[np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]]
        else:  # by the audio vector, then its first reference; exact duplicates once
            first = torch.cumsum(n_refs, 0) - n_refs
            keys = torch.cat([x, c[first]], dim=1).numpy()
            order = np.lexsort(keys.T[::-1])
            keep = [order[0]] + [j for i, j in zip(order[:-1], order[1:]) if not np.array_equal(keys[i], keys[j])]
        keep = torch.as_tensor(np.asarray(keep), dtype=torch.long)
        rank = torch.full((len(x),), -1, dtype=torch.long)
        rank[keep] = torch.arange(len(keep))
        chosen = rank[owner] >= 0
        new_owner = rank[owner][chosen]
        ref_order = torch.argsort(new_owner, stable=True)
        ids = None if text_id is None else text_id.long().cpu()[chosen][ref_order]
        return cls(x[keep], c[chosen][ref_order], new_owner[ref_order], None if key is None else key[keep], ids)

    @property
    def n(self) -> int:
        return len(self.x)

    @property
    def n_refs(self) -> torch.Tensor:
        return torch.bincount(self.owner, minlength=self.n).double()


def paired_cosine(s: Clips, w: torch.Tensor) -> torch.Tensor:
    per_clip = torch.zeros(s.n, dtype=torch.float64).index_add_(0, s.owner, (s.x[s.owner] * s.c).sum(-1))
    return (w @ per_clip) / (w @ s.n_refs)


def centroid_sq(s: Clips, w: torch.Tensor) -> torch.Tensor:
    """Unbiased ‖μ_x − μ_c‖² over pairs from distinct clips (the linear-kernel MMD² with same-clip pairs
    left out; a resample's copies of one clip count as that clip). It can be negative."""
    summed = torch.zeros_like(s.x).index_add_(0, s.owner, s.c)  # each clip's references, summed
    m, ww = s.n_refs, w * w
    sx, sc = w @ s.x, w @ summed
    n_x, n_c = w.sum(1), w @ m
    xx = ((sx * sx).sum(-1) - ww @ (s.x * s.x).sum(-1)) / (n_x * n_x - ww.sum(1))
    cc = ((sc * sc).sum(-1) - ww @ (summed * summed).sum(-1)) / (n_c * n_c - ww @ (m * m))
    xc = ((sx * sc).sum(-1) - ww @ (s.x * summed).sum(-1)) / (n_x * n_c - ww @ m)
    return xx + cc - 2 * xc


def centroid_distance(s: Clips, w: torch.Tensor) -> torch.Tensor:
    return centroid_sq(s, w).clamp(min=0).sqrt()


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
    """Unbiased RBF MMD² with same-clip pairs left out, for any clip weights (one kernel, many resamples),
    with the bandwidth ``sigma`` (k(a, b) = exp(-‖a − b‖² / 2σ²))."""

    def __init__(self, s: Clips, sigma: float):
        pooled = torch.cat([s.x, s.c])
        k = torch.exp(-torch.cdist(pooled, pooled).pow(2) / (2 * sigma**2))
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


def _same_text(s: Clips) -> torch.Tensor:
    """(N, M): text j is one of clip i's references or identical to one (by text id, else by embedding)."""
    ids = s.text_id if s.text_id is not None else torch.unique(s.c, dim=0, return_inverse=True)[1]
    _, ids = torch.unique(ids, return_inverse=True)
    own = torch.zeros(s.n, int(ids.max()) + 1 if len(ids) else 0, dtype=torch.bool)
    own[s.owner, ids] = True
    return own[:, ids]


def _a2t_hits(s: Clips, k: int) -> torch.Tensor:
    """Per clip: does its best own reference rank in the top k among every text of the set (texts
    identical to one of its references count as its own, not as competitors)."""
    sims = s.x @ s.c.T
    own = _same_text(s)
    best_own = sims.masked_fill(~own, float("-inf")).max(dim=1).values
    return ((sims.masked_fill(own, float("-inf")) > best_own[:, None]).sum(dim=1) < k).double()
