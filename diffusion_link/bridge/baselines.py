"""The training-free bridges the gap table compares with (docs/method.md, section 3).

Diffusion Bridge (Lee et al., CVPR 2025) needs no code here: it is :class:`DiffusionLink` trained
with the text denoising loss only (``cross_weight: 0, topology_weight: 0``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Identity(nn.Module):
    """No bridge: the raw (normalised) audio embedding."""

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return F.normalize(audio.float(), dim=-1)


class MeanShift(nn.Module):
    """a - mean(audio) + mean(text), re-normalised (means of the training split)."""

    def __init__(self, mean_audio: torch.Tensor, mean_text: torch.Tensor):
        super().__init__()
        self.register_buffer("shift", (mean_text - mean_audio).float())

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.normalize(audio.float(), dim=-1) + self.shift, dim=-1)


class ProjectionDecoding(nn.Module):
    """DeCap / DRCap: softmax(cos(a, T) / tau) @ T over a support set T of training text embeddings."""

    def __init__(self, support: torch.Tensor, temperature: float = 0.01):
        super().__init__()
        if support.ndim != 2 or len(support) == 0:
            raise ValueError("projection decoding needs a non-empty (N, D) support set of text embeddings")
        self.register_buffer("support", F.normalize(support.float(), dim=-1))
        self.temperature = temperature

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(F.normalize(audio.float(), dim=-1) @ self.support.T / self.temperature, dim=-1)
        return F.normalize(weights @ self.support, dim=-1)
