"""The bridge's math, exactly: schedules, forward noising, the sampler, losses, preprocessing."""

import math

import pytest
import torch
import torch.nn.functional as F

from diffusion_link.bridge.losses import cross_sample_loss, eps_equivalent_weight, prediction_loss, topology_loss
from diffusion_link.bridge.module import BridgeModule
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


@pytest.mark.parametrize("sampler, noise_start", [("ddpm", False), ("ddim", True)])
def test_one_generator_per_row_draws_each_rows_noise_from_its_own(sampler, noise_start):
    """The keyed bridge's per-row generators: a row's noise is what its generator alone gives it (as in a
    batch of that row alone), whatever rows are beside it; a list of the wrong length is refused."""
    schedule = NoiseSchedule(50, "cosine", "x0")
    denoise = lambda x, t: 0.5 * x  # noqa: E731  (row-wise: a row's output depends on that row only)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    run = lambda rows, seeds: sample(schedule, denoise, x[rows], 20, 4, sampler, noise_start, [torch.Generator().manual_seed(s) for s in seeds])  # noqa: E731
    batch = run([0, 1, 2, 3, 4], [10, 11, 12, 13, 14])
    for i in range(5):
        alone = sample(schedule, denoise, x[i : i + 1], 20, 4, sampler, noise_start, torch.Generator().manual_seed(10 + i))
        assert torch.allclose(batch[i : i + 1], alone, atol=1e-6)
    assert torch.allclose(run([4, 0], [14, 10]), batch[[4, 0]], atol=1e-6)
    assert not torch.allclose(run([0], [99]), batch[:1])  # another generator, another sample
    with pytest.raises(ValueError, match="one generator per row"):
        run([0, 1], [10])


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


def test_topology_loss_counts_distinct_pairs_only():
    g = torch.Generator().manual_seed(0)
    a, b = F.normalize(torch.randn(2, 8, generator=g), dim=-1), F.normalize(torch.randn(2, 8, generator=g), dim=-1)
    # two items: one distinct pair (twice, symmetric); the diagonal (1 = 1) would halve the value
    assert topology_loss(a, b).item() == pytest.approx(((a[0] @ a[1]) - (b[0] @ b[1])).pow(2).item(), rel=1e-4)


@pytest.mark.parametrize("param", ["x0", "eps", "v"])
def test_cross_sample_loss_has_the_same_scale_at_every_t(param):
    """A prediction whose x0 misses the paired text by a fixed error costs that error at every t; in the
    parameterisation's own target space (the old loss) it cost up to ~1e4 x more near t = 1 for eps / v."""
    schedule = NoiseSchedule(1000, "cosine", param)
    g = torch.Generator().manual_seed(0)
    audio, text = torch.randn(64, 32, generator=g), torch.randn(64, 32, generator=g)
    error = 0.3 * torch.randn(64, 32, generator=g)
    ours, old = [], []
    for step in (1, 10, 100, 500, 900, 1000):
        t = torch.full((64,), step)
        x_t = schedule.q_sample(audio, t, torch.randn(64, 32, generator=g))
        output = schedule.target(x_t, text + error, t)  # the network's output for that x0 estimate
        ours.append(cross_sample_loss(schedule, x_t, output, text, t)[0].item())
        old.append(prediction_loss(output, schedule.target(x_t, text, t)).item())
    assert max(ours) / min(ours) < 10
    if param != "x0":
        assert max(old) / min(old) > 100


def test_eps_equivalent_weighting_equals_the_eps_loss():
    schedule_x0, schedule_eps = NoiseSchedule(1000, "cosine", "x0"), NoiseSchedule(1000, "cosine", "eps")
    g = torch.Generator().manual_seed(1)
    x0, noise, guess = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    t = torch.tensor([1, 50, 200, 400, 600, 800, 950, 999])
    x_t = schedule_x0.q_sample(x0, t, noise)
    weighted = prediction_loss(guess, x0, eps_equivalent_weight(schedule_x0.snr()[t].float(), "x0"))
    eps_form = prediction_loss(schedule_eps.target(x_t, guess, t), noise)  # the same guess as an eps prediction
    assert weighted.item() == pytest.approx(eps_form.item(), rel=1e-3)


