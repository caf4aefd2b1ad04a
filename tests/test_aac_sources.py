"""The aac-datasets sources (AudioCaps, Clotho, MACS, WavCaps in aac-datasets' own layouts, read through its
classes) and the generic corpus source (CSV / JSONL), on real clips."""

import csv
import json
import subprocess
import sys

import datasets
import numpy as np
import pytest
import soundfile as sf
from aac_layouts import demo_clips, write_audiocaps, write_clotho, write_macs, write_wavcaps_soundbible

from diffusion_link.data.aac import AACDatasetsSource, import_aac_datasets
from diffusion_link.data.audio import AudioDecodeError
from diffusion_link.data.audio_modules import _audio_file
from diffusion_link.data.audiocaps import AudioCapsHF
from diffusion_link.data.corpus import CaptionCorpus


def _read_all(source, split, expected: dict[str, list[str]]):
    records = source.records(split)
    assert {r.clip_id: r.captions for r in records} == expected
    for record in records:
        wave = source.load(record, split, 16_000)
        assert wave.dtype == np.float32 and len(wave) > 1000 and np.isfinite(wave).all()
    return records


def test_aac_datasets_imports_without_leaving_a_torchaudio_stand_in():
    code = (
        "import sys; from diffusion_link.data.aac import import_aac_datasets; m = import_aac_datasets();"
        "assert not any(k.split('.')[0] == 'torchaudio' for k in sys.modules), sorted(sys.modules);"
        "import importlib.util; assert importlib.util.find_spec('torchaudio') is None;"
        "print(m.__version__, m.Clotho.__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["0.7.0", "Clotho"]


def test_clotho_layout_through_aac_datasets(tmp_path, tiny_demo):
    clips = demo_clips(tiny_demo, 7)
    written = write_clotho(tmp_path, {"dev": clips[:3], "val": clips[3:5], "eval": clips[5:7]})
    source = AACDatasetsSource("clotho", str(tmp_path))
    for split in ("dev", "val", "eval"):
        records = _read_all(source, split, written[split])
        assert all(len(r.captions) == 5 for r in records)
    assert source.records("train") == source.records("dev")  # train/test name dev/eval
    assert "CLOTHO_v2.1/clotho_audio_files/development/dev clip 0.wav" in source.records("dev")[0].audio
    assert source.describe()["source"] == "aac-datasets:clotho"
    assert source.check() == [  # what `run --dry-run` says of it
        (True, "AACDatasetsSource train: 3 clips listed, 3 with their audio file"),
        (True, "AACDatasetsSource val: 2 clips listed, 2 with their audio file"),
        (True, "AACDatasetsSource test: 2 clips listed, 2 with their audio file"),
    ]


def test_audiocaps_layout_through_aac_datasets(tmp_path, tiny_demo):
    clips = demo_clips(tiny_demo, 6)
    written = write_audiocaps(tmp_path, {"train": clips[:2], "val": clips[2:4], "test": clips[4:6]})
    source = AACDatasetsSource("audiocaps", str(tmp_path))
    assert [len(r.captions) for r in _read_all(source, "train", written["train"])] == [1, 1]
    assert [len(r.captions) for r in _read_all(source, "val", written["val"])] == [5, 5]


def test_macs_layout_through_aac_datasets(tmp_path, tiny_demo):
    written = write_macs(tmp_path, demo_clips(tiny_demo, 3))
    records = _read_all(AACDatasetsSource("macs", str(tmp_path)), "train", written)
    assert all(len(r.captions) == 3 for r in records)


def test_wavcaps_layout_through_aac_datasets(tmp_path, tiny_demo):
    written = write_wavcaps_soundbible(tmp_path, demo_clips(tiny_demo, 2))
    _read_all(AACDatasetsSource("wavcaps", str(tmp_path)), "soundbible", written)


def test_an_aac_layout_that_is_not_there_says_what_it_expected(tmp_path):
    import_aac_datasets()
    with pytest.raises(FileNotFoundError, match="Clotho subset 'val' \\(split 'val'\\) is not in aac-datasets' layout"):
        AACDatasetsSource("clotho", str(tmp_path)).records("val")
    [(ok, note), *_] = AACDatasetsSource("clotho", str(tmp_path)).check()
    assert not ok and "is not in aac-datasets' layout" in note
    with pytest.raises(ValueError, match="unknown aac-datasets dataset 'esc50'"):
        AACDatasetsSource("esc50", str(tmp_path))


def test_corpus_csv_per_split_with_caption_columns_and_symlinked_folders(tmp_path, tiny_demo):
    """A Clotho-like corpus without aac-datasets' metadata files: one captions CSV per split, a folder per split
    (here a symlink), names without extension resolved to the file there."""
    clips = demo_clips(tiny_demo, 3)
    real = tmp_path / "elsewhere" / "dev"
    real.mkdir(parents=True)
    for i, src in enumerate(clips[:2]):
        (real / f"clip {i}.flac").write_bytes(src.read_bytes())
    (tmp_path / "corpus" / "audio").mkdir(parents=True)
    (tmp_path / "corpus" / "audio" / "dev").symlink_to(real, target_is_directory=True)
    with open(tmp_path / "corpus" / "dev.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "caption_1", "caption_2", "caption_10"])
        w.writerows([["audio/dev/clip 0.flac", "one", "two", "ten"], ["audio/dev/clip 1", "a  b", "", "c"], ["audio/dev/gone.wav", "x", "y", "z"]])
    source = CaptionCorpus({"dev": str(tmp_path / "corpus" / "dev.csv")})
    records = source.records("dev")
    assert [(r.clip_id, r.captions) for r in records] == [
        ("audio/dev/clip 0.flac", ["one", "two", "ten"]),
        ("audio/dev/clip 1", ["a b", "c"]),
        ("audio/dev/gone.wav", ["x", "y", "z"]),
    ]
    assert records[1].audio == str(real / "clip 1.flac")  # the extension found, the symlink followed
    assert len(source.load(records[1], "dev", 16_000)) > 1000
    with pytest.raises(AudioDecodeError, match="file not found: tried .*gone.wav"):
        source.load(records[2], "dev", 16_000)
    with pytest.raises(KeyError, match="no file for split 'val'"):
        source.records("val")
    note = f"CaptionCorpus dev: 3 clips listed, 2 with their audio file; 1 missing (e.g. {real / 'gone.wav'})"
    assert source.check(("dev",)) == [(True, note)]


def test_corpus_jsonl_one_file_with_a_split_column_and_an_audio_dir(tmp_path, tiny_demo):
    clips = demo_clips(tiny_demo, 3)
    for split in ("train", "test"):
        (tmp_path / "wavs" / split).mkdir(parents=True)
    lines = []
    for i, src in enumerate(clips):
        split = "train" if i < 2 else "test"
        (tmp_path / "wavs" / split / f"{i}.flac").write_bytes(src.read_bytes())
        lines.append({"audio": f"{i}.flac", "captions": [f"clip {i}", f"sound {i}"], "split": split})
    lines.append({"audio": "0.flac", "captions": "one more for clip 0", "split": "train"})  # rows of a clip add up
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "corpus.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    source = CaptionCorpus(str(tmp_path / "meta" / "corpus.jsonl"), audio_column="audio", audio_dir=str(tmp_path / "wavs" / "{split}"))
    expected = {"0.flac": ["clip 0", "sound 0", "one more for clip 0"], "1.flac": ["clip 1", "sound 1"]}
    _read_all(source, "train", expected)
    _read_all(source, "test", {"2.flac": ["clip 2", "sound 2"]})
    assert source.describe()["source"] == "caption-corpus"
    with pytest.raises(KeyError, match="no audio column 'file_name'"):
        CaptionCorpus(str(tmp_path / "meta" / "corpus.jsonl")).records("train")


def test_hf_source_with_a_path_column_records_the_files(tmp_path):
    sf.write(tmp_path / "x.wav", np.zeros(4800, np.float32) + 0.2, 48000)
    data = (tmp_path / "x.wav").read_bytes()
    datasets.Dataset.from_dict({"id": ["p"], "caption": ["a"], "file": [str(tmp_path / "x.wav")]}).save_to_disk(str(tmp_path / "paths"))
    audio = [{"bytes": data, "path": str(tmp_path / "x.wav")}, {"bytes": data, "path": None}]
    as_audio = datasets.Dataset.from_dict({"id": ["p", "q"], "caption": ["a", "b"], "audio": audio})
    as_audio.cast_column("audio", datasets.Audio(decode=False)).save_to_disk(str(tmp_path / "audio"))
    [record] = AudioCapsHF(str(tmp_path / "paths"), audio_column="file", id_column="id").records("train")
    assert _audio_file(record) == str((tmp_path / "x.wav").resolve())
    records = AudioCapsHF(str(tmp_path / "audio"), id_column="id").records("train")
    assert [_audio_file(r) for r in records] == ["", ""]  # datasets.Audio keeps only the file's name ("x.wav"): no file to link
