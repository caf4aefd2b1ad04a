"""Fixtures in aac-datasets 0.7.0's own local layouts (read from its sources: functional/{audiocaps,clotho,macs,
wavcaps}.py), filled with real clips (the tiny demo's). Each writer returns the clip -> captions it wrote."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import soundfile as sf


def demo_clips(demo: Path, n: int) -> list[Path]:
    clips = sorted((demo / "audio").rglob("*.flac"))
    assert len(clips) >= n, f"the tiny demo has {len(clips)} clips, {n} wanted"
    return clips[:n]


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.suffix == src.suffix:
        dst.write_bytes(src.read_bytes())
    else:  # e.g. Clotho's .wav from the demo's .flac: re-encode, the same samples
        data, rate = sf.read(src)
        sf.write(dst, data, rate)


def _csv(path: Path, header: list[str], rows: list[list], delimiter: str = ",", encoding: str = "utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding=encoding) as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header)
        writer.writerows(rows)


def write_clotho(root: Path, clips: dict[str, list[Path]], version: str = "v2.1") -> dict[str, dict[str, list[str]]]:
    """``{root}/CLOTHO_{version}/clotho_csv_files/clotho_{captions,metadata}_{development,validation,evaluation}.csv``
    (file_name, caption_1..5; file_name, keywords, sound_id, ...) and ``clotho_audio_files/{development,...}/*.wav``.
    ``clips``: split (dev, val, eval) -> source files."""
    folder = {"dev": "development", "val": "validation", "eval": "evaluation"}
    base = root / f"CLOTHO_{version}"
    written = {}
    for split, files in clips.items():
        rows, meta, written[split] = [], [], {}
        for i, src in enumerate(files):
            name = f"{split} clip {i}.wav"  # Clotho's names have spaces
            captions = [f"a {split} sound number {i} heard {k} times" for k in range(1, 6)]
            _copy(src, base / "clotho_audio_files" / folder[split] / name)
            rows.append([name, *captions])
            meta.append([name, "demo;animal", str(1000 + i), "NA", "", "diffusion-link", "CC0"])
            written[split][Path(name).stem] = captions
        _csv(base / "clotho_csv_files" / f"clotho_captions_{folder[split]}.csv", ["file_name"] + [f"caption_{k}" for k in range(1, 6)], rows)
        meta_header = ["file_name", "keywords", "sound_id", "sound_link", "start_end_samples", "manufacturer", "license"]
        _csv(base / "clotho_csv_files" / f"clotho_metadata_{folder[split]}.csv", meta_header, meta, encoding="ISO-8859-1")
    return written


def write_audiocaps(root: Path, clips: dict[str, list[Path]], sr: int = 32_000) -> dict[str, dict[str, list[str]]]:
    """``{root}/AUDIOCAPS/csv_files_v1/{train,val,test}.csv`` (audiocap_id, youtube_id, start_time, caption: one
    row per caption) and ``audio_{sr}Hz/{split}/{youtube_id}_{start_time}.flac``."""
    base = root / "AUDIOCAPS"
    written, next_id = {}, 0
    for split, files in clips.items():
        rows, written[split] = [], {}
        for i, src in enumerate(files):
            youtube_id, captions = f"yt{split}{i:03d}", [f"an audiocaps {split} clip {i}, caption {k}" for k in range(1 if split == "train" else 5)]
            _copy(src, base / f"audio_{sr}Hz" / split / f"{youtube_id}_30.flac")
            for caption in captions:
                rows.append([next_id, youtube_id, 30, caption])
                next_id += 1
            written[split][f"{youtube_id}_30"] = captions
        _csv(base / "csv_files_v1" / f"{split}.csv", ["audiocap_id", "youtube_id", "start_time", "caption"], rows)
    return written


def write_macs(root: Path, files: list[Path]) -> dict[str, list[str]]:
    """``{root}/MACS/MACS.yaml`` (files: filename, annotations: sentence, tags, annotator_id),
    ``MACS_competence.csv`` and ``tau_meta/meta.csv`` (tab-separated) and ``audio/*.wav``."""
    import yaml

    base = root / "MACS"
    entries, meta, written = [], [], {}
    for i, src in enumerate(files):
        name = f"street_traffic-demo-{i:03d}-a.wav"
        _copy(src, base / "audio" / name)
        annotations = [{"sentence": f"a macs scene {i} by annotator {a}", "tags": ["traffic"], "annotator_id": a} for a in (1, 2, 3)]
        entries.append({"filename": name, "annotations": annotations})
        meta.append([f"audio/{name}", "street_traffic", f"demo-{i:03d}"])
        written[Path(name).stem] = [a["sentence"] for a in annotations]
    (base / "MACS.yaml").write_text(yaml.safe_dump({"files": entries}))
    _csv(base / "MACS_competence.csv", ["annotator_id", "competence"], [[a, 0.9] for a in (1, 2, 3)], delimiter="\t")
    _csv(base / "tau_meta" / "meta.csv", ["filename", "scene_label", "identifier"], meta, delimiter="\t")
    return written


def write_wavcaps_soundbible(root: Path, files: list[Path]) -> dict[str, list[str]]:
    """``{root}/WavCaps/json_files/SoundBible/sb_final.json`` ({"data": [{id, caption, duration, ...}]}) and
    ``Audio/SoundBible/{id}.flac``. aac-datasets counts the folder's files against the full release (1320 for
    SoundBible) before it reads anything, so the folder is topped up with empty placeholder files."""
    from aac_datasets.datasets.functional.wavcaps import WavCapsCard

    base = root / "WavCaps"
    data, written = [], {}
    for i, src in enumerate(files):
        sound_id = f"{9000 + i}"
        _copy(src, base / "Audio" / "SoundBible" / f"{sound_id}.flac")
        caption = f"a wavcaps soundbible sound {i}"
        data.append({"id": sound_id, "caption": caption, "duration": float(sf.info(src).duration), "title": f"sound {i}", "description": "demo"})
        written[sound_id] = [caption]
    for k in range(WavCapsCard.EXPECTED_SIZES["SoundBible"] - len(files)):
        (base / "Audio" / "SoundBible" / f"placeholder{k:05d}.flac").touch()
    (base / "json_files" / "SoundBible").mkdir(parents=True)
    (base / "json_files" / "SoundBible" / "sb_final.json").write_text(json.dumps({"data": data}))
    return written
