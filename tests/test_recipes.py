"""Every config of the repository parses, and every paper recipe (configs/audiocaps) runs a few steps
on the demo store, with the demo's stand-ins for what is not on this machine (the real CLAP
checkpoint, Vicuna-7B, AudioCaps)."""

import json

import pytest
import yaml
from helpers import REPO, cache_config, repo_config

from diffusion_link.cli import main

SUBCOMMAND = {"encoder": "fit", "cache": "predict", "bridge": "fit", "caption": "fit", "audiocaps": "fit", "clotho": "fit"}
SPECIAL = {
    "gap-demo.yaml": "test",
    "predict-demo.yaml": "predict",
    "predict.yaml": "predict",
    "predict-bundle.yaml": "predict",
    "cache.yaml": "predict",
    "gap.yaml": "test",
}


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


# --- extends: a recipe that adds rows to another and reuses its finished steps ------------------------


def _extending(tmp_path, monkeypatch, extension: str):
    """A copy of tests/test_runner.py's toy recipe as recipe.yaml, and ``extension`` as more.yaml beside it."""
    from test_runner import write_recipe

    monkeypatch.chdir(tmp_path)
    base = write_recipe(tmp_path)
    (tmp_path / "more.yaml").write_text(extension)
    return base, tmp_path / "more.yaml"


EXTENSION = """\
extends: recipe.yaml
bridges:
  reg: {name: regressor, config: [bridge.yaml, variant.yaml]}
  db: {name: Diffusion Bridge (renamed)}
captioners:
  zs:
    tests: {reg: {name: with the regressor, bridge: reg}}
"""


def test_a_recipe_extends_another_by_merging_and_keeps_its_own_gap_report(tmp_path, monkeypatch):
    from diffusion_link.run import load_recipe, recipe_steps
    from diffusion_link.run.recipe import RecipeError

    base, more = _extending(tmp_path, monkeypatch, EXTENSION)
    recipe = load_recipe(more, ["STEPS=2"])  # the base's variables, overridden as in the base
    assert [(r.key, r.name) for r in recipe.bridges] == [("dl", "Diffusion-Link"), ("db", "Diffusion Bridge (renamed)"), ("reg", "regressor")]
    assert recipe.bridge("db").config == ["bridge.yaml", "variant.yaml"]  # a mapping merges: the base's config kept
    zs = next(c for c in recipe.captioners if c.key == "zs")
    assert zs.config == ["caption.yaml"] and [t.key for t in zs.tests] == ["raw", "dl", "reg"]
    assert recipe.run_dir == load_recipe(base).run_dir and recipe.bridge("dl").args == {"trainer.max_steps": 2}
    # its gap analysis: its own folder and step (record), so the base's gap table is never overwritten
    assert recipe.gap_report == "report-more" and load_recipe(base).gap_report == "report"
    (gap,) = [s for s in recipe_steps(recipe) if s.kind == "gap"]
    (base_gap,) = [s for s in recipe_steps(load_recipe(base)) if s.kind == "gap"]
    assert [str(p) for p in gap.outputs] == ["run/bridge/report-more/gap_report.csv"]
    assert "--model.init_args.report_dir=run/bridge/report-more" in gap.command
    assert gap.slug != base_gap.slug and [str(p) for p in base_gap.outputs] == ["run/bridge/report/gap_report.csv"]
    assert not any("report_dir" in a for a in base_gap.command)  # the base's command (and key) unchanged
    (tmp_path / "named.yaml").write_text("extends: recipe.yaml\ngap_report: report-baselines\n")
    assert load_recipe(tmp_path / "named.yaml").gap_report == "report-baselines"
    for text, message in (
        ("extends: loop.yaml\n", "extends it back"),
        ("extends: missing.yaml\n", "no recipe at"),
        ("extends: [recipe.yaml]\n", "the path of one recipe"),
        ("extends: recipe.yaml\ngap_report: ../x\n", "one folder name"),
    ):
        (tmp_path / "loop.yaml").write_text(text)
        with pytest.raises(RecipeError, match=message):
            load_recipe(tmp_path / "loop.yaml")


def test_an_extending_recipe_removes_a_base_row_with_null(tmp_path, monkeypatch):
    from diffusion_link.run import load_recipe
    from diffusion_link.run.recipe import RecipeError

    _, more = _extending(tmp_path, monkeypatch, "extends: recipe.yaml\nbridges: {db: null}\ncaptioners: {sup: null, zs: {tests: {dl: null}}}\n")
    recipe = load_recipe(more)
    assert [r.key for r in recipe.bridges] == ["dl"]
    assert [c.key for c in recipe.captioners] == ["zs"] and [t.key for t in recipe.captioners[0].tests] == ["raw"]
    # the same on the command line (key.path=null), and a null that is not a row still sets the key to null
    (tmp_path / "more.yaml").write_text("extends: recipe.yaml\n")
    recipe = load_recipe(more, ["captioners.sup=null", "captioners.zs.tests.dl=null"])
    assert [c.key for c in recipe.captioners] == ["zs"] and [t.key for t in recipe.captioners[0].tests] == ["raw"]
    assert load_recipe(more, ["gap=null"]).gap is None
    # a base row that still names the removed bridge is refused, naming it
    (tmp_path / "more.yaml").write_text("extends: recipe.yaml\nbridges: {db: null}\n")
    with pytest.raises(RecipeError, match="'db' is not a bridge row"):
        load_recipe(more)


def test_an_extending_recipe_reuses_the_base_runs_steps(tmp_path, monkeypatch):
    """Run the base, then the extension: only its new bridge, its gap analysis and the captioner test that
    gained a row run; the base's steps are reused, and the base run afterwards still reuses everything."""
    import sys

    from test_runner import FAKE, actions, run_all

    from diffusion_link.run.runner import Runner

    monkeypatch.setattr(Runner, "program", (sys.executable, str(FAKE)))
    base, more = _extending(tmp_path, monkeypatch, EXTENSION.replace("  db: {name: Diffusion Bridge (renamed)}\n", ""))
    run_all(base)
    (tmp_path / "run" / "calls.jsonl").unlink()  # what the extension's run calls, alone
    assert run_all(more) == ["cache: features", "bridge: regressor", "gap: modality-gap analysis (report-more)", "caption: test zs (3 rows)"]
    assert (tmp_path / "run" / "bridge" / "report" / "gap_report.csv").is_file() and (tmp_path / "run" / "bridge" / "report-more" / "gap_report.csv").is_file()
    assert set(actions(base).values()) == {"run", "reuse"} and [n for n, a in actions(base).items() if a == "run"] == ["cache: features"]


@pytest.mark.parametrize("recipe", sorted((REPO / "recipes").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_becomes_steps_whose_configs_exist(recipe, monkeypatch):
    """A shipped recipe loads (its ``extends`` chain, its rows' bridges) and every config its steps name is in
    the repository, so a recipe never names a file that a rename left behind."""
    from diffusion_link.run import load_recipe, recipe_steps

    monkeypatch.chdir(REPO)
    steps = recipe_steps(load_recipe(recipe))
    assert steps
    configs = [arg for step in steps for flag, arg in zip(step.command, step.command[1:]) if flag == "--config"]
    assert configs and all((REPO / c).is_file() for c in configs), [c for c in configs if not (REPO / c).is_file()]
