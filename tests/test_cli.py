import yaml
from helpers import cache_config, run_cli

from diffusion_link.doctor import checks


def test_help_explains_the_stages():
    result = run_cli(["--help"])
    assert result.returncode == 0
    usage = result.stdout.splitlines()[0]
    assert usage.startswith("usage: diffusion-link")
    # one generated list of commands: Lightning's stages and ours, each with its help line
    for word in ("fit", "validate", "test", "predict", "run", "demo", "report", "doctor", "seeds", "sweep", "recipes/demo.yaml", "--run_dir"):
        assert word in result.stdout, word
    run_help = run_cli(["run", "--help"]).stdout
    assert "--dry-run" in run_help and "NAME=value" in run_help


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


def test_a_resumed_fits_progress_starts_at_its_restored_step(tmp_path):
    """Resumed at step 4 of 6, the bar counts 4..6, not 0..2 (issue 18: a demo fit resumed at step 100 of 400
    showed '17/400' a minute later)."""
    import io

    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    from diffusion_link.lightning_cli import StepProgress

    quiet = dict(logger=False, enable_checkpointing=False, limit_val_batches=0)
    first = L.Trainer(max_steps=4, enable_progress_bar=False, **quiet)
    first.fit(BoringModel())
    first.save_checkpoint(tmp_path / "last.ckpt")
    progress = StepProgress("[1/1] fit", io.StringIO())
    L.Trainer(max_steps=6, callbacks=[progress], **quiet).fit(BoringModel(), ckpt_path=tmp_path / "last.ckpt")
    assert progress.finished == [(6, 6)]


def test_lightnings_tips_are_dropped_and_its_run_messages_kept():
    import logging

    from diffusion_link.lightning_cli import _NoTips

    record = lambda msg: logging.LogRecord("lightning.pytorch", logging.INFO, __file__, 1, msg, None, None)  # noqa: E731
    assert not _NoTips.filter(record("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]"))
    assert _NoTips.filter(record("GPU available: False, used: False"))


def test_a_stage_stopped_by_sigterm_exits_143_and_keeps_its_last_checkpoint(tmp_path, demo_store):
    """Lightning stops a fit on SIGTERM with its SIGTERMException, a SystemExit without a code (status 0):
    the command turns it into 143, so a pre-empted job never reports success; the resume checkpoint stays."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from helpers import REPO, bridge_updates, repo_config

    updates = bridge_updates(tmp_path, demo_store, "long", steps=100_000)
    updates["trainer"]["check_val_every_n_epoch"] = 10_000
    config = repo_config("configs/bridge/demo.yaml", tmp_path, updates)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "diffusion_link", "fit", "--config", str(config), "--checkpoint_every=2"], env=env, cwd=tmp_path)
    last = tmp_path / "long" / "checkpoints" / "last.ckpt"
    end = time.time() + 240
    while not last.is_file():
        assert proc.poll() is None and time.time() < end, "the fit ended or never saved a checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 143
    assert last.is_file() and not (tmp_path / "long" / "export").exists()  # nothing half-trained is exported
