"""The optimiser both trainable stages use: AdamW with a linear warm-up, stepped per batch."""

from __future__ import annotations

import torch


def adamw_with_warmup(params, lr: float, weight_decay: float, warmup_steps: int) -> dict:
    """What ``configure_optimizers`` returns: AdamW over ``params`` and a per-step linear warm-up."""
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warmup = max(1, warmup_steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
