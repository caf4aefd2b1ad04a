import re
import json

import pytest
import yaml
from helpers import cache_config, run_cli

from diffusion_link.doctor import checks


def test_help_explains_the_stages():
    result = run_cli(["--help"])
    assert result.returncode == 0
    usage = result.stdout.splitlines()[0]
    assert usage.startswith("usage: diffusion-link") and all(c in usage for c in ("fit", "predict", "demo", "doctor", "report"))
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


def test_doctor_and_the_metrics_resolve_corenlp_and_fense_the_same_way(tmp_path, monkeypatch):
    from diffusion_link.evaluation.captioning import CORENLP_HOW, FENSE_HOW, available_metrics, prepare_cache

    monkeypatch.setenv("AAC_METRICS_CACHE_PATH", str(tmp_path / "aac"))
    monkeypatch.setenv("FENSE_DATA", str(tmp_path / "no-fense"))
    monkeypatch.delenv("DIFFUSION_LINK_CORENLP_DIR", raising=False)
    by_name = lambda: {c.name: c for c in checks()}  # noqa: E731
    corenlp = by_name()["Stanford CoreNLP 3.6.0 jars (SPICE, SPIDEr)"]
    fense = by_name()["FENSE error checker + sentence-BERT"]
    assert not corenlp.ok and corenlp.how == CORENLP_HOW and not fense.ok and fense.how == FENSE_HOW
    skipped = available_metrics(prepare_cache(), fense=True)[1]  # the metrics say the same
    assert any(CORENLP_HOW in w for w in skipped) and any(FENSE_HOW in w for w in skipped)
    jars = tmp_path / "corenlp"
    jars.mkdir()
    for jar in ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar"):
        (jars / jar).write_bytes(b"PK")
    monkeypatch.setenv("DIFFUSION_LINK_CORENLP_DIR", str(jars))  # what the metrics honour, doctor honours
    assert by_name()["Stanford CoreNLP 3.6.0 jars (SPICE, SPIDEr)"].found == str(jars)


def test_a_demo_stopped_by_sigterm_says_where_and_does_not_mark_the_step_done(tmp_path, monkeypatch):
    import os
    import signal

    import diffusion_link.lightning_cli
    from diffusion_link import pipeline

    monkeypatch.chdir(tmp_path)
    calls = []

    def stopped_step(args, description=None, callbacks=None, trim_memory=True):  # what Lightning does on SIGTERM: the running stage ends early and returns
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


def test_demo_steps_print_one_line_each_and_keep_their_output_in_a_log(tmp_path, monkeypatch, capfd):
    import os
    import sys

    import diffusion_link.lightning_cli
    from diffusion_link import pipeline

    monkeypatch.chdir(tmp_path)

    def noisy_step(args, description=None, callbacks=None, trim_memory=True):  # Lightning's chatter, stderr, a native write
        assert [type(c).__name__ for c in callbacks] == ["StepProgress"]
        print("GPU available: False, used: False")
        print("a warning from inside a stage", file=sys.stderr)
        os.write(2, b"native stderr\n")
        if args == ["test"]:
            raise RuntimeError("the stage broke")
        (tmp_path / "out-1").write_text("done")

    monkeypatch.setattr(diffusion_link.lightning_cli, "run", noisy_step)
    steps = [pipeline.Step("first step", ["fit"], [tmp_path / "out-1"]), pipeline.Step("second", ["test"], [tmp_path / "out-2"])]
    with pytest.raises(RuntimeError, match="the stage broke"):
        pipeline.run(steps)
    console = capfd.readouterr()
    lines = (console.out + console.err).strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[ 1/2] first step") and lines[0].endswith(" min")
    assert lines[1].startswith("[ 2/2] second") and "FAILED" in lines[1] and "artifacts/logs/02-second.log" in lines[1]
    first = (tmp_path / "artifacts/logs/01-first-step.log").read_text()
    assert "$ diffusion-link fit" in first and "GPU available" in first and "a warning from inside a stage" in first and "native stderr" in first
    assert "Traceback" in (tmp_path / "artifacts/logs/02-second.log").read_text()  # the failure's traceback is kept
    assert json.loads(steps[0].stamp().read_text())["log"].endswith("01-first-step.log") and not steps[1].stamp().exists()
    print("after the demo", flush=True)  # the console is this process's own again
    assert capfd.readouterr().out == "after the demo\n"
    steps[1].outputs = []  # a second run: the first step is reused, one line
    steps = steps[:1]
    pipeline.run(steps)
    assert re.fullmatch(r"\[ 1/1] first step +up to date, reused\n", capfd.readouterr().out)


def test_step_progress_is_one_bar_over_the_whole_fit():
    import io

    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from diffusion_link.lightning_cli import StepProgress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = StepProgress("[1/1] fit", stream)
    trainer = L.Trainer(max_epochs=3, limit_train_batches=4, limit_val_batches=1, logger=False, enable_checkpointing=False, callbacks=[progress])
    trainer.fit(BoringModel())
    assert progress.finished == [(12, 12)]  # one bar over the 3 epochs' 12 steps, not one per epoch
    assert "[1/1] fit" in stream.getvalue() and "/12 " in stream.getvalue()
    trainer.test(BoringModel(), verbose=False)
    assert progress.finished[-1][0] == progress.finished[-1][1] > 0
    quiet = io.StringIO()  # not a terminal (a CI log): no bar, a plain line a minute at most
    progress = StepProgress("[1/1] fit", quiet)
    L.Trainer(max_steps=5, logger=False, enable_checkpointing=False, limit_val_batches=0, callbacks=[progress]).fit(BoringModel())
    assert progress.finished == [(5, 5)] and quiet.getvalue() == ""


def test_lightnings_tips_are_dropped_and_its_run_messages_kept():
    import logging

    from diffusion_link.lightning_cli import _NoTips

    record = lambda msg: logging.LogRecord("lightning.pytorch", logging.INFO, __file__, 1, msg, None, None)  # noqa: E731
    assert not _NoTips.filter(record("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"))
    assert _NoTips.filter(record("GPU available: False, used: False"))
