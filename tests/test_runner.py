"""The runner of recipes (diffusion_link.run): steps from a recipe, reuse by hash, resume from the last
checkpoint, signals, logs. Fast: the steps here are a stand-in stage (tests/data/fake_stage.py) that
behaves like a Lightning fit (a checkpoint every step, SIGTERM ends it early with 143, --ckpt_path resumes);
the real stages run through the runner in tests/test_recipe_runs.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from diffusion_link.run import describe_plan, load_recipe, recipe_steps
from diffusion_link.run.recipe import RecipeError
from diffusion_link.run.runner import Runner, StepFailed, plan

FAKE = Path(__file__).parent / "data" / "fake_stage.py"
CONFIGS = {
    "cache.yaml": "trainer:\n  callbacks:\n    - class_path: diffusion_link.cache.FeatureStoreWriter\n      init_args: {name: toy}\n",
    "bridge.yaml": "model: {init_args: {lr: 0.001}}\n",
    "variant.yaml": "model: {init_args: {cross_weight: 0.0}}\n",
    "gap.yaml": "model: {}\n",
    "caption.yaml": "model: {}\n",
}


def write_recipe(folder: Path, extra: str = "") -> Path:
    for name, text in CONFIGS.items():
        (folder / name).write_text(text)
    recipe = folder / "recipe.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            run_dir: run
            vars: {STEPS: 4}
            cache: cache.yaml
            bridges:
              dl: {name: Diffusion-Link, config: [bridge.yaml], args: {trainer.max_steps: "${STEPS}"}}
              db: {name: Diffusion Bridge, config: [bridge.yaml, variant.yaml], args: {trainer.max_steps: "${STEPS}"}}
            gap: gap.yaml
            captioners:
              zs:
                config: [caption.yaml]
                tests: {raw: {name: raw}, dl: {name: with DL, bridge: dl}}
              sup:
                config: [caption.yaml]
                bridge: db
                tests: {db: {name: with DB, bridge: db}}
            """
        )
        + extra
    )
    return recipe


@pytest.fixture
def fake_runner(monkeypatch):
    monkeypatch.setattr(Runner, "program", (sys.executable, str(FAKE)))


def run_all(recipe: Path, overrides=()) -> list[str]:
    r = load_recipe(recipe, list(overrides))
    Runner(r, recipe_steps(r)).run()
    return [json.loads(line)["step"] for line in (r.run_dir / "calls.jsonl").read_text().splitlines()] if (r.run_dir / "calls.jsonl").is_file() else []


def actions(recipe: Path, overrides=()) -> dict[str, str]:
    r = load_recipe(recipe, list(overrides))
    return {p.step.name: p.action for p in plan(r, recipe_steps(r))}