def test_entry_snr_means_the_same_under_any_scale():
    """t* = 600 at norm 5 (Diffusion Bridge, D = 512) is SNR ~0.026 per component; at sqrt(D) the same SNR lies near t = 900."""
    schedule = NoiseSchedule(1000, "cosine")
    snr = schedule.snr(25 / 512)[600].item()
    assert 0.02 < snr < 0.03
    assert schedule.t_for_snr(snr, 25 / 512) == 600
    assert 880 <= schedule.t_for_snr(snr, 1.0) <= 920
    bridge = DiffusionLink(BridgeConfig(dim=512, hidden=16, entry_snr=snr))
    assert 880 <= bridge.config.t_start <= 920
    with pytest.raises(ValueError, match="entry_snr must be positive"):
        schedule.t_for_snr(0.0)


def test_sphere_input_projects_before_every_step():
    seen = []

    def denoise(x, t):
        seen.append(x.norm(dim=-1))
        return torch.zeros_like(x)

    sample(NoiseSchedule(100, "cosine", "x0"), denoise, 7 * torch.randn(4, 8), 60, 3, project=lambda x: 5 * F.normalize(x, dim=-1))
    assert len(seen) == 3 and all(torch.allclose(n, torch.full((4,), 5.0)) for n in seen)


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"t_start": 1200}, "t_start"),
        ({"steps": 700}, "steps"),
        ({"entry_snr": -1.0}, "entry_snr"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"blocks": 0}, "blocks"),
    ],
)
def test_impossible_bridge_settings_fail_when_the_config_is_built(bad, message):
    with pytest.raises(ValueError, match=message):
        BridgeConfig(**{"dim": 8, "hidden": 16, **bad})


def test_bad_bridge_options_are_refused():
    with pytest.raises(ValueError, match="topology_max_t"):
        BridgeModule(BridgeConfig(dim=8, hidden=16, timesteps=100, t_start=50), topology_max_t=200)
    with pytest.raises(ValueError, match="denoise_weighting"):
        BridgeModule(BridgeConfig(dim=8, hidden=16), denoise_weighting="snr")
    with pytest.raises(ValueError, match="scale"):
        Preprocessor(8, False, -1.0)


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


def test_regressor_is_one_call_of_the_network_without_noise_or_timestep():
    model = DiffusionLink(BridgeConfig(dim=16, hidden=32, kind="regressor"))
    for p in model.ema.module.parameters():
        p.data.normal_(0, 0.1)
    audio = F.normalize(torch.randn(10, 16), dim=-1)
    source = model.preprocess(audio, "audio")
    expected = model.preprocess.inverse(model.ema.module(source, torch.zeros(10, dtype=torch.long)))
    assert torch.allclose(model.bridge(audio), expected, atol=1e-6)
    # the sampling settings do not apply: noise at entry, other K, DDPM give the same point
    for overrides in ({"noise_start": True}, {"steps": 1}, {"sampler": "ddpm"}):
        assert torch.equal(model.bridge(audio, **overrides), model.bridge(audio))
    with pytest.raises(ValueError, match="kind"):
        BridgeConfig(dim=8, hidden=16, kind="gan")


def test_a_regressor_trains_only_on_the_losses_without_noise():
    with pytest.raises(ValueError, match="denoise_weight: 0"):
        BridgeModule(BridgeConfig(dim=8, hidden=16, kind="regressor"))  # the defaults weight the denoising loss
    with pytest.raises(ValueError, match="nothing would train"):
        BridgeModule(BridgeConfig(dim=8, hidden=16, kind="regressor"), denoise_weight=0.0, cross_weight=0.0)
    module = BridgeModule(BridgeConfig(dim=8, hidden=16, kind="regressor"), denoise_weight=0.0)
    module.log = module.log_dict = lambda *a, **k: None
    audio, text = F.normalize(torch.randn(6, 8), dim=-1), F.normalize(torch.randn(6, 8), dim=-1)
    loss = module.training_step({"audio_embedding": audio, "text_embedding": text}, 0)
    a, c = module.model.preprocess(audio, "audio"), module.model.preprocess(text, "text")
    pred = module.model.denoiser(a, torch.zeros(6, dtype=torch.long))
    assert loss.item() == pytest.approx((prediction_loss(pred, c) + topology_loss(pred, c)).item(), rel=1e-6)
