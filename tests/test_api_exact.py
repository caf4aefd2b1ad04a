"""A clip is captioned alike whatever it is batched with: the encoder embeds each clip on its own, and a
bridge takes each embedding in a chunk of fixed shape, its sampling noise keyed by the embedding, in the captioner's test
rows (``Bridges``) and in ``AudioCaptioner`` alike (the chain of :mod:`diffusion_link.caption.chain`)."""

import numpy as np
import pytest
import torch

from diffusion_link.bridge.model import KEYED_CHUNK, BridgeConfig, DiffusionLink
from diffusion_link.caption.inputs import Bridges
from diffusion_link.caption.model import DecodingOptions


def test_the_encoder_embeds_a_clip_alike_in_any_batch(tmp_path):
    from diffusion_link.encoder import ContrastiveEncoder
    from diffusion_link.encoder.towers import LogMelCNN, SentenceEncoderText

    torch.manual_seed(0)
    encoder = ContrastiveEncoder(LogMelCNN(dim=32, window_seconds=1.0, channels=(4, 8, 8, 8, 8), segments=2), SentenceEncoderText(dim=32, hidden=0))
    rng = np.random.RandomState(0)
    waves = [rng.uniform(-0.5, 0.5, n).astype(np.float32) for n in (3_000, 16_000, 7_500, 12_345, 20_000)]  # shorter and longer than the 1 s window
    together = encoder.encode_audio(waves)
    alone = torch.cat([encoder.encode_audio([w]) for w in waves])
    assert torch.equal(together, alone)  # padded to the batch's longest, the short clips came out up to ~0.1 apart
    order = [3, 0, 4, 2, 1]
    assert torch.equal(encoder.encode_audio([waves[i] for i in order]), together[order])
    assert torch.allclose(together.norm(dim=-1), torch.ones(len(waves)))
    encoder.save_pretrained(tmp_path / "encoder")
    assert encoder.describe()["batching"] == "each clip alone, padded to the window"  # new stores get a new checksum