def test_a_recipe_becomes_its_steps(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = load_recipe(write_recipe(tmp_path), ["STEPS=7"])
    steps = {s.name: s for s in recipe_steps(r)}
    assert list(steps) == [
        "cache: features",
        "bridge: Diffusion-Link",
        "bridge: Diffusion Bridge",
        "gap: modality-gap analysis",
        "caption: fit zs",
        "caption: test zs (2 rows)",
        "caption: fit sup",
        "caption: test sup (1 row)",
    ]
    dl = steps["bridge: Diffusion-Link"].command
    assert dl[:3] == ["fit", "--config", "bridge.yaml"] and "--run_dir=run/bridge/dl" in dl and "--trainer.max_steps=7" in dl
    assert "--data.init_args.store=run/stores/toy" in dl  # the store's name comes from the cache config's writer
    gap = steps["gap: modality-gap analysis"].command
    assert '--model.init_args.compare={"Diffusion Bridge": "run/bridge/db/export"}' in gap and "--model.init_args.pretrained=run/bridge/dl/export" in gap
    assert steps["caption: test sup (1 row)"].deps == ["cache: features", "caption: fit sup", "bridge: Diffusion Bridge"]
    assert steps["caption: test zs (2 rows)"].deps == ["cache: features", "caption: fit zs", "bridge: Diffusion-Link"]
    rows = next(a for a in steps["caption: test zs (2 rows)"].command if a.startswith("--model.init_args.rows="))
    assert json.loads(rows.split("=", 1)[1]) == {
        "raw": {"name": "raw", "bridge": None, "input": "audio"},
        "dl": {"name": "with DL", "bridge": "run/bridge/dl/export", "input": "audio"},
    }


def test_the_captioning_baselines_become_steps(tmp_path, monkeypatch):
    """A projection-decoding test row (fitted by the captioner: no bridge step) and Diffusion Bridge's own
    captioner, whose fit passes its training texts through a bridge row's export and waits for it."""
    monkeypatch.chdir(tmp_path)
    extra = """\
      pd:
        config: [caption.yaml]
        tests: {pd: {name: projection decoding, bridge: projection-decoding}}
      db-captioner:
        config: [caption.yaml]
        train_through: {bridge: db, t_start: 400}
        tests: {db: {name: DB's captioner, bridge: db}}
    """
    recipe = write_recipe(tmp_path)
    recipe.write_text(recipe.read_text() + textwrap.indent(textwrap.dedent(extra), "  "))
    steps = {s.name: s for s in recipe_steps(load_recipe(recipe))}
    assert steps["caption: test pd (1 row)"].deps == ["cache: features", "caption: fit pd"]
    rows = next(a for a in steps["caption: test pd (1 row)"].command if a.startswith("--model.init_args.rows="))
    assert json.loads(rows.split("=", 1)[1]) == {"pd": {"name": "projection decoding", "bridge": "projection-decoding", "input": "audio"}}
    fit = steps["caption: fit db-captioner"]
    assert '--model.init_args.train_through={"bridge": "run/bridge/db/export", "t_start": 400}' in fit.command
    assert fit.deps == ["cache: features", "bridge: Diffusion Bridge"]
    for bad in ("{bridge: nope}", "{bridge: db, t: 3}", "db"):
        recipe.write_text(recipe.read_text().replace("train_through: {bridge: db, t_start: 400}", f"train_through: {bad}"))
        with pytest.raises(RecipeError, match="train_through is {bridge: a bridge row's key"):
            load_recipe(recipe)
        recipe.write_text(recipe.read_text().replace(f"train_through: {bad}", "train_through: {bridge: db, t_start: 400}"))


def test_without_a_gap_analysis_only_the_bridges_a_captioner_reads_are_trained(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_recipe(tmp_path)  # the configs
    recipe = tmp_path / "captioning-only.yaml"
    recipe.write_text(
        textwrap.dedent(
            """\
            run_dir: run
            cache: cache.yaml
            gap: null
            compare_to: compared
            bridges:
              tested: {name: tested, config: [bridge.yaml]}
              through: {name: through, config: [bridge.yaml]}
              trained-on: {name: trained on, config: [bridge.yaml]}
              compared: {name: compared, config: [bridge.yaml]}
              unused: {name: unused, config: [bridge.yaml]}
            captioners:
              zs:
                config: [caption.yaml]
                train_through: {bridge: through, t_start: 400}
                tests: {t: {name: t, bridge: tested}, ms: {name: ms, bridge: mean-shift}, pd: {name: pd, bridge: projection-decoding}}
              sup:
                config: [caption.yaml]
                bridge: trained-on
                tests: {raw: {name: raw}}
            """
        )
    )
    steps = {s.name: s for s in recipe_steps(load_recipe(recipe))}
    assert [n for n, s in steps.items() if s.kind == "bridge"] == ["bridge: tested", "bridge: through", "bridge: trained on", "bridge: compared"]
    assert "bridge: through" in steps["caption: fit zs"].deps and "bridge: trained on" in steps["caption: fit sup"].deps
    assert "bridge: tested" in steps["caption: test zs (3 rows)"].deps
    # every test pairs its rows with the compare_to bridge's, so it reads that bridge: a retrained one reruns the tests
    assert all("bridge: compared" in steps[name].deps for name in ("caption: test zs (3 rows)", "caption: test sup (1 row)"))
    bridges = [s for s in recipe_steps(load_recipe(recipe, ["captioners={}"])) if s.kind == "bridge"]
    assert len(bridges) == 5  # no captioner and no gap analysis: every row trains (a bridges-only run)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("seeds: []\n", "seeds is empty"),
        ("sweeps: {t_start: [600]}\n", "at least two values"),
        ("sweeps: {hidden: [1, 2]}\n", "the sampling settings t_start and steps and the retrained blocks"),
        ("steps: {bridges: {}}\n", "not a kind of step"),
        ("colour: blue\n", "unknown key"),
    ],
)
def test_a_recipe_that_cannot_run_is_refused_before_anything_runs(tmp_path, monkeypatch, extra, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError, match=message):
        load_recipe(write_recipe(tmp_path, extra))


