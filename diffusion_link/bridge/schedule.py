"""Noise schedules and samplers: pure tensor math, no Lightning, no I/O.

Conventions: integer time t in 0..T, where t = 0 is clean data (alpha_bar[0] = 1) and
x_t = sqrt(alpha_bar[t]) x0 + sqrt(1 - alpha_bar[t]) eps. Training draws t from 1..T.
The network's output is one of three parameterisations, converted here:

* ``x0``:  the clean sample itself;
* ``eps``: the noise;
* ``v``:   sqrt(ab) eps - sqrt(1 - ab) x0  (Salimans & Ho, 2022).
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import torch

Parameterisation = Literal["x0", "eps", "v"]
ScheduleKind = Literal["cosine", "linear"]


def alpha_bar_cosine(T: int, s: float = 0.008) -> torch.Tensor:
    """Nichol & Dhariwal's cosine schedule, alpha_bar[0..T] with alpha_bar[0] = 1."""
    t = torch.arange(T + 1, dtype=torch.float64) / T
    f = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
    ab = f / f[0]
    # betas clipped at 0.999 as in the paper that introduced it
    betas = (1 - ab[1:] / ab[:-1]).clamp(max=0.999)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


def alpha_bar_linear(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al.'s linear beta schedule (betas scaled to T steps), alpha_bar[0..T]."""
    scale = 1000 / T
    betas = torch.linspace(beta_start * scale, beta_end * scale, T, dtype=torch.float64)
    return torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])


