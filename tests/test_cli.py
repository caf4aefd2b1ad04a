import pytest
import yaml
from helpers import cache_config, run_cli

from diffusion_link.doctor import checks


def test_help_explains_the_stages():
    result = run_cli(["--help"])
    assert result.returncode == 0
    for word in (
        "encoder",
        "cache",
        "bridge",
        "caption",
        "predict",
        "demo",
        "doctor",
        "configs/encoder/demo.yaml",
        "configs/cache/demo.yaml",
        "configs/bridge/gap-demo.yaml",
    ):
        assert word in result.stdout


def test_print_config_resolves_the_demo_config(tmp_path, tiny_demo):
    result = run_cli(["predict", "--config", str(cache_config(tmp_path, tiny_demo)), "--print_config"])
    assert result.returncode == 0, result.stderr[-2000:]
    config = yaml.safe_load(result.stdout)
    assert config["model"]["class_path"] == "diffusion_link.cache.CacheModule"
    assert config["model"]["init_args"]["encoder"]["crop"] == "centre"
    assert config["seed_everything"] == 0


def test_doctor_lists_assets_and_how_to_get_missing_ones():
    result = run_cli(["doctor", "--clap-checkpoint", "/nowhere/630k-audioset-best.pt"])
    assert result.returncode == 0, result.stdout  # the required, pip-installable assets are present
    assert "ok      demo recordings" in result.stdout
    assert "630k-audioset-best.pt" in result.stdout and "absent" in result.stdout
    names = {c.name: c for c in checks()}
    assert names["PTB tokenizer jar"].ok and names["SmolLM2-135M-Instruct (GGUF)"].ok


def test_a_demo_stopped_by_sigterm_says_where_and_does_not_mark_the_step_done(tmp_path, monkeypatch):
    import os
    import signal

    import diffusion_link.lightning_cli
    from diffusion_link import pipeline

    monkeypatch.chdir(tmp_path)
    calls = []

    def stopped_step(args, description=None):  # what Lightning does on SIGTERM: the running stage ends early and returns
        calls.append(args)
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(diffusion_link.lightning_cli, "run", stopped_step)
    before = signal.getsignal(signal.SIGTERM)
    steps = [pipeline.Step("first", ["fit"], [tmp_path / "out-1"]), pipeline.Step("second", ["test"], [tmp_path / "out-2"])]
    with pytest.raises(pipeline.Interrupted, match=r"during step 1/2 \(first\)"):
        pipeline.run(steps)
    assert calls == [["fit"]]  # the second step never started
    assert not steps[0].stamp().exists()  # an interrupted step is not reused next time
    assert signal.getsignal(signal.SIGTERM) == before  # the previous handler is back