def test_overrides_and_their_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path)
    with pytest.raises(RecipeError, match="no variable CLAP"):
        load_recipe(recipe, ["CLAP=/x.pt"])
    with pytest.raises(RecipeError, match="not NAME=value"):
        load_recipe(recipe, ["seeds"])
    assert load_recipe(recipe, ["seeds=[0, 1]"]).seeds == [0, 1]
    (tmp_path / "bad.yaml").write_text("cache: cache.yaml\nbridges: {dl: {config: [missing.yaml]}}\n")
    with pytest.raises(RecipeError, match="missing.yaml does not exist"):
        load_recipe(tmp_path / "bad.yaml")


def test_a_changed_setting_reruns_exactly_the_steps_it_affects(tmp_path, monkeypatch, fake_runner):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path)
    assert len(run_all(recipe)) == 8
    assert set(actions(recipe).values()) == {"run", "reuse"} and [n for n, a in actions(recipe).items() if a == "run"] == ["cache: features"]
    (tmp_path / "variant.yaml").write_text("model: {init_args: {cross_weight: 0.5}}\n")  # Diffusion Bridge's config changes
    plan_now = actions(recipe)
    affected = ["cache: features", "bridge: Diffusion Bridge", "gap: modality-gap analysis", "caption: fit sup", "caption: test sup (1 row)"]
    assert [n for n, a in plan_now.items() if a == "run"] == affected
    (run := tmp_path / "run" / "calls.jsonl").unlink()
    assert run_all(recipe) == affected
    run.unlink()
    assert run_all(recipe, ["STEPS=5"]) == [
        "cache: features",
        "bridge: Diffusion-Link",
        "bridge: Diffusion Bridge",
        "gap: modality-gap analysis",
        "caption: test zs (2 rows)",
        "caption: fit sup",
        "caption: test sup (1 row)",
    ]
    text = describe_plan(load_recipe(recipe, ["STEPS=5"]), recipe_steps(load_recipe(recipe, ["STEPS=5"])))
    assert "reuse  bridge: Diffusion-Link  (unchanged)" in text and "$ diffusion-link fit --config bridge.yaml" in text


def test_a_step_made_again_makes_every_step_that_reads_it_run_again(tmp_path, monkeypatch, fake_runner):
    """Same settings, but the outputs were remade (here: one was lost; also a fit resumed after a kill):
    what reads them runs again, since the remade outputs may differ."""
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path)
    run_all(recipe)
    (tmp_path / "run" / "calls.jsonl").unlink()
    (tmp_path / "run/bridge/db/export/config.json").unlink()
    affected = ["cache: features", "bridge: Diffusion Bridge", "gap: modality-gap analysis", "caption: fit sup", "caption: test sup (1 row)"]
    assert [n for n, a in actions(recipe).items() if a == "run"] == affected
    assert run_all(recipe) == affected
    (tmp_path / "run" / "calls.jsonl").unlink()
    assert run_all(recipe) == ["cache: features"]  # and then all is reused


def test_a_store_with_another_checksum_reruns_everything_that_reads_it(tmp_path, monkeypatch, fake_runner):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path)
    run_all(recipe)
    (tmp_path / "run" / "calls.jsonl").unlink()
    monkeypatch.setenv("FAKE_STORE_CHECKSUM", "other")  # the cache step makes a different store (new encoder or data)
    assert len(run_all(recipe)) == 8


