"""The cache stage end to end through the CLI: offline, deterministic, resumable, DDP-safe."""

import csv
import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import yaml
from helpers import assert_same_store, cache_config, run_cli, store_arrays

from diffusion_link.cli import main
from diffusion_link.data.store import FeatureStore


def _store(tmp_path, name="demo"):
    return (tmp_path / "stores" / name).resolve()


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory, tiny_demo):
    """One uninterrupted, single-process run: the store every other run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    main(["predict", "--config", str(cache_config(tmp, tiny_demo))])
    return _store(tmp)


def test_builds_the_demo_store_offline(tmp_path, tiny_demo, no_network):
    main(["predict", "--config", str(cache_config(tmp_path, tiny_demo))])
    assert no_network == []  # not one connection attempt, not even to this machine
    store = FeatureStore(_store(tmp_path))
    assert store.meta["status"] == "complete" and store.dim == 512
    assert store.encoder["weights"] == "random-init(seed=0)"
    assert store.meta["rows"] == {"train": 6, "val": 3, "test": 3}
    val = store.split("val")
    assert np.asarray(val["text_embeddings"][0]).shape == (5, 512)
    assert len(store.split("train")["captions"][0]) == 3  # the demo has three captions per training clip
    assert _store(tmp_path).name.startswith("demo-") and store.meta["checksum"] in _store(tmp_path).name


def test_two_runs_are_bit_identical_and_unchanged_settings_reuse(tmp_path, tiny_demo, reference_store, capsys):
    config = cache_config(tmp_path, tiny_demo)
    main(["predict", "--config", str(config)])
    assert_same_store(reference_store, _store(tmp_path))
    stamp = (_store(tmp_path) / "train" / "state.json").stat().st_mtime_ns
    main(["predict", "--config", str(config)])  # same settings: nothing recomputed or rewritten
    assert (_store(tmp_path) / "train" / "state.json").stat().st_mtime_ns == stamp


def test_changed_setting_gives_a_new_store(tmp_path, tiny_demo, reference_store):
    main(["predict", "--config", str(cache_config(tmp_path, tiny_demo, encoder={"crop": "chunk_average"}))])
    assert _store(tmp_path).name != reference_store.name
    assert FeatureStore(_store(tmp_path)).encoder["crop"] == "chunk_average"


def test_kill_and_resume_equals_uninterrupted(tmp_path, tiny_demo, reference_store):
    config = cache_config(tmp_path, tiny_demo, shard_size=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "diffusion_link.cli", "predict", "--config", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    shards = tmp_path / "stores"
    deadline = time.time() + 300
    written = []
    while time.time() < deadline and proc.poll() is None:
        written = [p for p in shards.glob("*/shards/*/0*") if p.is_dir()]
        if len(written) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 3 <= len(written) < 12, "the run must be killed part-way"
    store_dir = next(shards.glob("demo-*"))
    assert json.loads((store_dir / "store.json").read_text())["status"] == "incomplete"
    before = {p: p.stat().st_mtime_ns for p in store_dir.glob("shards/*/0*")}
    main(["predict", "--config", str(config)])
    assert FeatureStore(store_dir).meta["status"] == "complete"
    assert not (store_dir / "shards").exists()
    assert len(before) >= 3
    # shard size 1 against the reference's 2 changes the checksum, not the content
    assert store_dir.name != reference_store.name
    x, y = store_arrays(store_dir), store_arrays(reference_store)
    for split in x:
        assert x[split]["clip_id"] == y[split]["clip_id"]
        np.testing.assert_allclose(x[split]["audio"], y[split]["audio"], atol=1e-5)


def test_resume_recomputes_only_missing_shards(tmp_path, tiny_demo, monkeypatch):
    """A store with some shards on disk: only the others reach predict_step."""
    from diffusion_link.cache.module import CacheModule

    config = cache_config(tmp_path, tiny_demo)
    main(["predict", "--config", str(config)])
    store_dir = _store(tmp_path)
    # turn the complete store back into a half-written one: shards of train only
    from datasets import load_from_disk

    meta = json.loads((store_dir / "store.json").read_text())
    meta["status"] = "incomplete"
    (store_dir / "store.json").write_text(json.dumps(meta))
    train = load_from_disk(str(store_dir / "train"))
    for i in range(3):
        shard = store_dir / "shards" / "train" / f"{i:06d}"
        train.select(range(2 * i, 2 * i + 2)).save_to_disk(str(shard))
        (shard / "failures.json").write_text("[]")
    calls = []
    original = CacheModule.predict_step
    monkeypatch.setattr(CacheModule, "predict_step", lambda self, b, *a: calls.append(b["split"]) or original(self, b, *a))
    main(["predict", "--config", str(config)])
    assert sorted(set(calls)) == ["test", "val"]
    assert FeatureStore(store_dir).meta["rows"]["train"] == 6


def test_bad_audio_goes_to_failures_csv(tmp_path, tiny_demo):
    rows = []
    clips = tmp_path / "clips"
    clips.mkdir()
    good = sorted((tiny_demo / "audio" / "train").glob("*.flac"))[:3]
    for i, path in enumerate(good):
        (clips / f"good{i}.flac").write_bytes(path.read_bytes())
        rows.append([i, f"good{i}", 0, f"good clip {i}"])
    (clips / "corrupt.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    sf.write(clips / "empty.wav", np.zeros(0, np.float32), 16000)
    rows += [[10, "corrupt", 0, "x"], [11, "empty", 0, "y"], [12, "missing", 0, "z"]]
    (tmp_path / "csv").mkdir()
    with open(tmp_path / "csv" / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        w.writerows(rows)
    source = {"class_path": "diffusion_link.data.AudioCapsCSV", "init_args": {"csv_dir": str(tmp_path / "csv"), "audio_dir": str(clips)}}
    config = cache_config(tmp_path, tiny_demo, source=source, name="bad")
    data = yaml.safe_load(config.read_text())
    data["data"]["init_args"]["splits"] = ["train"]
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(RuntimeError, match=r"3 of 6 clips of split 'train' failed \(50%\), above max_failure_rate 25%"):
        main(["predict", "--config", str(config)])  # the default bound: a run that loses half its clips fails
    assert not _store(tmp_path, "bad").exists()  # the link is not moved to a failed store
    data["trainer"]["callbacks"][0]["init_args"]["max_failure_rate"] = 0.5
    config.write_text(yaml.safe_dump(data))
    main(["predict", "--config", str(config)])
    store = FeatureStore(_store(tmp_path, "bad"))
    assert sorted(store.split("train")["clip_id"]) == ["good0_0", "good1_0", "good2_0"]
    with open(store.path / "failures.csv") as f:
        failures = {r["clip_id"]: r for r in csv.DictReader(f)}
    assert set(failures) == {"corrupt_0", "empty_0", "missing_0"}
    assert "unreadable" in failures["corrupt_0"]["reason"]
    assert "empty" in failures["empty_0"]["reason"]
    assert "not found" in failures["missing_0"]["reason"] and failures["missing_0"]["path"].endswith("missing")
    assert "no file named missing{.wav,.flac," in failures["missing_0"]["reason"] and str(clips) in failures["missing_0"]["reason"]
    assert store.meta["failures"] == 3
    with open(store.path / "audio.csv") as f:  # every cached clip's audio file, for the report's players
        located = {r["clip_id"]: r["path"] for r in csv.DictReader(f)}
    assert located == {f"good{i}_0": str((clips / f"good{i}.flac").resolve()) for i in range(3)}


@pytest.mark.slow  # make test-full (DDP / a model trained to convergence: the fast suite stays under 5 min)
def test_ddp_two_processes_equal_one(tmp_path, tiny_demo):
    """Same rows, same order, same bits. Both runs use one BLAS thread per process: a different
    thread count changes float summation order (Lightning gives each DDP process cores/processes)."""
    one_thread = {"OMP_NUM_THREADS": "1"}
    single = run_cli(["predict", "--config", str(cache_config(tmp_path / "one", tiny_demo, shard_size=2))], env=one_thread)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = run_cli(
        [
            "predict",
            "--config",
            str(cache_config(tmp_path / "two", tiny_demo, shard_size=2)),
            "--trainer.strategy=ddp",
            "--trainer.devices=2",
            "--trainer.accelerator=cpu",
        ],
        env=one_thread,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert_same_store(_store(tmp_path / "one"), _store(tmp_path / "two"))
    # 6 train clips in 3 shards over 2 ranks: the sampler pads rank 1 with a repeated shard
    assert FeatureStore(_store(tmp_path / "two")).meta["rows"] == {"train": 6, "val": 3, "test": 3}


def test_all_clips_missing_fails_and_a_corrected_folder_gives_a_new_store(tmp_path, tiny_demo):
    """The new user's path: split folders given as symlinks; first the wrong audio folder (every clip
    missing: the run fails and leaves no reusable store), then the right one (a new store, not the empty one)."""
    real = tmp_path / "real"
    (real / "train").mkdir(parents=True)
    rows = []
    for i, path in enumerate(sorted((tiny_demo / "audio" / "train").glob("*.flac"))[:3]):
        (real / "train" / f"clip{i}.flac").write_bytes(path.read_bytes())
        rows.append([i, f"clip{i}", 0, f"clip {i}"])
    (tmp_path / "audio").mkdir()
    (tmp_path / "audio" / "train").symlink_to(real / "train", target_is_directory=True)  # a symlinked split folder
    (tmp_path / "csv").mkdir()
    with open(tmp_path / "csv" / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        w.writerows(rows)

    def config(audio_dir):
        source = {"class_path": "diffusion_link.data.AudioCapsCSV", "init_args": {"csv_dir": str(tmp_path / "csv"), "audio_dir": str(audio_dir)}}
        path = cache_config(tmp_path, tiny_demo, source=source, name="own")
        data = yaml.safe_load(path.read_text())
        data["data"]["init_args"]["splits"] = ["train"]
        path.write_text(yaml.safe_dump(data))
        return path

    with pytest.raises(RuntimeError, match="split 'train' has no usable clip: 3 of 3 failed"):
        main(["predict", "--config", str(config(tmp_path / "wrong"))])
    [failed] = (tmp_path / "stores").glob("own-*")
    meta = json.loads((failed / "store.json").read_text())
    assert meta["status"] == "failed" and "no usable clip" in meta["reason"] and not (failed / "train").exists()
    assert not _store(tmp_path, "own").exists()
    with pytest.raises(ValueError, match="failed store, not for use"):
        FeatureStore(failed)
    with open(failed / "failures.csv") as f:
        assert all("does not exist" in r["reason"] for r in csv.DictReader(f))  # names the folder looked in
    main(["predict", "--config", str(config(tmp_path / "audio"))])
    store = FeatureStore(_store(tmp_path, "own"))
    assert store.path != failed and store.meta["status"] == "complete" and store.meta["rows"] == {"train": 3}
    assert store.meta["failures"] == 0
