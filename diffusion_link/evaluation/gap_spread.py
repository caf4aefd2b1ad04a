"""Sample spread: how many different text embeddings a bridge gives one clip, beside how different the
clip's own references are, and how well the bridge's samples cover those references (docs/method.md,
"Sample spread").

For clip i with n bridged samples s_1..s_n and m_i references r_1..r_m (all unit vectors):

* ``spread_samples`` = 1 − mean_{j≠k} cos(s_j, s_k), the mean pairwise cosine distance of the samples
  (0 for a deterministic bridge: every sample is the same point);
* ``spread_refs`` = 1 − mean_{j≠k} cos(r_j, r_k), the same for the references (clips with m_i ≥ 2);
* ``cover_n`` = mean_r max_j cos(r, s_j): each reference's best match among the n samples;
* ``cover_1`` = mean_j mean_r cos(r, s_j): the same for one sample, averaged over the n samples.

``cover_n`` ≥ ``cover_1`` always, with equality when the samples coincide; the gap ``cover_n − cover_1``
is what drawing several samples adds. Each is averaged over the clips.
"""

from __future__ import annotations

import csv
from pathlib import Path

import torch
import torch.nn.functional as F
from torchmetrics import Metric

KEYS = ("spread_samples", "spread_refs", "cover_1", "cover_n")


def clip_spread(samples: torch.Tensor, refs: torch.Tensor, n_refs: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per clip: ``samples`` (N, n, D) bridged samples, ``refs`` (N, M, D) references of which the first
    ``n_refs`` (N,) are valid. Returns (N,) tensors for :data:`KEYS`; ``spread_refs`` is NaN where a clip has
    fewer than two references."""
    if samples.ndim != 3 or refs.ndim != 3 or samples.shape[0] != refs.shape[0] or samples.shape[2] != refs.shape[2]:
        raise ValueError(f"expected samples (N, n, D) and refs (N, M, D) of the same N and D, got {tuple(samples.shape)} and {tuple(refs.shape)}")
    if (n_refs < 1).any():
        raise ValueError("every clip needs at least one reference (n_refs >= 1)")
    s, r = F.normalize(samples.double(), dim=-1), F.normalize(refs.double(), dim=-1)
    n, m = s.shape[1], r.shape[1]
    valid = torch.arange(m, device=r.device)[None] < n_refs[:, None]  # (N, M)
    off_n = ~torch.eye(n, dtype=torch.bool, device=s.device)
    spread_samples = 1 - (s @ s.transpose(1, 2))[:, off_n].mean(-1) if n > 1 else s.new_zeros(len(s))
    pairs = valid[:, :, None] & valid[:, None, :] & ~torch.eye(m, dtype=torch.bool, device=r.device)
    ref_cos = ((r @ r.transpose(1, 2)) * pairs).sum((1, 2)) / pairs.sum((1, 2))  # NaN (0/0) with one reference
    cos = r @ s.transpose(1, 2)  # (N, M, n)
    count = valid.sum(-1)
    return {  # a distance of equal points can round to -1e-16: clamped at 0
        "spread_samples": spread_samples.clamp(min=0),
        "spread_refs": (1 - ref_cos).clamp(min=0),
        "cover_1": (cos.mean(-1) * valid).sum(-1) / count,
        "cover_n": (cos.amax(-1) * valid).sum(-1) / count,
    }


class SampleSpread(Metric):
    """The means over clips of :func:`clip_spread` (sums and counts, so it synchronises across ranks)."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for key in KEYS:
            self.add_state(f"sum_{key}", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"n_{key}", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("samples", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="max")

    def update(self, samples: torch.Tensor, refs: torch.Tensor, n_refs: torch.Tensor) -> None:
        for key, values in clip_spread(samples, refs, n_refs).items():
            finite = values.isfinite()
            setattr(self, f"sum_{key}", getattr(self, f"sum_{key}") + values[finite].sum())
            setattr(self, f"n_{key}", getattr(self, f"n_{key}") + finite.sum())
        self.samples = torch.maximum(self.samples, torch.tensor(float(samples.shape[1]), dtype=torch.float64, device=self.samples.device))

    def compute(self) -> dict[str, float]:
        out = {key: float(getattr(self, f"sum_{key}") / getattr(self, f"n_{key}")) if getattr(self, f"n_{key}") > 0 else float("nan") for key in KEYS}
        return {**out, "samples": int(self.samples)}


def spread_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per method."""
    header = "| method | spread of samples | spread of references | cover, 1 sample | cover, n samples | gain |"
    rows = [
        f"| {name} | {v['spread_samples']:.4f} | {v['spread_refs']:.4f} | {v['cover_1']:.4f} | {v['cover_n']:.4f} | {v['cover_n'] - v['cover_1']:+.4f} |"
        for name, v in results.items()
    ]
    return "\n".join([header, "|---|---:|---:|---:|---:|---:|", *rows])


def spread_note(results: dict[str, dict[str, float]]) -> str:
    """The gap report's section on sample spread: what it is, then the table (a paragraph of its own)."""
    n = max((v["samples"] for v in results.values()), default=0)
    return (
        f"\nSample spread (n = {n} bridged samples per clip; docs/method.md, 'Sample spread'): spread = mean pairwise cosine "
        "distance, of a clip's samples and of its references; cover = mean over the clip's references of the best cosine to "
        "any of the n samples, and of one sample (averaged over the n); gain = the difference, what several samples add. "
        "A deterministic row has spread 0 and gain 0.\n\n" + spread_table(results)
    )


def write_spread_csv(results: dict[str, dict[str, float]], out_dir: str | Path) -> Path:
    path = Path(out_dir) / "sample_spread.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["method", "samples", *KEYS])
        for name, v in results.items():
            writer.writerow([name, v["samples"], *(f"{v[k]:.6g}" for k in KEYS)])
    return path