def test_a_failed_step_says_where_its_log_is_and_is_not_marked_done(tmp_path, monkeypatch, fake_runner, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FAKE_FAIL", "gap: modality-gap analysis")
    recipe = write_recipe(tmp_path)
    with pytest.raises(
        StepFailed, match=r"step 4/8 \(gap: modality-gap analysis\) failed \(exit status 3\).*run/logs/04-gap-modality-gap-analysis.log"
    ) as failed:
        run_all(recipe)
    assert "the fake stage broke" in str(failed.value)  # the end of its log, in the message
    assert "Traceback" in (tmp_path / "run/logs/04-gap-modality-gap-analysis.log").read_text()
    monkeypatch.delenv("FAKE_FAIL")
    (tmp_path / "run" / "calls.jsonl").unlink()
    assert run_all(recipe)[:2] == ["cache: features", "gap: modality-gap analysis"]  # the finished bridges are reused


def _run_in_background(tmp_path: Path, recipe: Path, env: dict, steps_only: bool = False) -> subprocess.Popen:
    """``diffusion-link run`` in a process of its own (with the stand-in stage); ``steps_only``: the steps
    without the report page and summary that end a run (they need a real run's files)."""
    script = tmp_path / "go.py"
    go = "Runner(r, recipe_steps(r)).run()" if steps_only else f"sys.exit(run_recipe({str(recipe)!r}))"
    script.write_text(
        "import sys\nfrom diffusion_link.run.runner import Runner\n"
        f"Runner.program = ({sys.executable!r}, {str(FAKE)!r})\n"
        "from diffusion_link.run import load_recipe, recipe_steps, run_recipe\n"
        f"r = load_recipe({str(recipe)!r})\n{go}\n"
    )
    return subprocess.Popen([sys.executable, str(script)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_fit_ends_the_run_non_zero_naming_the_step_and_the_rerun_resumes(tmp_path, signum):
    import os

    recipe = write_recipe(tmp_path)
    env = {**os.environ, "FAKE_SLOW": "bridge: Diffusion Bridge", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = _run_in_background(tmp_path, recipe, env)
    _wait_for(tmp_path / "run/bridge/db/checkpoints/last.ckpt")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, (out, err)
    assert f"stopped by {signal.Signals(signum).name} during step 3/8 (bridge: Diffusion Bridge)" in err
    assert "Run the same command again to go on (this fit resumes from its last checkpoint)" in err
    record = json.loads((tmp_path / "run/.steps/bridge-diffusion-bridge.json").read_text())
    assert record["status"] == "running"  # not done: the next run does it again
    stopped_at = json.loads((tmp_path / "run/bridge/db/checkpoints/last.ckpt").read_text())["step"]
    env.pop("FAKE_SLOW")
    proc = _run_in_background(tmp_path, recipe, env, steps_only=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    calls = [json.loads(line) for line in (tmp_path / "run/calls.jsonl").read_text().splitlines()]
    resumed = [c for c in calls if c["step"] == "bridge: Diffusion Bridge"][-1]
    assert resumed["ckpt_path"] == "run/bridge/db/checkpoints/last.ckpt" and resumed["started_at"] == stopped_at
    assert "(resumed)" in err and "up to date, reused" in err


def test_a_killed_runner_takes_its_step_with_it(tmp_path):
    import os

    recipe = write_recipe(tmp_path)
    env = {**os.environ, "FAKE_SLOW": "bridge: Diffusion-Link", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = _run_in_background(tmp_path, recipe, env)
    _wait_for(tmp_path / "run/bridge/dl/checkpoints/last.ckpt")
    pid_file = tmp_path / "run/bridge/dl/pid"
    _wait_for(pid_file)
    proc.kill()
    proc.communicate(timeout=30)
    step_pid = int(pid_file.read_text())
    end = time.time() + 10
    while time.time() < end:
        try:
            os.kill(step_pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the step outlived its runner")


def test_signals_are_restored_after_a_run(tmp_path, monkeypatch, fake_runner):
    monkeypatch.chdir(tmp_path)
    before = signal.getsignal(signal.SIGTERM)
    run_all(write_recipe(tmp_path))
    assert signal.getsignal(signal.SIGTERM) == before


def test_dry_run_checks_the_inputs_for_real(tmp_path, monkeypatch, capsys):
    from diffusion_link.run import run_recipe

    monkeypatch.chdir(tmp_path)
    csv_dir, audio = tmp_path / "csv", tmp_path / "audio" / "train"
    csv_dir.mkdir()
    audio.mkdir(parents=True)
    for split in ("train", "val", "test"):
        (csv_dir / f"{split}.csv").write_text("audiocap_id,youtube_id,start_time,caption\n1,abc,30,a dog barks\n2,def,0,rain falls\n")
    (audio / "abc_30.flac").write_bytes(b"x")  # found with the pattern {youtube_id}_{start_time}; def_0 is not there
    init = f"{{csv_dir: {csv_dir}, audio_dir: {audio.parent}, filename: '{{youtube_id}}_{{start_time}}'}}"
    data = f"data: {{class_path: diffusion_link.data.AudioCapsCSV, init_args: {init}}}\n"
    recipe = write_recipe(tmp_path, data + "encoder: {clap: {checkpoint: /nowhere/630k.pt}}\nsweeps: {split: val, t_start: [200, 5000]}\n")
    assert run_recipe(str(recipe), dry_run=True) == 1
    out = capsys.readouterr().out
    assert "ok      AudioCaps train: 2 clips" in out and "1 found" in out and "def_0.*" in out
    assert "PROBLEM CLAP checkpoint /nowhere/630k.pt does not exist" in out
    assert "PROBLEM sweep t_start = 5000" in out and "ok      sweep t_start = 200" in out
    (tmp_path / "wrong.yaml").write_text(recipe.read_text().replace("{youtube_id}_{start_time}", "{audiocap_id}"))
    assert run_recipe(str(tmp_path / "wrong.yaml"), dry_run=True) == 1
    wrong = capsys.readouterr().out
    assert "PROBLEM AudioCaps train: 2 clips" in wrong and "0 found" in wrong and "name pattern (AUDIOCAPS_NAME)" in wrong


def test_the_dry_run_prints_each_steps_expected_time(tmp_path, monkeypatch, fake_runner):
    monkeypatch.chdir(tmp_path)
    recipe = write_recipe(tmp_path, "steps: {bridge: {minutes: 2.5}, caption-fit: {minutes: 1}}\n")
    r = load_recipe(recipe)
    text = describe_plan(r, recipe_steps(r))
    line = next(x for x in text.splitlines() if "bridge: Diffusion-Link  (" in x)
    assert line.endswith("~2.5 min (the recipe's estimate for a bridge step)")
    assert "Expected: about 7.0 min of steps, plus 4 step(s) with no estimate." in text  # 2 bridges, 2 captioner fits
    run_all(recipe)
    record = tmp_path / "run/.steps/bridge-diffusion-link.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "seconds": 90.0}))
    text = describe_plan(r, recipe_steps(load_recipe(recipe, ["STEPS=5"])))  # the bridges change; the last run's time is what counts
    assert "bridge: Diffusion-Link  (its settings or inputs changed)  ~1.5 min (its last run here)" in text
    # a step that never ran here: the recipe's estimate at the pace of the steps this folder's records show, over the
    # steps the plan reuses (records of the current settings) that have an estimate
    steps = tmp_path / "run/.steps"
    for name, seconds in {"bridge-diffusion-bridge": 90.0, "caption-fit-zs": 30.0, "gap-modality-gap-analysis": 600.0}.items():
        rec = steps / f"{name}.json"
        rec.write_text(json.dumps({**json.loads(rec.read_text()), "seconds": seconds}))
    (steps / "caption-fit-sup.json").unlink()  # never ran here
    text = describe_plan(r, recipe_steps(r))
    line = next(x for x in text.splitlines() if "caption: fit sup  (" in x)  # (1.5 + 1.5 + 0.5) / (2.5 + 2.5 + 1) = 0.583; the gap has no estimate
    assert line.endswith("~0.6 min (the recipe's 1 min for a caption-fit step x 0.58, the pace of the 3 step(s) recorded in this run folder)"), line
    changed = describe_plan(r5 := load_recipe(recipe, ["STEPS=5"]), recipe_steps(r5))  # the bridges' records are of other settings
    assert "x 0.50, the pace of the 1 step(s) recorded" in changed
    resumed = steps / "caption-fit-zs.json"
    resumed.write_text(json.dumps({**json.loads(resumed.read_text()), "resumed": True}))  # a remainder says nothing of the pace
    assert "x 0.60, the pace of the 2 step(s) recorded" in describe_plan(r, recipe_steps(r))
    with pytest.raises(RecipeError, match="minutes is a number"):
        load_recipe(write_recipe(tmp_path, "steps: {bridge: {minutes: soon}}\n"))


# -- the Makefile's seed and ablation targets, as the steps they make (no step runs) ----------------------------

REPO = Path(__file__).resolve().parents[1]


def make_overrides(target: str, **variables) -> tuple[str, list[str]]:
    """The recipe and overrides a Makefile target passes to `diffusion-link run` (make -n: nothing runs)."""
    import shlex

    settings = [f"{k}={v}" for k, v in variables.items()]
    out = subprocess.run(["make", "-n", target, "VENV=/nonexistent", *settings], cwd=REPO, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.replace("\\\n", " ").splitlines() if "diffusion-link run " in x)
    words = shlex.split(line)
    return words[words.index("run") + 1], words[words.index("run") + 2 :]


def test_demo_caption_seeds_makes_every_captioning_row_per_seed_and_the_table_across_them(monkeypatch):
    monkeypatch.chdir(REPO)
    recipe, overrides = make_overrides("demo-caption-seeds", SEEDS="0 1 2")
    assert recipe == "recipes/demo.yaml" and overrides == ["seeds=[0, 1, 2]", "gap=null"]
    steps = recipe_steps(load_recipe(recipe, overrides))
    assert not [s for s in steps if s.kind in ("gap", "seeds")]  # the captioning side only
    tests = [s for s in steps if s.kind == "caption-test"]
    assert len(tests) == 3 and all(f"(seed {seed})" in s.name for s, seed in zip(tests, [0, 1, 2]))  # demo.yaml: one captioner
    bridges = [s.name for s in steps if s.kind == "bridge"]  # the rows a captioning row reads (demo.yaml's two: every row)
    assert bridges == [f"bridge: {row}{tag}" for tag in (" (seed 0)", " (seed 1)", " (seed 2)") for row in ("Diffusion-Link", "Diffusion Bridge")]
    with_gap = [s.name for s in recipe_steps(load_recipe(recipe, ["seeds=[0, 1]"])) if s.kind == "bridge"]
    assert len(with_gap) == 2 * 2  # with a gap analysis every row of the gap table trains (demo.yaml: two)
    with_gap = {s.name.rsplit(" (seed", 1)[0] for s in recipe_steps(load_recipe("recipes/demo-baselines.yaml", ["seeds=[0, 1]"])) if s.kind == "bridge"}
    assert {"bridge: w/o cross-sample loss", "bridge: w/o topology loss"} <= with_gap  # the loss ablations: demo-baselines
    recipe, overrides = make_overrides("demo-caption-seeds", SEEDS="0 1", CAPTION_SEEDS_RECIPE="recipes/demo-baselines.yaml")
    assert recipe == "recipes/demo-baselines.yaml" and overrides == ["seeds=[0, 1]", "gap=null"]
    every = [s for s in recipe_steps(load_recipe(recipe, overrides)) if s.kind == "caption-test"]
    assert len(every) == 2 * 6  # every captioner of the baselines recipe, per seed
    trained = {s.name.split(": ", 1)[1].rsplit(" (seed", 1)[0] for s in recipe_steps(load_recipe(recipe, overrides)) if s.kind == "bridge"}
    read = {"Diffusion-Link", "Diffusion Bridge", "regressor (no diffusion)", "Diffusion-Link (K = 1)", "Diffusion-Link (noise start)"}
    assert trained == read | {"Diffusion Bridge (our preprocessing)"}  # not the ablations w/o cross-sample / topology loss
    last = steps[-1]
    assert last.kind == "caption-seeds" and last.deps == [s.name for s in tests]
    assert last.command == [
        "caption-seeds",
        "artifacts/seed-0/caption",
        "artifacts/seed-1/caption",
        "artifacts/seed-2/caption",
        "--out",
        "artifacts/seeds",
        "--manifest",
        "data/demo/manifest.json",
    ]


def test_audiocaps_ablations_select_every_setting_on_val(monkeypatch):
    monkeypatch.chdir(REPO)
    recipe, overrides = make_overrides("ablations", SEEDS="0", BLOCKS="1 2", T_STARTS="200 600", KS="1 5")
    steps = recipe_steps(load_recipe(recipe, overrides))
    sweeps = [s for s in steps if s.kind == "sweep"]
    swept = {"t_start": (200, 600), "steps": (1, 5), "blocks": (1, 2)}
    assert sorted(s.name for s in sweeps) == sorted(f"sweep: {k} = {v}" for k, vs in swept.items() for v in vs)
    assert all("--data.init_args.test_split=val" in s.command for s in sweeps)  # t*, K and blocks: each on val
    blocks = {s.name: s for s in steps if s.name.startswith("sweep: fit blocks")}
    assert [s.name for s in blocks.values()] == ["sweep: fit blocks = 1", "sweep: fit blocks = 2"]
    assert "--model.init_args.bridge.blocks=2" in blocks["sweep: fit blocks = 2"].command
    b2 = next(s for s in sweeps if s.name == "sweep: blocks = 2")
    assert "sweep: fit blocks = 2" in b2.deps and "--model.init_args.pretrained=artifacts/audiocaps/bridge/ablations/blocks-2/bridge/export" in b2.command
    # the test split's gap table compares the recipe's rows only: no ablation is read off test
    (gap,) = [s for s in steps if s.kind == "gap"]
    assert not any("test_split" in a for a in gap.command) and "blocks" not in " ".join(gap.command)
    plots = [s.command[-1] for s in steps if s.kind == "sweep-plot"]
    assert plots == ["artifacts/audiocaps/bridge/ablations"] * 3
