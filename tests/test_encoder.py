import dataclasses
import sys

import numpy as np
import pytest
import torch

from diffusion_link.assets import MissingAssetError, gpt2_tokenizer_dir
from diffusion_link.encoder.clap import ClapConfig, ClapEncoder
from diffusion_link.encoder.clap_files import save_clap_checkpoint
from diffusion_link.encoder.windows import WINDOW_SAMPLES, repeat_pad, to_windows


def test_windows_are_deterministic():
    long = np.arange(WINDOW_SAMPLES * 2 + 1000, dtype=np.float32)
    centre = to_windows(long, "centre")
    assert centre.shape == (1, WINDOW_SAMPLES)
    assert centre[0, 0] == (len(long) - WINDOW_SAMPLES) // 2
    chunks = to_windows(long, "chunk_average")
    assert chunks.shape == (2, WINDOW_SAMPLES)  # the 1000-sample tail is a sliver: dropped
    short = np.arange(1, 4, dtype=np.float32)
    padded = repeat_pad(short, 10)
    np.testing.assert_array_equal(padded, [1, 2, 3, 1, 2, 3, 1, 2, 3, 0])


def test_no_torchvision_stand_in_left_behind(encoder):
    assert "torchvision" not in sys.modules or getattr(sys.modules["torchvision"], "__file__", None)
    import torchmetrics  # noqa: F401  (crashes when a stand-in torchvision is left in sys.modules)
    import transformers

    transformers.AutoConfig  # noqa: B018


def test_long_clip_embeds_identically_every_time(encoder):
    rng = np.random.RandomState(0)
    long = rng.uniform(-0.3, 0.3, WINDOW_SAMPLES + 48_000 * 3).astype(np.float32)
    short = rng.uniform(-0.3, 0.3, 48_000 * 2).astype(np.float32)
    first = encoder.encode_audio([long, short])
    for _ in range(2):
        torch.manual_seed(np.random.randint(1000))  # laion-clap's own random crop would differ now
        np.random.seed(np.random.randint(1000))
        assert torch.equal(encoder.encode_audio([long, short]), first)
    # the centre crop is what the model saw (to float tolerance: a batch of one takes other kernels)
    start = (len(long) - WINDOW_SAMPLES) // 2
    assert torch.allclose(encoder.encode_audio([long[start : start + WINDOW_SAMPLES]]), first[:1], atol=1e-5)
    assert torch.allclose(first.norm(dim=-1), torch.ones(2))


@pytest.mark.parametrize("crop", ["centre", "chunk_average"])
def test_a_clip_embeds_alike_alone_in_a_batch_and_in_a_permuted_batch(encoder, monkeypatch, crop):
    # a bridge keys its sampling noise on the embedding's bits: one forward pass for the whole batch came
    # out ~1e-7 apart from the clip alone, which redrew the noise
    monkeypatch.setattr(encoder, "config", dataclasses.replace(encoder.config, crop=crop))
    rng = np.random.RandomState(1)
    waves = [rng.uniform(-0.3, 0.3, n).astype(np.float32) for n in (48_000, WINDOW_SAMPLES * 2 + 96_000, 30_000, WINDOW_SAMPLES + 5)]
    together = encoder.encode_audio(waves)
    alone = torch.cat([encoder.encode_audio([w]) for w in waves])
    assert torch.equal(together, alone)
    order = [2, 0, 3, 1]
    assert torch.equal(encoder.encode_audio([waves[i] for i in order]), together[order])
    assert torch.allclose(together.norm(dim=-1), torch.ones(len(waves)))
    assert encoder.encode_audio([]).shape == (0, encoder.dim)
    assert encoder.describe()["batching"] == "each clip alone"  # new stores get a new checksum


def test_text_embeddings_are_deterministic_and_normalised(encoder):
    a = encoder.encode_text(["a dog barks", "a cat meows while a cow moos"])
    assert a.shape == (2, encoder.dim)
    assert torch.equal(a, encoder.encode_text(["a dog barks", "a cat meows while a cow moos"]))
    assert torch.allclose(a.norm(dim=-1), torch.ones(2))


def test_random_init_is_recorded(encoder):
    desc = encoder.describe()
    assert desc["weights"] == "random-init(seed=0)" and desc["dim"] == 512 and desc["crop"] == "centre"


def test_official_layout_checkpoint_round_trip(encoder, tmp_path):
    path = save_clap_checkpoint(encoder, tmp_path / "clap.pt")
    state = torch.load(path, weights_only=False)["state_dict"]
    assert all(k.startswith("module.") for k in state) and "module.text_branch.embeddings.position_ids" in state
    # another seed: identical outputs can only come from the checkpoint's weights
    loaded = ClapEncoder(ClapConfig(checkpoint=str(path), seed=123, tokenizer_path=str(gpt2_tokenizer_dir())))
    wave = np.random.RandomState(1).uniform(-0.3, 0.3, 48_000 * 4).astype(np.float32)
    assert torch.equal(loaded.encode_audio([wave]), encoder.encode_audio([wave]))
    assert torch.equal(loaded.encode_text(["a duck quacks"]), encoder.encode_text(["a duck quacks"]))
    assert loaded.describe()["weights"].startswith("sha256:")


def test_state_dict_without_position_ids_also_loads(encoder, tmp_path):
    torch.save({"state_dict": encoder.model.state_dict()}, tmp_path / "plain.pt")
    ClapEncoder(ClapConfig(checkpoint=str(tmp_path / "plain.pt"), tokenizer_path=str(gpt2_tokenizer_dir())))


def test_missing_checkpoint_and_missing_tokenizer_are_clear(encoder, tmp_path):
    with pytest.raises(MissingAssetError, match="630k-audioset-best.pt"):
        ClapEncoder(ClapConfig(checkpoint=str(tmp_path / "nope.pt")))
    save_clap_checkpoint(encoder, tmp_path / "clap.pt")
    with pytest.raises(MissingAssetError, match="roberta-base tokenizer"):
        ClapEncoder(ClapConfig(checkpoint=str(tmp_path / "clap.pt")))


def test_fusion_models_refused_clearly():
    with pytest.raises(NotImplementedError, match="non-fusion"):
        ClapEncoder(ClapConfig(enable_fusion=True))
