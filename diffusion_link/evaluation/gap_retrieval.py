"""Retrieval recall@k between audio and the reference texts as torchmetrics ``Metric`` s (the encoder's
two directions; the gap table's audio -> text R@k is computed with the other gap metrics in
:mod:`diffusion_link.evaluation.gap`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric


def _unit(x: torch.Tensor) -> torch.Tensor:
    return F.normalize(x.double(), dim=-1)


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
