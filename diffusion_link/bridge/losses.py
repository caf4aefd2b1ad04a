"""The bridge's losses: pure functions of tensors.

* denoising: noise the text embedding c to step t, predict it back (DDPM's loss);
* cross-sample prediction: noise the *paired audio* embedding a to step t with the same schedule,
  and predict the *text* embedding c of its pair;
* topology: within a batch, the pairwise cosine-similarity matrix of the predictions should equal
  that of the target texts, so the bridge keeps the text space's geometry.

The denoising loss compares the network's output with :meth:`NoiseSchedule.target` (x0, eps or v).
The cross-sample and topology losses compare the *predicted x0* with the paired text for every
parameterisation: an eps or v target for another sample's x0 carries 1/sqrt(1 - alpha_bar_t) and
grows ~150x near t = 1, so small t would dominate them; in x0 space a fixed error costs the same at
every t.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def prediction_loss(output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error per element (the denoising and the cross-sample loss); with ``weight`` (one
    per item), each item's mean error is weighted first."""
    if weight is None:
        return F.mse_loss(output, target)
    return ((output - target).pow(2).mean(-1) * weight).mean()


def eps_equivalent_weight(snr: torch.Tensor, parameterisation: str) -> torch.Tensor:
    """Per-item weights that make each parameterisation's MSE equal the eps-prediction MSE (as in
    lucidrains' denoising-diffusion-pytorch, which Diffusion Bridge trains with): SNR for x0,
    SNR / (SNR + 1) for v, 1 for eps."""
    return {"x0": snr, "v": snr / (snr + 1), "eps": torch.ones_like(snr)}[parameterisation]


def cross_sample_loss(schedule, x_t: torch.Tensor, output: torch.Tensor, text: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The cross-sample prediction loss in x0 space (whatever the network predicts), and that
    predicted x0, which the topology loss also uses."""
    x0_hat = schedule.to_x0_eps(x_t, output, t)[0]
    return prediction_loss(x0_hat, text), x0_hat


def cosine_matrix(x: torch.Tensor) -> torch.Tensor:
    x = F.normalize(x, dim=-1)
    return x @ x.T


def topology_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of the two batches' cosine-similarity matrices over distinct pairs
    (the diagonal is 1 in both and would only dilute the loss); 0 iff equal structure."""
    n = predicted.shape[0]
    if n < 2:
        return predicted.new_zeros(())
    off = ~torch.eye(n, dtype=torch.bool, device=predicted.device)
    return (cosine_matrix(predicted) - cosine_matrix(target))[off].pow(2).mean()