class NoiseSchedule(torch.nn.Module):
    """alpha_bar as a buffer (moves with the model), plus the closed forms built on it."""

    def __init__(self, T: int = 1000, kind: ScheduleKind = "cosine", parameterisation: Parameterisation = "x0"):
        super().__init__()
        if kind not in ("cosine", "linear"):
            raise ValueError(f"schedule must be 'cosine' or 'linear', not {kind!r}")
        if parameterisation not in ("x0", "eps", "v"):
            raise ValueError(f"parameterisation must be 'x0', 'eps' or 'v', not {parameterisation!r}")
        self.T, self.kind, self.parameterisation = T, kind, parameterisation
        ab = alpha_bar_cosine(T) if kind == "cosine" else alpha_bar_linear(T)
        self.register_buffer("alpha_bar", ab, persistent=False)  # float64: tiny values near t = T

    def _coef(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ab = self.alpha_bar[t].view(-1, *([1] * (like.dim() - 1)))
        return ab.sqrt().to(like.dtype), (1 - ab).sqrt().to(like.dtype)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t given x0 (closed form of the forward process)."""
        a, s = self._coef(t, x0)
        return a * x0 + s * noise

    def target(self, x_t: torch.Tensor, x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the network should output at x_t if the clean sample is x0 (any x0, not only the
        one that made x_t: the cross-sample loss asks for the paired text)."""
        if self.parameterisation == "x0":
            return x0
        a, s = self._coef(t, x0)
        eps = (x_t - a * x0) / s
        return eps if self.parameterisation == "eps" else a * eps - s * x0

    def to_x0_eps(self, x_t: torch.Tensor, out: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The network output converted to (x0_hat, eps_hat), in float64 inside: near t = T the
        eps form divides by sqrt(alpha_bar) ~ 1e-3, which float32 rounding would not survive."""
        dtype = x_t.dtype
        x_t, out = x_t.double(), out.double()
        a, s = self._coef(t, x_t)
        if self.parameterisation == "x0":
            x0 = out
        elif self.parameterisation == "eps":
            x0 = (x_t - s * out) / a
        else:
            x0 = a * x_t - s * out
        eps = (x_t - a * x0) / s.clamp(min=1e-8)
        return x0.to(dtype), eps.to(dtype)

    def snr(self, signal_power: float = 1.0) -> torch.Tensor:
        """Per-component signal-to-noise ratio at t = 0..T of data whose components have mean power
        ``signal_power``: alpha_bar_t * signal_power / (1 - alpha_bar_t)."""
        return self.alpha_bar * signal_power / (1 - self.alpha_bar)

    def t_for_snr(self, snr: float, signal_power: float = 1.0) -> int:
        """The t in 1..T whose SNR is closest to ``snr`` (on a log scale)."""
        if not snr > 0:
            raise ValueError(f"entry_snr must be positive, got {snr}")
        return int(torch.argmin((self.snr(signal_power)[1:].log() - math.log(snr)).abs())) + 1

    def ddim_timesteps(self, t_start: int, steps: int) -> list[int]:
        """``steps + 1`` integer times from ``t_start`` down to 0 (clean), evenly spaced."""
        if not 0 < t_start <= self.T:
            raise ValueError(f"t_start must be in 1..{self.T}, got {t_start}")
        if not 0 < steps <= t_start:
            raise ValueError(f"steps must be in 1..t_start ({t_start}), got {steps}")
        grid = torch.linspace(t_start, 0, steps + 1).round().long().tolist()
        return grid

    def ddim_step(self, x0: torch.Tensor, eps: torch.Tensor, t_prev: int) -> torch.Tensor:
        """Deterministic DDIM (eta = 0) to ``t_prev``; at t_prev = 0 this is x0 itself."""
        t = torch.full((x0.shape[0],), t_prev, device=x0.device, dtype=torch.long)
        a, s = self._coef(t, x0)
        return a * x0 + s * eps

    def ddpm_step(self, x_t: torch.Tensor, x0: torch.Tensor, t: int, noise: torch.Tensor) -> torch.Tensor:
        """Ancestral step t -> t-1 from the posterior q(x_{t-1} | x_t, x0)."""
        ab_t, ab_prev = self.alpha_bar[t], self.alpha_bar[t - 1]
        beta = 1 - ab_t / ab_prev
        mean = (ab_prev.sqrt() * beta / (1 - ab_t)) * x0 + ((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab_t)) * x_t
        if t == 1:
            return mean
        var = beta * (1 - ab_prev) / (1 - ab_t)
        return mean + var.sqrt() * noise


Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def sample(
    schedule: NoiseSchedule,
    denoise: Denoise,
    x_start: torch.Tensor,
    t_start: int,
    steps: int = 5,
    sampler: Literal["ddim", "ddpm"] = "ddim",
    noise_start: bool = False,
    generator: torch.Generator | Sequence[torch.Generator] | None = None,
    project: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run the reverse chain from ``x_start`` treated as x_{t_start}, the whole batch at once.

    ``denoise(x_t, t)`` returns the network's output. ``noise_start`` forward-noises ``x_start``
    to t_start first. ``ddim`` takes ``steps`` deterministic steps; ``ddpm`` takes every step from
    t_start to 0 (``steps`` is ignored). ``project`` maps the chain's point before every step (Diffusion
    Bridge's return to the sphere); x0 and eps are then derived from the projected point. ``generator``:
    one for the batch, or a sequence of one per row (each row's noise then drawn from its own).
    """

    def randn_like(x):
        if isinstance(generator, Sequence):  # one generator per row: a row's noise is its generator's alone
            if len(generator) != len(x):
                raise ValueError(f"one generator per row: {len(generator)} generators for {len(x)} rows")
            return torch.stack([torch.randn(x.shape[1:], generator=g, device=x.device, dtype=x.dtype) for g in generator])
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    x = x_start
    if noise_start:
        t = torch.full((x.shape[0],), t_start, device=x.device, dtype=torch.long)
        x = schedule.q_sample(x, t, randn_like(x))
    if sampler == "ddim":
        grid = schedule.ddim_timesteps(t_start, steps)
        for t_now, t_prev in zip(grid[:-1], grid[1:]):
            t = torch.full((x.shape[0],), t_now, device=x.device, dtype=torch.long)
            x = project(x) if project else x
            x0, eps = schedule.to_x0_eps(x, denoise(x, t), t)
            x = schedule.ddim_step(x0, eps, t_prev)
        return x
    if sampler == "ddpm":
        for t_now in range(t_start, 0, -1):
            t = torch.full((x.shape[0],), t_now, device=x.device, dtype=torch.long)
            x = project(x) if project else x
            x0, _ = schedule.to_x0_eps(x, denoise(x, t), t)
            x = schedule.ddpm_step(x, x0, t_now, randn_like(x))
        return x
    raise ValueError(f"sampler must be 'ddim' or 'ddpm', not {sampler!r}")
