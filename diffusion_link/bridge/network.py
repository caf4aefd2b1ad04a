"""The denoiser: three residual MLP blocks with a timestep embedding (the paper's network)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of integer times (Vaswani et al.; as in DDPM)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.cos(), angles.sin()], dim=-1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


class ResidualBlock(nn.Module):
    """x + MLP(cond(LayerNorm(x), time)): LayerNorm -> Linear(W, H) -> SiLU -> Linear(H, W)."""

    def __init__(self, width: int, hidden: int, time_width: int, conditioning: Literal["add", "film"], dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conditioning = conditioning
        self.time = nn.Linear(time_width, width * (2 if conditioning == "film" else 1))
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.SiLU(), nn.Dropout(dropout), nn.Linear(hidden, width))

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        if self.conditioning == "film":
            scale, shift = self.time(temb).chunk(2, dim=-1)
            h = h * (1 + scale) + shift
        else:
            h = h + self.time(temb)
        return x + self.mlp(h)


class Denoiser(nn.Module):
    """Input projection, ``blocks`` residual MLP blocks, output projection.

    Args:
        dim: embedding dimension D.
        hidden: H, the blocks' hidden width (default 2048).
        blocks: number of residual blocks (the paper: 3).
        width: the blocks' residual width (default D).
        time_dim: sinusoidal embedding size.
        conditioning: how time enters each block: ``add`` or ``film``.
        condition_on_source: also feed the source (audio) embedding, concatenated to the input.
        dropout: inside the blocks' MLPs.
    """

    def __init__(
        self,
        dim: int,
        hidden: int = 2048,
        blocks: int = 3,
        width: int | None = None,
        time_dim: int = 256,
        conditioning: Literal["add", "film"] = "add",
        condition_on_source: bool = False,
        dropout: float = 0.0,
    ):
        super().__init__()
        if conditioning not in ("add", "film"):
            raise ValueError(f"conditioning must be 'add' or 'film', not {conditioning!r}")
        width = width or dim
        self.dim, self.time_dim, self.condition_on_source = dim, time_dim, condition_on_source
        self.input = nn.Linear(dim * (2 if condition_on_source else 1), width)
        self.time = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(ResidualBlock(width, hidden, width, conditioning, dropout) for _ in range(blocks))
        self.output = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, dim))

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, source: torch.Tensor | None = None) -> torch.Tensor:
        if self.condition_on_source:
            if source is None:
                raise ValueError("this denoiser is conditioned on the source embedding: pass source=")
            x_t = torch.cat([x_t, source], dim=-1)
        h = self.input(x_t)
        temb = self.time(timestep_embedding(t, self.time_dim))
        for block in self.blocks:
            h = block(h, temb)
        return self.output(h)

    def flops_per_item(self) -> int:
        """Multiply-adds x 2 of one forward pass per item (linear layers; what the roofline counts)."""
        return 2 * sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))
