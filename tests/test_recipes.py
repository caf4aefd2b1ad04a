"""Every config of the repository parses, and every paper recipe (configs/audiocaps) runs a few steps
on the demo store, with the demo's stand-ins for what is not on this machine (the real CLAP
checkpoint, Vicuna-7B, AudioCaps)."""

import json

import pytest
import yaml
from helpers import REPO, cache_config, repo_config

from diffusion_link.cli import main

SUBCOMMAND = {"encoder": "fit", "cache": "predict", "bridge": "fit", "caption": "fit", "audiocaps": "fit", "clotho": "fit"}
SPECIAL = {"gap-demo.yaml": "test", "predict-demo.yaml": "predict", "predict.yaml": "predict", "cache.yaml": "predict", "gap.yaml": "test"}


def all_configs():
    return sorted(p.relative_to(REPO) for p in (REPO / "configs").rglob("*.yaml") if "variants" not in p.parts)


def print_config(args: list[str], capsys, monkeypatch) -> dict:
    """``diffusion-link ARGS --print_config`` in this process (the configs name paths relative to the repository)."""
    monkeypatch.chdir(REPO)
    capsys.readouterr()
    with pytest.raises(SystemExit) as done:
        main([*args, "--print_config"])
    assert done.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize("config", all_configs(), ids=str)
def test_every_config_parses(config, capsys, monkeypatch):
    subcommand = SPECIAL.get(config.name, SUBCOMMAND[config.parts[1]])
    assert print_config([subcommand, "--config", str(config)], capsys, monkeypatch)["model"]["class_path"].startswith("diffusion_link.")


@pytest.mark.parametrize("variant", sorted((REPO / "configs/bridge/variants").glob("*.yaml")), ids=lambda p: p.name)
def test_bridge_variants_compose_with_the_base_config(variant, capsys, monkeypatch):
    resolved = print_config(["fit", "--config", "configs/bridge/demo.yaml", "--config", str(variant.relative_to(REPO))], capsys, monkeypatch)
    assert resolved["model"]["init_args"]["name"] == yaml.safe_load(variant.read_text())["model"]["init_args"]["name"]


FAST = {"accelerator": "cpu", "fast_dev_run": 1, "enable_progress_bar": False}


def test_recipe_cache(tmp_path, tiny_demo):
    """configs/audiocaps/cache.yaml on the demo source, random-init CLAP (no 630k checkpoint here)."""
    demo = yaml.safe_load(cache_config(tmp_path / "d", tiny_demo).read_text())["data"]["init_args"]["source"]
    config = repo_config(
        "configs/audiocaps/cache.yaml",
        tmp_path,
        {
            "model": {"init_args": {"encoder": {"checkpoint": None}}},
            "data": {"init_args": {"source": demo, "shard_size": 4, "num_workers": 0}},
            "trainer": {
                "accelerator": "cpu",
                "enable_progress_bar": False,
                "callbacks": [{"class_path": "diffusion_link.cache.FeatureStoreWriter", "init_args": {"root": str(tmp_path / "stores"), "name": "audiocaps"}}],
            },
        },
    )
    data = yaml.safe_load(config.read_text())
    data["data"]["init_args"]["source"] = demo  # replace the AudioCaps source rather than merge into it
    config.write_text(yaml.safe_dump(data))
    main(["predict", "--config", str(config)])
    assert json.loads((tmp_path / "stores" / "audiocaps" / "store.json").read_text())["rows"]["train"] == 6


@pytest.fixture(scope="module")
def recipe_bridge(tmp_path_factory, demo_store):
    tmp = tmp_path_factory.mktemp("recipe-bridge")
    config = repo_config(
        "configs/audiocaps/bridge.yaml",
        tmp,
        {
            "model": {"init_args": {"export_dir": str(tmp / "export")}},
            "data": {"init_args": {"store": str(demo_store), "batch_size": 4, "num_workers": 0}},
            "trainer": {**FAST, "default_root_dir": str(tmp)},
        },
    )
    main(["fit", "--config", str(config)])
    return tmp / "export"


def test_recipe_bridge_runs(recipe_bridge):
    assert json.loads((recipe_bridge / "config.json").read_text())["config"]["ema_decay"] == 0.999


def test_recipe_gap(recipe_bridge, demo_store, tmp_path):
    config = repo_config(
        "configs/audiocaps/gap.yaml",
        tmp_path,
        {
            "model": {"init_args": {"pretrained": str(recipe_bridge), "report_dir": str(tmp_path / "gap")}},
            "data": {"init_args": {"store": str(demo_store), "batch_size": 4}},
            "trainer": {**FAST, "logger": False},
        },
    )
    data = yaml.safe_load(config.read_text())
    data["model"]["init_args"]["compare"] = {"Diffusion Bridge": str(recipe_bridge)}
    config.write_text(yaml.safe_dump(data))
    main(["test", "--config", str(config)])
    assert "| Diffusion Bridge |" in (tmp_path / "gap" / "gap_report.md").read_text()


@pytest.mark.parametrize("recipe", ["caption-zeroshot.yaml", "caption-supervised.yaml"])
def test_recipe_caption(recipe, recipe_bridge, demo_store, tmp_path):
    """Vicuna-7B is not on this machine: the tiny GPT-2 stands in (LoRA on its c_attn); bf16 stays."""
    bridge = None if recipe == "caption-zeroshot.yaml" else str(recipe_bridge)
    config = repo_config(
        f"configs/audiocaps/{recipe}",
        tmp_path,
        {
            "model": {
                "init_args": {
                    "bridge": bridge,
                    "captioner": {"llm": "tiny-gpt2", "lora": {"target_modules": None}},
                    "export_dir": str(tmp_path / "export"),
                    "output_dir": str(tmp_path / "test"),
                    "decoding": {"num_beams": 1, "max_new_tokens": 4},
                }
            },
            "data": {"init_args": {"store": str(demo_store), "batch_size": 2, "num_workers": 0}},
            "trainer": {**FAST, "default_root_dir": str(tmp_path), "callbacks": [], "logger": False},
        },
    )
    main(["fit", "--config", str(config)])
    main(["test", "--config", str(config), "--model.init_args.pretrained", str(tmp_path / "export")])
    report = json.loads((tmp_path / "test" / "scores.json").read_text())
    assert report["mode"] == ("zero-shot" if bridge is None else "supervised") and report["bridge"] == bridge
    exported = json.loads((tmp_path / "export" / "config.json").read_text())
    assert exported["precision"] == "bf16-mixed" and exported["split"] == "train"  # the recipe's precision, disclosed


def test_slurm_script_runs_the_recipe_with_lightnings_strategy():
    """The SLURM script starts the runner once per task (srun) and sets Lightning's own strategy and nodes
    through the recipe's variables; its pre-emption signal is the one the runner passes on (SIGUSR1)."""
    from diffusion_link.run import load_recipe, recipe_steps

    script = (REPO / "scripts/slurm/reproduce.sbatch").read_text()
    assert "srun .venv/bin/diffusion-link run recipes/audiocaps.yaml" in script and "--signal=USR1@90" in script
    recipe = load_recipe(REPO / "recipes/audiocaps.yaml", ["NODES=2", "DEVICES=4", "STRATEGY=ddp"])
    fit = next(s for s in recipe_steps(recipe) if s.kind == "bridge").command
    assert {"--trainer.num_nodes=2", "--trainer.devices=4", "--trainer.strategy=ddp"} <= set(fit)
