"""The optimiser the trainable stages use: AdamW with a linear warm-up, stepped per batch, and an
optional cosine decay to zero over the run."""

from __future__ import annotations

import math

import torch


def adamw_with_warmup(params, lr: float, weight_decay: float, warmup_steps: int, total_steps: int | None = None) -> dict:
    """What ``configure_optimizers`` returns: AdamW over ``params``, a per-step linear warm-up and,
    when ``total_steps`` is given, a cosine decay from the end of the warm-up to ``total_steps``."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, warmup_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if not total_steps or total_steps <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total_steps - warmup))
        return 0.5 * (1 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
