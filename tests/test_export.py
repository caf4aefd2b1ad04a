"""The one export format (diffusion_link/export.py) of the encoder, the bridges and the captioners:
round trips, and every way an export folder can be wrong refused with a message that says what and how."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from diffusion_link.export import ExportError, ExportNotFoundError, read_export, write_export


@pytest.fixture(scope="module")
def bridge_folder(tmp_path_factory) -> Path:
    from diffusion_link.bridge.model import BridgeConfig, DiffusionLink

    torch.manual_seed(0)
    model = DiffusionLink(BridgeConfig(dim=16, hidden=32, center=True), encoder={"family": "test", "weights": "a"})
    audio, text = torch.nn.functional.normalize(torch.randn(40, 16) + 1, dim=-1), torch.nn.functional.normalize(torch.randn(40, 16), dim=-1)
    model.preprocess.set_means(audio.mean(0), text.mean(0))
    for p in model.denoiser.parameters():
        p.data.normal_()
    model.update_ema()
    folder = model.save_pretrained(tmp_path_factory.mktemp("bridge") / "export", extra={"training": {"steps": 3}})
    return folder


@pytest.fixture(scope="module")
def captioner(tmp_path_factory):
    from diffusion_link.caption.model import CaptionerConfig, CaptionModel

    torch.manual_seed(0)
    model = CaptionModel(CaptionerConfig(llm="tiny-gpt2", dim=16, prefix_tokens=2, use_chat_template=False))
    for p in model.parameters():
        if p.requires_grad:  # LoRA's B starts at zero: make the adapter matter
            p.data.normal_(std=0.1)
    folder = model.save_pretrained(tmp_path_factory.mktemp("captioner") / "export", extra={"mode": "zero-shot"})
    return model.eval(), folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    import shutil

    return Path(shutil.copytree(folder, tmp_path / "copy"))


def test_bridge_round_trip_and_config(bridge_folder):
    from diffusion_link.bridge.model import DiffusionLink

    config = json.loads((bridge_folder / "config.json").read_text())
    assert config["format"] == "diffusion-link/bridge" and config["format_version"] == 1
    assert set(config["files"]) == {"model.safetensors"} and len(config["files"]["model.safetensors"]) == 64
    assert config["training"] == {"steps": 3} and config["config"]["hidden"] == 32 and config["encoder"]["weights"] == "a"
    loaded = DiffusionLink.from_pretrained(bridge_folder)
    again = DiffusionLink.from_pretrained(bridge_folder)
    audio = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    assert torch.equal(loaded.bridge(audio), again.bridge(audio)) and loaded.meta["training"] == {"steps": 3}
    assert not list(bridge_folder.parent.glob(".*tmp*"))  # the temporary folder became the export


def test_captioner_round_trip_lists_peft_files(captioner):
    from diffusion_link.caption.model import CaptionModel

    model, folder = captioner
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "diffusion-link/captioner" and config["mode"] == "zero-shot"
    assert {"projector.safetensors", "adapter/adapter_model.safetensors", "adapter/adapter_config.json"} <= set(config["files"])
    loaded = CaptionModel.from_pretrained(folder)
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name
    embeddings = torch.nn.functional.normalize(torch.randn(2, 16), dim=-1)
    with torch.no_grad():
        assert torch.equal(model.loss(embeddings, ["a dog barks", "rain"]), loaded.loss(embeddings, ["a dog barks", "rain"]))


def test_encoder_round_trip_records_its_weights_checksum(tmp_path):
    from diffusion_link.encoder import ContrastiveEncoder
    from diffusion_link.encoder.towers import LogMelCNN, SentenceEncoderText

    torch.manual_seed(0)
    encoder = ContrastiveEncoder(LogMelCNN(dim=32, window_seconds=1.0, channels=(4, 8, 8, 8, 8), segments=2), SentenceEncoderText(dim=32, hidden=0))
    encoder.save_pretrained(tmp_path / "export", meta={"trained_on": {"source": "tones", "train_split": "train"}})
    config = json.loads((tmp_path / "export" / "config.json").read_text())
    assert config["format"] == "diffusion-link/encoder" and set(config["files"]) == {"encoder.safetensors"}
    assert config["description"]["weights"] == f"sha256:{config['files']['encoder.safetensors']}"  # the feature store's key
    loaded = ContrastiveEncoder.from_pretrained(tmp_path / "export")
    assert loaded.describe() == encoder.describe() and loaded.meta["trained_on"]["source"] == "tones"
    wave = torch.rand(16_000).numpy() - 0.5
    assert torch.equal(loaded.encode_audio([wave]), encoder.encode_audio([wave]))

    from diffusion_link.doctor import _encoder_export  # reads the same format, without torch

    assert "checksums ok; trained on tones 'train'" in _encoder_export(str(tmp_path / "export"))
    (tmp_path / "export" / "encoder.safetensors").write_bytes(b"")
    assert _encoder_export(str(tmp_path / "export")) is None


@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_a_flipped_byte_is_refused_with_the_file_named(bridge_folder, tmp_path, name):
    from diffusion_link.bridge.model import DiffusionLink

    folder = _copy(bridge_folder, tmp_path)
    if name == "config.json":  # the recorded checksum changed instead of the file
        config = json.loads((folder / name).read_text())
        config["files"]["model.safetensors"] = "0" * 64
        (folder / name).write_text(json.dumps(config))
    else:
        data = bytearray((folder / name).read_bytes())
        data[len(data) // 2] ^= 0x01
        (folder / name).write_bytes(bytes(data))
    expected = json.loads((folder / "config.json").read_text())["files"]["model.safetensors"]
    with pytest.raises(ExportError, match="model.safetensors does not match the checksum") as err:
        DiffusionLink.from_pretrained(folder)
    message = str(err.value)
    assert f"expected sha256 {expected}" in message and "re-export it with `diffusion-link fit --config configs/bridge/demo.yaml`" in message
    assert isinstance(err.value, ValueError)


def test_a_changed_adapter_file_is_refused(captioner, tmp_path):
    from diffusion_link.caption.model import CaptionModel

    folder = _copy(captioner[1], tmp_path)
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    (folder / "adapter" / "adapter_config.json").write_text(json.dumps({**config, "r": 2 * config["r"]}))
    with pytest.raises(ExportError, match="adapter/adapter_config.json does not match the checksum"):
        CaptionModel.from_pretrained(folder)


def test_a_missing_file_is_refused(captioner, tmp_path):
    from diffusion_link.caption.model import CaptionModel

    folder = _copy(captioner[1], tmp_path)
    (folder / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(ExportError, match="adapter/adapter_model.safetensors is missing .*found no file.*configs/caption/zero-shot.yaml"):
        CaptionModel.from_pretrained(folder)


def test_the_wrong_kind_is_refused(bridge_folder, captioner):
    from diffusion_link.caption.model import CaptionModel

    with pytest.raises(ExportError, match=f"{bridge_folder} is a bridge export .*but a captioner export was expected"):
        CaptionModel.from_pretrained(bridge_folder)
    with pytest.raises(ExportError, match="is a captioner export .*but an encoder export was expected"):
        read_export(captioner[1], "encoder")


def test_no_export_or_an_older_one_says_how_to_remake_it(bridge_folder, tmp_path):
    from diffusion_link.bridge.model import DiffusionLink

    with pytest.raises(ExportNotFoundError, match="is not a bridge export: it does not exist.*make one with `diffusion-link fit") as err:
        DiffusionLink.from_pretrained(tmp_path / "nowhere")
    assert isinstance(err.value, FileNotFoundError)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ExportNotFoundError, match="has no config.json"):
        read_export(tmp_path / "empty", "captioner")
    older = _copy(bridge_folder, tmp_path)
    config = json.loads((older / "config.json").read_text())
    for key in ("format_version", "files"):
        del config[key]
    (older / "config.json").write_text(json.dumps({**config, "format": "diffusion-link-bridge/1"}))
    with pytest.raises(ExportError, match="format 'diffusion-link-bridge/1'.*older diffusion-link.*re-export it with"):
        DiffusionLink.from_pretrained(older)
    del config["format"]
    (older / "config.json").write_text(json.dumps(config))
    with pytest.raises(ExportError, match="no format tag"):
        DiffusionLink.from_pretrained(older)


def test_the_writer_is_atomic_and_keeps_its_own_keys(tmp_path):
    with pytest.raises(RuntimeError, match="half-way"), write_export(tmp_path / "export", "bridge") as draft:
        draft.save_tensors("model.safetensors", {"w": torch.ones(2)})
        raise RuntimeError("killed half-way")
    assert not (tmp_path / "export").exists() and not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="format's own keys"), write_export(tmp_path / "export", "bridge") as draft:
        draft.config["files"] = {}
    with write_export(tmp_path / "export", "encoder") as draft:
        (draft.root / "sub").mkdir()
        (draft.root / "sub" / "notes.txt").write_text("data")
    assert set(read_export(tmp_path / "export", "encoder")["files"]) == {"sub/notes.txt"}


def test_a_bridge_export_keeps_its_raw_weights_beside_the_ema_and_loads_either(tmp_path):
    """Diffusion Bridge's captioner samples with the raw (non-EMA) weights: the export keeps both sets,
    ``weights="raw"`` loads the trained ones, and an export without them is refused with what to do."""
    from safetensors.torch import load_file, save_file

    from diffusion_link.bridge.model import BridgeConfig, DiffusionLink

    torch.manual_seed(0)
    model = DiffusionLink(BridgeConfig(dim=16, hidden=32, ema_decay=0.9))
    model.update_ema()
    for p in model.denoiser.parameters():  # trained further than the average has followed
        p.data.normal_()
    folder = model.save_pretrained(tmp_path / "export")
    audio = torch.nn.functional.normalize(torch.randn(5, 16), dim=-1)
    ema, raw = DiffusionLink.from_pretrained(folder), DiffusionLink.from_pretrained(folder, weights="raw")
    assert torch.allclose(ema.bridge(audio), model.bridge(audio, use_ema=True)) and torch.allclose(raw.bridge(audio), model.bridge(audio, use_ema=False))
    assert not torch.allclose(ema.bridge(audio), raw.bridge(audio)) and raw.weights == "raw"
    tensors = load_file(folder / "model.safetensors")
    old = tmp_path / "old"
    with write_export(old, "bridge") as draft:  # an export written before the raw weights were kept
        save_file({k: v for k, v in tensors.items() if not k.startswith("raw.")}, str(draft.root / "model.safetensors"))
        draft.config.update(json.loads((folder / "config.json").read_text()) | {"files": None, "format": None, "format_version": None})
        for key in ("files", "format", "format_version"):
            draft.config.pop(key)
    assert torch.allclose(DiffusionLink.from_pretrained(old).bridge(audio), ema.bridge(audio))
    with pytest.raises(ExportError, match="no raw .non-EMA. weights.*refit the bridge"):
        DiffusionLink.from_pretrained(old, weights="raw")
    with pytest.raises(ValueError, match="'ema' or 'raw'"):
        DiffusionLink.from_pretrained(folder, weights="last")
