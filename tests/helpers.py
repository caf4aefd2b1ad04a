"""Helpers of the tests: configs written for a temporary folder, CLI runs, store comparison."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent


def cache_config(
    tmp: Path,
    demo_root: Path,
    *,
    source: dict | None = None,
    shard_size: int = 2,
    name: str = "demo",
    num_workers: int = 0,
    encoder: dict | None = None,
    encoder_export: str | None = None,
) -> Path:
    """The repository's configs/cache/demo.yaml, pointed at temporary folders; laion-clap (random init)
    unless ``encoder_export`` names a trained encoder."""
    config = yaml.safe_load((REPO / "configs/cache/demo.yaml").read_text())
    config["data"]["init_args"]["source"] = source or {
        "class_path": "diffusion_link.data.DemoAudioCaps",
        "init_args": {"root": str(demo_root), "n_train": 6, "n_val": 3, "n_test": 3},
    }
    config["data"]["init_args"]["shard_size"] = shard_size
    config["data"]["init_args"]["num_workers"] = num_workers
    config["model"]["init_args"]["encoder"].update(encoder or {})
    config["model"]["init_args"]["encoder_export"] = encoder_export
    config["trainer"]["callbacks"][0]["init_args"] = {"root": str(tmp / "stores"), "name": name}
    config["trainer"]["accelerator"] = "cpu"
    config["trainer"]["enable_progress_bar"] = False
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / f"cache-{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(args: list[str], env: dict | None = None, timeout: int = 600, **kwargs) -> subprocess.CompletedProcess:
    """The console script in a fresh process (needed for DDP, which re-launches ``sys.argv``)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "diffusion_link.cli", *args], env=full_env, capture_output=True, text=True, timeout=timeout, **kwargs)


def run_stage(trainer, fn: str, model, datamodule, **kwargs):
    """``trainer.<fn>(model, datamodule, **kwargs)`` for a Trainer built by hand, after connecting the
    stage, its DataModule and the trainer's callbacks as the CLI does (``diffusion_link.data.connect``)."""
    from diffusion_link.data import connect

    connect(model, datamodule, trainer.callbacks)
    return getattr(trainer, fn)(model, datamodule=datamodule, **kwargs)


def store_arrays(path: Path) -> dict:
    """Every split of a store as plain arrays, for exact comparison."""
    from diffusion_link.data.store import FeatureStore

    store = FeatureStore(path)
    out = {}
    for split in store.splits:
        ds = store.split(split)
        out[split] = {
            "clip_id": list(ds["clip_id"]),
            "audio": np.asarray(ds["audio_embedding"]),
            "captions": [list(c) for c in ds["captions"]],
            "text": [np.asarray(t) for t in ds["text_embeddings"]],
        }
    return out


def assert_same_store(a: Path, b: Path) -> None:
    x, y = store_arrays(a), store_arrays(b)
    assert x.keys() == y.keys()
    for split in x:
        assert x[split]["clip_id"] == y[split]["clip_id"], split
        assert x[split]["captions"] == y[split]["captions"], split
        np.testing.assert_array_equal(x[split]["audio"], y[split]["audio"])
        for t1, t2 in zip(x[split]["text"], y[split]["text"]):
            np.testing.assert_array_equal(t1, t2)


def merge(base: dict, updates: dict) -> dict:
    """Deep merge of plain dicts (``updates`` wins)."""
    out = dict(base)
    for key, value in updates.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def repo_config(relative: str, tmp: Path, updates: dict, name: str | None = None) -> Path:
    """A config of the repository with ``updates`` merged in, written to ``tmp``."""
    config = merge(yaml.safe_load((REPO / relative).read_text()), updates)
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / (name or Path(relative).name)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def bridge_updates(tmp: Path, store: Path, name: str, hidden: int = 64, steps: int = 6) -> dict:
    """Small, fast overrides of configs/bridge/demo.yaml that write under ``tmp``."""
    return {
        "run_dir": str(tmp / name),  # the step's folder: checkpoints/last.ckpt, and whatever the config leaves unset
        "model": {"init_args": {"bridge": {"hidden": hidden}, "export_dir": str(tmp / name / "export"), "warmup_steps": 1}},
        "data": {"init_args": {"store": str(store), "batch_size": 4}},
        "trainer": {
            "max_steps": steps,
            "accelerator": "cpu",
            "default_root_dir": str(tmp / name),
            "enable_progress_bar": False,
            "check_val_every_n_epoch": 1,
            "log_every_n_steps": 1,
            "logger": {"init_args": {"save_dir": str(tmp / name), "name": "logs"}},  # the configs' TensorBoardLogger
        },
    }


def caption_updates(tmp: Path, store: Path, name: str, mode: str = "zero-shot", bridge: str | None = None, steps: int = 12) -> dict:
    """Small, fast overrides of configs/caption/*.yaml (the tiny GPT-2) that write under ``tmp``."""
    return {
        "run_dir": str(tmp / name),
        "model": {
            "init_args": {
                "name": name,
                "mode": mode,
                "bridge": bridge,
                "lr": 0.005,
                "warmup_steps": 1,
                "captioner": {"llm": "tiny-gpt2"},
                "decoding": {"num_beams": 2, "max_new_tokens": 8},
                "export_dir": str(tmp / name / "export"),
                "output_dir": str(tmp / name / "test"),
            }
        },
        "data": {"init_args": {"store": str(store), "batch_size": 4}},
        "trainer": {
            "max_steps": steps,
            "accelerator": "cpu",
            "enable_progress_bar": False,
            "log_every_n_steps": 1,
            "default_root_dir": str(tmp / name),
            "logger": {"init_args": {"save_dir": str(tmp / name), "name": "logs"}},  # the configs' TensorBoardLogger
        },
    }


def tensorboard_events(folder: Path):
    """Everything a run's TensorBoard event files under ``folder`` hold, read by tensorboard's own reader:
    ``{"scalars": {tag: [values]}, "images": {tag: [png bytes]}, "text": {tag: [markdown]}}``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    found: dict = {"scalars": {}, "images": {}, "text": {}}
    files = sorted(Path(folder).rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event files under {folder}"
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
        events.Reload()
        tags = events.Tags()
        for tag in tags["scalars"]:
            found["scalars"].setdefault(tag, []).extend(e.value for e in events.Scalars(tag))
        for tag in tags["images"]:
            found["images"].setdefault(tag, []).extend(e.encoded_image_string for e in events.Images(tag))
        for tag in tags["tensors"]:  # add_text is stored as a string tensor
            if tag.endswith("/text_summary"):
                found["text"].setdefault(tag.removesuffix("/text_summary"), []).extend(
                    b"".join(e.tensor_proto.string_val).decode() for e in events.Tensors(tag)
                )
    return found