@pytest.fixture(params=[{"noise_start": True}, {"sampler": "ddpm", "t_start": 20}, {}], ids=["noise-start", "ddpm", "ddim"])
def bridge_folder(request, tmp_path):
    torch.manual_seed(0)
    config = BridgeConfig(**{"dim": 16, "hidden": 32, "blocks": 1, "time_dim": 8, "timesteps": 100, "t_start": 40, "steps": 4, **request.param})
    model = DiffusionLink(config, encoder={"family": "tiny"})
    model.update_ema()
    model.save_pretrained(tmp_path / "bridge")
    return str(tmp_path / "bridge"), request.param


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    """The BLAS splits a product's rows across threads: a clip's place must not matter at either count."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def test_the_test_rows_and_the_api_bridge_a_clip_alike_in_any_batch(bridge_folder, threads):
    from diffusion_link.api import AudioCaptioner

    folder, sampling = bridge_folder
    # 21 clips: more than a chunk of keyed bridging (KEYED_CHUNK), so a clip meets other neighbours, places and padding
    audio = torch.nn.functional.normalize(torch.randn(KEYED_CHUNK + 5, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    bridges = Bridges([folder])  # what the captioner's test rows and predict hold
    api = AudioCaptioner(None, Bridges([folder]), folder, None, DecodingOptions(), torch.device("cpu"))
    torch.manual_seed(123)
    row = bridges(audio, folder)
    torch.manual_seed(456)  # the global stream is not the noise's source
    assert torch.equal(api.bridge(audio), row)
    assert torch.equal(torch.cat([api.bridge(audio[i : i + 1]) for i in range(len(audio))]), row)  # a batch of 1 vs of N
    order = torch.randperm(len(audio), generator=torch.Generator().manual_seed(2))
    assert torch.equal(bridges(audio[order], folder), row[order])  # a permuted batch
    assert torch.equal(torch.cat([api.bridge(audio[:3]), api.bridge(audio[3:])]), row)  # other chunk boundaries
    assert torch.equal(api.bridge(torch.cat([audio[:2], audio[:2]])), torch.cat([row[:2], row[:2]]))  # a repeated clip
    bridge = bridges.module(folder)
    if sampling:  # the noise is there, and keyed: another seed, or the old batch-wide stream, gives other points
        assert not torch.allclose(bridge.bridge(audio, seed=1), row)
        torch.manual_seed(0)
        streamed = bridge.bridge(audio, keyed=False)
        torch.manual_seed(0)
        assert not torch.allclose(bridge.bridge(audio[order], keyed=False), streamed[order])
    assert torch.allclose(row.norm(dim=-1), torch.ones(len(audio)))
    with pytest.raises(ValueError, match="one noise key per row"):
        bridge.bridge(audio, keys=[1, 2])
    with pytest.raises(ValueError, match="cannot go with keyed=False"):
        bridge.bridge(audio, keyed=False, keys=list(range(len(audio))))


def test_a_supervised_captioner_trains_on_fresh_noise_and_tests_on_keyed_noise(bridge_folder):
    from functools import partial
    from types import SimpleNamespace

    from diffusion_link.caption.module import CaptionerModule

    folder, sampling = bridge_folder
    audio = torch.nn.functional.normalize(torch.randn(4, 16, generator=torch.Generator().manual_seed(2)), dim=-1)
    captioner = SimpleNamespace(hparams=SimpleNamespace(mode="supervised", bridge=folder), bridges=Bridges([folder]))
    captioner._audio = partial(CaptionerModule._audio, captioner)
    batch = {"audio_embedding": audio}
    first, second = (CaptionerModule._training_input(captioner, batch) for _ in range(2))
    tested = captioner._audio(audio)  # what the test rows and predict see
    assert torch.equal(captioner._audio(audio), tested)
    if sampling:  # keyed, a clip's training input was frozen: the same noise every epoch
        assert not torch.allclose(first, second)
        assert not torch.allclose(first, tested)
    else:  # DDIM from the audio itself: one input per clip, batched or not
        assert torch.allclose(first, tested, atol=1e-5) and torch.allclose(first, second, atol=1e-5)


def test_the_spread_table_draws_a_deterministic_row_once_with_the_same_numbers(bridge_folder):
    from types import SimpleNamespace

    from torchmetrics import CatMetric

    from diffusion_link.bridge.module import BridgeModule, _Bridged
    from diffusion_link.evaluation.gap import GapMetrics
    from diffusion_link.evaluation.gap_spread import SampleSpread

    folder, sampling = bridge_folder
    model = DiffusionLink.from_pretrained(folder)
    calls = []
    bridge = model.bridge
    model.bridge = lambda audio, **kw: calls.append(kw) or bridge(audio, **kw)
    assert Bridges([folder]).stochastic(folder) == model.stochastic == bool(sampling)
    n, audio = 4, torch.nn.functional.normalize(torch.randn(3, 16, generator=torch.Generator().manual_seed(3)), dim=-1)
    refs = torch.nn.functional.normalize(torch.randn(3, 2, 16, generator=torch.Generator().manual_seed(4)), dim=-1)
    module = SimpleNamespace(hparams=SimpleNamespace(spread_samples=n), methods={"b": _Bridged(model)}, gap={"b": GapMetrics()}, cosines={"b": CatMetric()})
    module.points, module.spread = {k: CatMetric() for k in ("text", "audio", "b")}, {"b": SampleSpread()}
    BridgeModule.test_step(module, {"text_embeddings": refs, "n_refs": torch.tensor([2, 1, 2]), "audio_embedding": audio}, 0)
    spread = module.spread["b"].compute()
    if sampling:  # seeds 0..n-1, each another sample
        assert [c.get("seed", 0) for c in calls] == list(range(n)) and spread["spread_samples"] > 0
    else:  # one call: every further call gave the same bits
        assert len(calls) == 1 and spread["spread_samples"] < 1e-6  # 1 - cos(s, s): rounding only
        assert all(torch.equal(bridge(audio, seed=s), bridge(audio)) for s in range(1, n))
