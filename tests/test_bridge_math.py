"""The bridge's math, exactly: schedules, forward noising, the sampler, losses, preprocessing."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffusion_link.bridge.losses import topology_loss
from diffusion_link.bridge.model import BridgeConfig, DiffusionLink, Preprocessor
from diffusion_link.bridge.network import Denoiser
from diffusion_link.bridge.schedule import NoiseSchedule, alpha_bar_cosine, alpha_bar_linear, sample


def test_cosine_schedule_closed_form():
    T, s = 1000, 0.008
    ab = alpha_bar_cosine(T, s)
    assert ab[0] == 1 and len(ab) == T + 1
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 250, 500, 750, 990):
        assert ab[t].item() == pytest.approx(f(t) / f(0), rel=1e-9)
    assert (ab[1:] < ab[:-1]).all() and ab[-1] < 1e-4


def test_linear_schedule_closed_form():
    ab = alpha_bar_linear(1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    assert torch.allclose(ab[1:], torch.cumprod(1 - betas, 0))


@pytest.mark.parametrize("kind", ["cosine", "linear"])
def test_forward_noising_statistics(kind):
    sched = NoiseSchedule(1000, kind)
    g = torch.Generator().manual_seed(0)
    x0 = torch.full((200_000, 1), 2.0)
    for t_int in (1, 300, 600, 999):
        t = torch.full((len(x0),), t_int)
        xt = sched.q_sample(x0, t, torch.randn(x0.shape, generator=g))
        ab = sched.alpha_bar[t_int].item()
        assert xt.mean().item() == pytest.approx(2.0 * math.sqrt(ab), abs=0.01)
        assert xt.var().item() == pytest.approx(1 - ab, abs=0.01 + 0.01 * (1 - ab))


@pytest.mark.parametrize("param", ["x0", "eps", "v"])
def test_target_and_conversion_are_inverse(param):
    sched = NoiseSchedule(1000, "cosine", param)
    x0, eps = torch.randn(64, 8), torch.randn(64, 8)
    t = torch.randint(1, 1000, (64,))
    xt = sched.q_sample(x0, t, eps)
    x0_hat, eps_hat = sched.to_x0_eps(xt, sched.target(xt, x0, t), t)
    assert torch.allclose(x0_hat, x0, atol=1e-3) and torch.allclose(eps_hat, eps, atol=1e-3)


@pytest.mark.parametrize("param", ["x0", "eps", "v"])
@pytest.mark.parametrize("t_start, steps", [(600, 5), (1000, 1), (37, 37), (999, 10), (1, 1)])
def test_ddim_with_oracle_denoiser_lands_on_x0(param, t_start, steps):
    sched = NoiseSchedule(1000, "cosine", param)
    x0 = torch.randn(32, 16)
    start = torch.randn(32, 16)  # anywhere: the oracle knows x0
    # an exact oracle (float64): in float32, eps at t = T is ill-conditioned by 1/sqrt(alpha_bar_T) ~ 1e4
    oracle = lambda x, t: sched.target(x.double(), x0.double(), t)  # noqa: E731
    out = sample(sched, oracle, start, t_start, steps)
    tol = 1e-6 if param == "x0" else 1e-3
    assert torch.allclose(out, x0, atol=tol)


def test_ddpm_with_oracle_lands_on_x0():
    sched = NoiseSchedule(100, "cosine", "x0")
    x0 = torch.randn(8, 4)
    out = sample(sched, lambda x, t: x0, torch.randn(8, 4), 60, sampler="ddpm", generator=torch.Generator().manual_seed(0))
    assert torch.allclose(out, x0, atol=1e-5)


def test_ddim_grid():
    sched = NoiseSchedule(1000)
    assert sched.ddim_timesteps(600, 5) == [600, 480, 360, 240, 120, 0]
    with pytest.raises(ValueError):
        sched.ddim_timesteps(0, 5)
    with pytest.raises(ValueError):
        sched.ddim_timesteps(3, 5)


def test_topology_loss_zero_iff_same_structure():
    c = torch.randn(16, 32)
    rotation = torch.linalg.qr(torch.randn(32, 32))[0]
    assert topology_loss(c @ rotation * 3.0, c).item() == pytest.approx(0.0, abs=1e-10)  # rotated, rescaled: same cosines
    assert topology_loss(torch.randn(16, 32), c).item() > 0.01
    assert topology_loss(c[:1], c[:1]).item() == 0.0


@pytest.mark.parametrize("center", [False, True])
def test_preprocessing_inverse_is_identity(center):
    dim = 64
    pre = Preprocessor(dim, center=center, scale=True)
    text, audio = F.normalize(torch.randn(500, dim) + 2, dim=-1), F.normalize(torch.randn(500, dim) - 1, dim=-1)
    pre.set_means(audio.mean(0), text.mean(0))
    y = pre(text, "text")
    assert y.norm(dim=-1).mean().item() == pytest.approx(math.sqrt(dim), rel=1e-5)
    assert torch.allclose(pre.inverse(y), text, atol=1e-5)


def test_denoiser_shape_blocks_and_conditioning():
    net = Denoiser(32, hidden=64, blocks=3, conditioning="film", condition_on_source=True)
    assert len(net.blocks) == 3
    out = net(torch.randn(5, 32), torch.randint(1, 1000, (5,)), torch.randn(5, 32))
    assert out.shape == (5, 32)
    with pytest.raises(ValueError, match="source"):
        net(torch.randn(5, 32), torch.randint(1, 1000, (5,)))


def test_bridge_is_batched_and_deterministic():
    model = DiffusionLink(BridgeConfig(dim=16, hidden=32))
    audio = F.normalize(torch.randn(10, 16), dim=-1)
    out = model.bridge(audio)
    assert out.shape == (10, 16) and torch.allclose(out.norm(dim=-1), torch.ones(10))
    assert torch.equal(out, model.bridge(audio))
    assert torch.allclose(model.bridge(audio[:3]), out[:3], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        model.bridge(torch.randn(3, 8))
