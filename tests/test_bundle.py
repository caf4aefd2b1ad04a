"""``diffusion-link bundle`` and ``AudioCaptioner``: a tiny run (the session's tiny demo store, bridge and
zero-shot captioner, tested in the run layout) is bundled; the bundle, loaded in a fresh process with the
run folder gone, captions the test clips exactly as the run's own test row did; a damaged bundle is
refused naming what is wrong; a folder of mixed files is captioned with every file accounted for."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
from helpers import REPO, repo_config

from diffusion_link.cli import main
from diffusion_link.export import BundleError, ExportError

ROW = "zero-shot + Diffusion-Link"


def bundle_cli(*args: str) -> None:
    """``diffusion-link bundle ...`` in this process (a tool's command exits with its status)."""
    with pytest.raises(SystemExit) as done:
        main(["bundle", *args])
    assert done.value.code == 0


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, zero_shot, bridge_export, demo_store):
    """A run folder in the runner's layout: bridge/diffusion-link/export, caption/zero-shot/{export,test/<row>},
    bridge/report/gap_report.csv (each made by the stage's own command)."""
    tmp, config = zero_shot
    run = tmp_path_factory.mktemp("run") / "run"
    shutil.copytree(bridge_export, run / "bridge" / "diffusion-link" / "export")
    shutil.copytree(tmp / "zs" / "export", run / "caption" / "zero-shot" / "export")
    bridge = str(run / "bridge" / "diffusion-link" / "export")
    rows = {"raw": {"name": "zero-shot, raw audio"}, "diffusion-link": {"name": ROW, "bridge": bridge}}
    common = ["--model.init_args.pretrained", str(run / "caption" / "zero-shot" / "export"), "--model.init_args.metrics.bootstrap=100"]
    main(
        [
            "test",
            "--config",
            str(config),
            *common,
            "--model.init_args.rows",
            json.dumps(rows),
            "--model.init_args.output_dir",
            str(run / "caption" / "zero-shot" / "test"),
        ]
    )
    gap = repo_config(
        "configs/bridge/gap-demo.yaml",
        tmp_path_factory.mktemp("gap"),
        {
            "model": {"init_args": {"pretrained": bridge, "report_dir": str(run / "bridge" / "report"), "support_size": 64}},
            "data": {"init_args": {"store": str(demo_store), "batch_size": 4}},
            "trainer": {"accelerator": "cpu", "enable_progress_bar": False, "logger": False},
        },
    )
    main(["test", "--config", str(gap)])
    return run


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    bundle_cli(str(tiny_run), "--out", str(out))
    return out


@pytest.fixture(scope="module")
def captioner(bundle):
    from diffusion_link import AudioCaptioner

    return AudioCaptioner.from_pretrained(bundle, device="cpu")


def _predictions(run, row):
    with open(run / "caption" / "zero-shot" / "test" / row / "predictions.csv") as f:
        return {r["clip_id"]: r["candidate"] for r in csv.DictReader(f)}


