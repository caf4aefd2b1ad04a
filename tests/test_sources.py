import csv
import hashlib
import json

import datasets
import numpy as np
import soundfile as sf

from diffusion_link.data.audiocaps import AudioCapsCSV, AudioCapsHF
from diffusion_link.data.demo import build_demo


def _write_audiocaps(tmp_path):
    """Official layout: val with five captions per clip, one clip never downloaded."""
    (tmp_path / "csv").mkdir()
    (tmp_path / "clips").mkdir()
    rows = []
    for i, yid in enumerate(["abc", "def", "gone"]):
        for k in range(5):
            rows.append([i * 5 + k, yid, 30, f"caption {k} of  {yid}"])
        if yid != "gone":
            sf.write(tmp_path / "clips" / f"{yid}_30.wav", np.zeros(8000, np.float32) + 0.1, 16000)
    with open(tmp_path / "csv" / "val.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["audiocap_id", "youtube_id", "start_time", "caption"])
        w.writerows(rows)
    return AudioCapsCSV(str(tmp_path / "csv"), str(tmp_path / "clips"), filename="{youtube_id}_{start_time}")


def test_csv_source_groups_captions_and_reports_missing(tmp_path):
    source = _write_audiocaps(tmp_path)
    records = source.records("val")
    assert [r.clip_id for r in records] == ["abc_30", "def_30", "gone_30"]
    assert all(len(r.captions) == 5 for r in records)
    assert records[0].captions[0] == "caption 0 of abc"  # whitespace-normalised
    assert len(source.load(records[0], "val", 48_000)) == 24_000
    import pytest

    from diffusion_link.data.audio import AudioDecodeError

    with pytest.raises(AudioDecodeError, match="file not found"):
        source.load(records[2], "val", 48_000)


def test_hf_source_bytes_and_paths(tmp_path):
    sf.write(tmp_path / "x.wav", np.zeros(4800, np.float32) + 0.2, 48000)
    data = (tmp_path / "x.wav").read_bytes()
    # one row per caption, audio as datasets.Audio(bytes)
    per_caption = datasets.Dataset.from_dict(
        {"youtube_id": ["x", "x", "y"], "start_time": [0, 0, 5], "caption": ["one", "two", "three"], "audio": [{"bytes": data, "path": None}] * 3},
    ).cast_column("audio", datasets.Audio(decode=False))
    # list-of-captions column, audio as paths
    listed = datasets.Dataset.from_dict({"id": ["p"], "captions": [["a", "b"]], "file": [str(tmp_path / "x.wav")]})
    datasets.DatasetDict({"validation": per_caption}).save_to_disk(str(tmp_path / "hf"))
    listed.save_to_disk(str(tmp_path / "hf2"))

    source = AudioCapsHF(str(tmp_path / "hf"), split_names={"val": "validation"})
    records = source.records("val")
    assert [(r.clip_id, r.captions) for r in records] == [("x_0", ["one", "two"]), ("y_5", ["three"])]
    assert len(source.load(records[0], "val", 48_000)) == 4800
    source2 = AudioCapsHF(str(tmp_path / "hf2"), audio_column="file", caption_column="captions", id_column="id")
    [record] = source2.records("train")
    assert record.captions == ["a", "b"] and len(source2.load(record, "train", 16_000)) == 1600


def test_demo_build_is_reproducible_bit_for_bit(tmp_path):
    a = build_demo(tmp_path / "a", n_train=4, n_val=2, n_test=2)
    b = build_demo(tmp_path / "b", n_train=4, n_val=2, n_test=2)
    files_a = json.loads((a / "manifest.json").read_text())["files"]
    assert files_a == json.loads((b / "manifest.json").read_text())["files"]
    for rel, digest in files_a.items():
        assert hashlib.sha256((b / rel).read_bytes()).hexdigest() == digest
    source = AudioCapsCSV(str(a / "csv"), str(a / "audio"))
    assert [len(r.captions) for r in source.records("train")] == [3] * 4
    assert [len(r.captions) for r in source.records("test")] == [5] * 2


def test_demo_has_mixtures_sequences_and_clips_of_at_most_ten_seconds_with_held_out_pairs(tmp_path):
    from diffusion_link.data.demo import HELD_OUT_PAIRS, animals_named, held_out_pair

    root = build_demo(tmp_path / "d", n_train=60, n_val=30, n_test=0)
    info = json.loads((root / "manifest.json").read_text())["clips"]
    records = AudioCapsCSV(str(root / "csv"), str(root / "audio")).records("train")
    captions = " ".join(r.captions[0] for r in records)
    assert "then" in captions or "followed" in captions or "after" in captions
    durations = [sf.info(r.audio).duration for r in records]
    assert max(durations) <= 10.0 and min(durations) < 3.0
    for record in records + AudioCapsCSV(str(root / "csv"), str(root / "audio")).records("val"):
        animals = frozenset(info[record.clip_id]["animals"])
        assert all(animals_named(c) == animals for c in record.captions), record  # captions name exactly the animals
    assert not any(held_out_pair(info[r.clip_id]["animals"]) for r in records)  # never together in training
    assert len(HELD_OUT_PAIRS) == 5 and held_out_pair(["cow", "dog", "owl"]) and not held_out_pair(["cow", "dog"])


def test_val_and_test_clips_use_only_recordings_no_training_clip_uses(tmp_path, stand_in_recordings):
    from diffusion_link.data.demo_probe import trained_spans, unseen
    from diffusion_link.data.recordings import SPLIT_PLAN

    root = build_demo(tmp_path / "d", n_train=90, n_val=30, n_test=30, unseen=True)
    manifest = json.loads((root / "manifest.json").read_text())
    info = manifest["clips"]
    spans = trained_spans(info)
    assert {s["recording"] for c in info.values() if c["split"] == "train" for s in c["sources"]} >= {"ovos:cat", "tuxpaint:animals/mammals/pig.ogg"}
    for clip in info.values():
        assert [s["animal"] for s in clip["sources"]] == clip["animals"]  # one source per animal, in order
        for s in clip["sources"]:
            allowed = {rec for rec, _ in SPLIT_PLAN[s["animal"]][clip["split"]]}
            assert s["recording"] in allowed and s["end"] > s["start"]
        if clip["split"] != "train":  # every val/test clip: no stretch that a training clip uses
            assert unseen(clip["sources"], spans), clip
    val = {s["recording"] for c in info.values() if c["split"] == "val" for s in c["sources"]}
    test = {s["recording"] for c in info.values() if c["split"] == "test" for s in c["sources"]}
    assert "tuxpaint:animals/mammals/pig_golden.ogg" in val and "tuxpaint:animals/mammals/pig_golden2.ogg" in test
    cat = [s for c in info.values() for s in c["sources"] if s["recording"] == "ovos:cat"]
    train_end = max(s["end"] for s in cat if s in [x for c in info.values() if c["split"] == "train" for x in c["sources"]])
    assert all(s["start"] >= train_end for c in info.values() if c["split"] != "train" for s in c["sources"] if s["recording"] == "ovos:cat")
    assert manifest["settings"]["recordings"]["tuxpaint"]["package"] == "tuxpaint-stamps-default"
    assert len(manifest["settings"]["recordings"]["files"]) == 24  # 10 ovos + 14 tuxpaint, each with its sha256


def test_fetch_copies_only_the_needed_files_with_their_sha256_and_says_what_to_do_without_them(tmp_path, stand_in_recordings):
    import pytest
    from conftest import write_stand_in_recordings

    from diffusion_link.assets import MissingAssetError, sha256_file
    from diffusion_link.data import fetch_recordings
    from diffusion_link.data.recordings import read_sources, tuxpaint_files

    stamps = write_stand_in_recordings(tmp_path / "copy" / "usr/share/tuxpaint/stamps")
    (stamps / "animals/birds/pigeon.ogg").write_bytes(b"not needed")
    out = fetch_recordings.fetch(tmp_path / "out", extra=tmp_path / "copy")  # the folder above the stamps is found too
    record = read_sources(out)
    assert sorted(record["files"]) == tuxpaint_files() and "GPL-2" in record["licence"]
    assert all(record["files"][rel] == sha256_file(stamps / rel) for rel in tuxpaint_files())
    assert not (out / "animals/birds/pigeon.ogg").exists() and (out / "animals/birds/duck.txt").is_file()
    (out / "animals/birds/owl.ogg").write_bytes(b"changed")
    with pytest.raises(MissingAssetError, match="changed since it was fetched"):
        read_sources(out)
    with pytest.raises(MissingAssetError, match=r"make recordings.*--deb FILE\.deb.*--extra-recordings DIR"):
        build_demo(tmp_path / "demo", n_train=2, n_val=1, n_test=1, unseen=True, recordings=str(tmp_path / "nowhere"))
    (stamps / "animals/birds/owl.ogg").unlink()
    assert fetch_recordings.main(["--out", str(tmp_path / "out2"), "--extra-recordings", str(stamps)]) == 1
    assert not (tmp_path / "out2").exists()  # nothing half-written
