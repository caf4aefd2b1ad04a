"""The bridge's losses: pure functions of tensors.

* denoising: noise the text embedding c to step t, predict it back (DDPM's loss);
* cross-sample prediction: noise the *paired audio* embedding a to step t with the same schedule,
  and predict the *text* embedding c of its pair;
* topology: within a batch, the pairwise cosine-similarity matrix of the predictions should equal
  that of the target texts, so the bridge keeps the text space's geometry.

The first two compare the network's output with :meth:`NoiseSchedule.target` (x0, eps or v).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prediction_loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per element (the denoising and the cross-sample loss)."""
    return F.mse_loss(output, target)


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x, dim=-1)
    return x @ x.T


def topology_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two batches' cosine-similarity matrices (0 iff equal structure)."""
    if predicted.shape[0] < 2:
        return predicted.new_zeros(())
    return (cosine_matrix(predicted) - cosine_matrix(target)).pow(2).mean()