def test_the_bundle_in_a_fresh_process_captions_as_the_runs_test_row(tiny_run, tiny_demo, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    bundle_cli(str(run), "--out", str(tmp_path / "bundle"))
    expected = {"bridge": _predictions(run, "diffusion-link"), "raw": _predictions(run, "raw")}
    shutil.rmtree(run)
    audio = {p.stem: str(p) for p in (tiny_demo / "audio" / "test").iterdir()}
    clips = sorted(expected["bridge"])
    script = f"""
import json, sys
import diffusion_link
assert "torch" not in sys.modules, "import diffusion_link must stay cheap"
from diffusion_link import AudioCaptioner
captioner = AudioCaptioner.from_pretrained({str(tmp_path / "bundle")!r}, device="cpu")
files = {[audio[c.rsplit("_", 1)[0]] for c in clips]!r}  # clip ids are <youtube_id>_<start>
print(json.dumps({{"bridge": list(captioner(files)), "raw": list(captioner(files, bridge=False))}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, cwd=tmp_path, env={**__import__("os").environ, "PYTHONPATH": str(REPO)}
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["bridge"] == [expected["bridge"][c] for c in clips]
    assert got["raw"] == [expected["raw"][c] for c in clips]


def test_the_model_card_quotes_the_runs_reports(tiny_run, bundle):
    row = tiny_run / "caption" / "zero-shot" / "test" / "diffusion-link"
    assert (bundle / "reports" / "scores.json").read_bytes() == (row / "scores.json").read_bytes()
    assert (bundle / "reports" / "gap_report.csv").read_bytes() == (tiny_run / "bridge" / "report" / "gap_report.csv").read_bytes()
    card = (bundle / "README.md").read_text()
    scores = json.loads((row / "scores.json").read_text())["scores"]
    for key in ("bleu_4", "meteor", "cider_d", "spider"):
        if key in scores:
            assert f"| {key} | {scores[key]:.4f} | [{scores[f'{key}_lo']:.4f}, {scores[f'{key}_hi']:.4f}] |" in card, key
    from diffusion_link.evaluation.report import read_gap_report

    gap = read_gap_report(tiny_run / "bridge" / "report")
    method, values = next(iter(gap.items()))
    assert f"| {method} | " in card and f"{values['frechet']:.4f} [{values['frechet_lo']:.4f}, {values['frechet_hi']:.4f}]" in card
    assert "## Intended use" in card and "## Limits" in card and "## Training data" in card
    config = json.loads((bundle / "config.json").read_text())
    assert config["format"] == "diffusion-link/bundle" and config["test_row"] == "diffusion-link"
    assert config["decoding"] == json.loads((row / "scores.json").read_text())["decoding"]
    assert json.loads((bundle / "encoder" / "config.json").read_text())["format"] == "diffusion-link/clap-reference"
    bridge_name = json.loads((bundle / "bridge" / "config.json").read_text())["training"]["name"]
    assert f"| bridge | {bridge_name}: t*" in card  # the bridge named by its own export, not a default


def test_the_bundle_loads_the_bridge_weights_the_captioner_was_trained_with(bundle, tmp_path):
    from diffusion_link.caption.bundled import bundle_settings

    assert bundle_settings(bundle)["bridge_weights"] == "ema"
    copy = _copy(bundle, tmp_path)  # a captioner trained with raw bridge weights (Diffusion Bridge's own)
    config = json.loads((copy / "captioner" / "config.json").read_text())
    (copy / "captioner" / "config.json").write_text(json.dumps({**config, "bridge_weights": "raw"}))
    with pytest.raises(Exception, match="config.json"):  # an edited component is refused first
        bundle_settings(copy)


def _copy(bundle, tmp_path):
    shutil.copytree(bundle, tmp_path / "b")
    return tmp_path / "b"


def test_a_corrupt_component_file_is_refused_naming_it(bundle, tmp_path):
    from diffusion_link import AudioCaptioner

    b = _copy(bundle, tmp_path)
    weights = b / "bridge" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportError, match=r"bridge: model.safetensors does not match the checksum"):
        AudioCaptioner.from_pretrained(b, device="cpu")


def test_a_missing_or_replaced_component_is_refused_naming_it(bundle, tmp_path):
    from diffusion_link import AudioCaptioner

    b = _copy(bundle, tmp_path)
    shutil.rmtree(b / "captioner")
    with pytest.raises(BundleError, match=r"the captioner component is missing \(captioner/config.json not found\)"):
        AudioCaptioner.from_pretrained(b, device="cpu")
    shutil.rmtree(b)
    b = _copy(bundle, tmp_path)
    config = json.loads((b / "bridge" / "config.json").read_text())
    config["config"]["t_start"] = 10
    (b / "bridge" / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError, match=r"bridge/config.json is not the bridge this bundle was made with"):
        AudioCaptioner.from_pretrained(b, device="cpu")


def test_a_different_base_lm_is_refused_naming_its_files(bundle):
    from diffusion_link import AudioCaptioner
    from diffusion_link.caption.llm import tiny_gpt2_dir

    other = tiny_gpt2_dir(seed=1)  # the same architecture and tokenizer, other weights
    with pytest.raises(ExportError, match=r"trained on the base LM 'tiny-gpt2'.*different one: model.safetensors: expected sha256"):
        AudioCaptioner.from_pretrained(bundle, device="cpu", llm=str(other))


def test_a_folder_of_mixed_files_is_captioned_with_every_file_accounted_for(captioner, tmp_path):
    from diffusion_link.data.audio import AudioDecodeError

    folder = tmp_path / "sounds"
    folder.mkdir()
    t = np.arange(96_000 * 2) / 96_000
    stereo = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.1 * np.sin(2 * np.pi * 880 * t)], 1).astype(np.float32)
    sf.write(folder / "stereo-96k.wav", stereo, 96_000, subtype="FLOAT")
    sf.write(folder / "mono-8k.flac", 0.3 * np.sin(2 * np.pi * 440 * np.arange(4000) / 8000), 8000)
    (folder / "corrupt.wav").write_bytes(b"RIFF" + b"\x00" * 40)
    (folder / "empty.wav").write_bytes(b"")
    result = captioner(folder, strict=False, batch_size=1)
    names = [s.rsplit("/", 1)[1] for s in result.sources]
    assert names == ["corrupt.wav", "empty.wav", "mono-8k.flac", "stereo-96k.wav"]  # every file, in order
    by_name = dict(zip(names, result))
    reasons = {k.rsplit("/", 1)[1]: v for k, v in result.failures.items()}
    assert sorted(reasons) == ["corrupt.wav", "empty.wav"]
    assert reasons["corrupt.wav"].startswith("unreadable audio") and reasons["empty.wav"] == "empty file (0 bytes)"
    assert by_name["corrupt.wav"] is None and by_name["empty.wav"] is None
    assert isinstance(by_name["mono-8k.flac"], str) and isinstance(by_name["stereo-96k.wav"], str)
    # a waveform (channels, samples) at its own rate is mixed and resampled as the file is; batching changes nothing
    assert captioner([stereo.T], sample_rate=96_000) == [by_name["stereo-96k.wav"]]
    assert captioner([folder / "mono-8k.flac", folder / "stereo-96k.wav"], batch_size=32) == [by_name["mono-8k.flac"], by_name["stereo-96k.wav"]]
    with pytest.raises(AudioDecodeError, match="corrupt.wav: unreadable audio"):
        captioner(folder)  # strict (the default): the file is named
    emb = captioner.embed_audio([folder / "mono-8k.flac"])
    assert emb.shape == (1, captioner.encoder.dim) and captioner.bridge(emb).shape == emb.shape
    assert {"decode", "encoder", "bridge", "llm"} <= set(captioner.timings)


def test_predict_takes_a_bundle_and_captions_as_the_api(bundle, captioner, tiny_demo, tmp_path):
    out = tmp_path / "captions.csv"
    config = repo_config(
        "configs/caption/predict-bundle.yaml",
        tmp_path,
        {
            "model": {"init_args": {"bundle": str(bundle)}},
            "data": {"init_args": {"folder": str(tiny_demo / "audio" / "test"), "batch_size": 2}},
            "trainer": {
                "accelerator": "cpu",
                "enable_progress_bar": False,
                "callbacks": [{"class_path": "diffusion_link.caption.CaptionWriter", "init_args": {"output": str(out)}}],
            },
        },
    )
    main(["predict", "--config", str(config)])
    with open(out) as f:
        rows = {r["id"]: r["caption"] for r in csv.DictReader(f)}
    files = sorted(rows)
    assert list(captioner(files)) == [rows[f] for f in files]


def test_merged_weights_caption_as_the_adapter(tiny_run, captioner, tiny_demo, tmp_path):
    from diffusion_link import AudioCaptioner

    bundle_cli(str(tiny_run), "--out", str(tmp_path / "merged"), "--merge")
    config = json.loads((tmp_path / "merged" / "captioner" / "config.json").read_text())
    assert config["merged"] and not any(n.startswith("adapter/") for n in config["files"])
    files = sorted(str(p) for p in (tiny_demo / "audio" / "test").iterdir())
    assert list(AudioCaptioner.from_pretrained(tmp_path / "merged", device="cpu")(files)) == list(captioner(files))


def test_bundle_help_is_generated(capsys):
    with pytest.raises(SystemExit) as done:
        main(["bundle", "--help"])
    assert done.value.code == 0 and "--merge" in capsys.readouterr().out
