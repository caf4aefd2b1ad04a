"""The two real AudioCaps sources, and the record type every audio source yields.

AudioCaps train has one caption per clip; val and test have five. Both sources group rows by
clip, so a clip is one record with all its captions.

* :class:`AudioCapsCSV`: the official layout, ``{split}.csv`` with
  ``audiocap_id,youtube_id,start_time,caption`` plus a folder of downloaded clips. Downloaded copies
  always miss some deleted videos: a missing clip is *reported* (it reaches ``failures.csv`` with
  the reason ``file not found``), never fatal.
* :class:`AudioCapsHF`: a Hugging Face dataset, either a local ``save_to_disk`` folder or a hub id
  in a warm cache, with configurable column names; audio given as bytes or paths. Audio is decoded
  by our code (``datasets.Audio`` needs torchcodec, which has no CPU wheel beside our torch).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from diffusion_link.data.audio import AUDIO_EXTENSIONS, AudioDecodeError, load_audio


@dataclass
class ClipRecord:
    """One clip: its id, where its audio is (a path, or a row of a dataset), its captions, and the audio file
    a dataset's row names when it names one (``file``: what the report's players link to)."""

    clip_id: str
    audio: str | int
    captions: list[str] = field(default_factory=list)
    file: str = ""


class AudioSource:
    """What the caching DataModule reads: records per split, and how to decode one."""

    def records(self, split: str) -> list[ClipRecord]:
        raise NotImplementedError

    def load(self, record: ClipRecord, split: str, sample_rate: int) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict:
        raise NotImplementedError

    def check(self, splits: tuple[str, ...] = ("train", "val", "test")) -> list[tuple[bool, str]]:
        """What ``run --dry-run`` says of this source: per split, the clips listed and the audio files found
        (an error for a split that cannot be read or has no file found)."""
        out, name = [], type(self).__name__
        for split in splits:
            try:
                records = self.records(split)
            except (OSError, ValueError, KeyError, ImportError) as err:
                out.append((False, f"{name} {split}: {err}"))
                continue
            missing = [r.audio for r in records if isinstance(r.audio, str) and not Path(r.audio).is_file()]
            note = f"{name} {split}: {len(records)} clips listed, {len(records) - len(missing)} with their audio file"
            if missing:
                note += f"; {len(missing)} missing (e.g. {missing[0]})"
            out.append((len(records) > len(missing), note))
        return out


def _fingerprint(records: list[ClipRecord]) -> str:
    """Of each clip's id, captions and where its audio is (the resolved file; a row of a dataset): another
    audio folder, or a file found where none was, is another store."""
    digest = hashlib.sha256()
    for r in records:
        audio = str(Path(r.audio).resolve()) if isinstance(r.audio, str) else r.audio
        digest.update(repr((r.clip_id, r.captions, audio)).encode())
    return digest.hexdigest()[:16]


class AudioCapsCSV(AudioSource):
    """Official AudioCaps CSVs plus a folder of downloaded clips.

    Args:
        csv_dir: folder with ``train.csv``, ``val.csv``, ``test.csv``.
        audio_dir: folder with the clips, optionally in one sub-folder per split.
        filename: the clip's file name without extension, formatted with the row's columns
            (default ``{youtube_id}``; many downloaders write ``{youtube_id}_{start_time}``).
    """

    def __init__(self, csv_dir: str, audio_dir: str, filename: str = "{youtube_id}"):
        self.csv_dir = Path(csv_dir)
        self.audio_dir = Path(audio_dir)
        self.filename = filename
        self._index: dict[str, Path] | None = None

    def _file_index(self) -> dict[str, Path]:
        if self._index is None:
            index: dict[str, Path] = {}
            if self.audio_dir.is_dir():  # os.walk follows symlinked split folders (Path.rglob does not)
                found = [Path(d) / n for d, _, names in os.walk(self.audio_dir, followlinks=True) for n in names]
                for path in sorted(found):
                    if path.suffix.lower() in AUDIO_EXTENSIONS:
                        index.setdefault(path.stem, path)
            self._index = index
        return self._index

    def records(self, split: str) -> list[ClipRecord]:
        path = self.csv_dir / f"{split}.csv"
        if not path.is_file():
            raise FileNotFoundError(
                f"AudioCaps CSV not found: {path}. Expected the official layout (train.csv/val.csv/test.csv with audiocap_id,youtube_id,start_time,caption)."
            )
        clips: dict[str, ClipRecord] = {}
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"youtube_id", "start_time", "caption"} - set(reader.fieldnames or [])
            if missing:
                raise ValueError(f"{path}: missing columns {sorted(missing)}; found {reader.fieldnames}")
            index = self._file_index()
            for row in reader:
                clip_id = f"{row['youtube_id']}_{int(float(row['start_time']))}"
                if clip_id not in clips:
                    stem = self.filename.format(**row)
                    found = index.get(stem)
                    clips[clip_id] = ClipRecord(clip_id, str(found) if found else str(self.audio_dir / stem))
                clips[clip_id].captions.append(" ".join(row["caption"].split()))
        return sorted(clips.values(), key=lambda r: r.clip_id)

    def load(self, record: ClipRecord, split: str, sample_rate: int) -> np.ndarray:
        if not Path(record.audio).is_file():
            stem = Path(record.audio).name
            where = f"under {self.audio_dir} (every sub-folder, symlinks followed)" if self.audio_dir.is_dir() else f"in {self.audio_dir}, which does not exist"
            raise AudioDecodeError(
                record.audio, f"file not found: no file named {stem}{{{','.join(AUDIO_EXTENSIONS)}}} {where} (name pattern '{self.filename}')"
            )
        return load_audio(record.audio, sample_rate)

    def inventory(self, split: str) -> tuple[int, int, list[str]]:
        """(clips in the split's CSV, clips whose file was found, up to three names that were looked for
        and not found). Raises the CSV's own errors (missing file, missing columns)."""
        records = self.records(split)
        missing = [r.audio for r in records if not Path(r.audio).is_file()]
        return len(records), len(records) - len(missing), [f"{m}.*" for m in missing[:3]]

    def check(self, splits: tuple[str, ...] = ("train", "val", "test")) -> list[tuple[bool, str]]:
        """What ``doctor`` and ``run --dry-run`` say of this copy: per split, the clips listed and found; an
        error for a split with none found (wrong folder, or a file name pattern that does not match)."""
        out = []
        if not self.audio_dir.is_dir():
            return [(False, f"AudioCaps audio folder {self.audio_dir} does not exist")]
        for split in splits:
            try:
                listed, found, examples = self.inventory(split)
            except (OSError, ValueError) as err:
                out.append((False, str(err)))
                continue
            ok = found > 0
            note = f"AudioCaps {split}: {listed} clips in {self.csv_dir / (split + '.csv')}, {found} found under {self.audio_dir} with name '{self.filename}'"
            if found < listed:
                note += f"; {listed - found} missing (looked for e.g. {', '.join(examples)}: any extension, any sub-folder)"
            out.append((ok, note if ok else note + "; is the folder or the name pattern (AUDIOCAPS_NAME) right?"))
        return out

    def describe(self) -> dict:
        return {"source": "audiocaps-csv", "csv_dir": str(self.csv_dir.resolve()), "filename": self.filename}


class AudioCapsHF(AudioSource):
    """AudioCaps as a Hugging Face dataset (local ``save_to_disk`` folder, or a hub id in a warm cache).

    Args:
        path: a ``save_to_disk`` folder (a DatasetDict) or a hub id (then loaded with the hub offline).
        split_names: our split name -> the dataset's (e.g. ``{"val": "validation"}``).
        audio_column: a column of file paths, of bytes, or of ``{"bytes", "path"}`` dicts (``datasets.Audio``).
        caption_column: a string column (one row per caption) or a list-of-strings column.
        id_column: the clip id; rows that share it are one clip. Default: ``youtube_id`` + ``start_time``
            when those columns exist, else the row number.
    """

    def __init__(
        self,
        path: str,
        split_names: dict[str, str] | None = None,
        audio_column: str = "audio",
        caption_column: str = "caption",
        id_column: str | None = None,
    ):
        self.path = path
        self.split_names = split_names or {}
        self.audio_column = audio_column
        self.caption_column = caption_column
        self.id_column = id_column
        self._datasets: dict = {}

    def __getstate__(self):  # worker processes re-open the memory-mapped files themselves
        return {**self.__dict__, "_datasets": {}}

    def _dataset(self, split: str):
        if split not in self._datasets:
            import datasets

            name = self.split_names.get(split, split)
            if Path(self.path).exists():
                loaded = datasets.load_from_disk(self.path)
                if isinstance(loaded, datasets.DatasetDict):
                    if name not in loaded:
                        raise KeyError(f"{self.path} has splits {list(loaded)}, not '{name}' (set split_names)")
                    loaded = loaded[name]
            else:
                from diffusion_link.offline import hub_offline

                with hub_offline():
                    loaded = datasets.load_dataset(self.path, split=name)
            if isinstance(loaded.features.get(self.audio_column), datasets.Audio):
                loaded = loaded.cast_column(self.audio_column, datasets.Audio(decode=False))
            self._datasets[split] = loaded
        return self._datasets[split]

    def records(self, split: str) -> list[ClipRecord]:
        ds = self._dataset(split)
        for column in (self.caption_column, self.audio_column):
            if column not in ds.column_names:
                raise KeyError(f"column '{column}' not in {self.path} [{split}]: {ds.column_names}")
        meta = ds.select_columns([c for c in ds.column_names if c != self.audio_column])
        files = self._files(ds)
        clips: dict[str, ClipRecord] = {}
        for row_index, row in enumerate(meta):
            if self.id_column:
                clip_id = str(row[self.id_column])
            elif "youtube_id" in row and "start_time" in row:
                clip_id = f"{row['youtube_id']}_{int(float(row['start_time']))}"
            else:
                clip_id = f"{row_index:08d}"
            captions = row[self.caption_column]
            captions = [captions] if isinstance(captions, str) else list(captions)
            record = clips.setdefault(clip_id, ClipRecord(clip_id, row_index, file=files[row_index]))
            record.captions.extend(" ".join(c.split()) for c in captions)
        return sorted(clips.values(), key=lambda r: r.clip_id)

    def _files(self, ds) -> list[str]:
        """Each row's audio file when the audio column is a path, or a ``datasets.Audio`` whose ``path`` is a
        file here (read from Arrow: no audio bytes are loaded; ``save_to_disk`` keeps only a file's name, so
        this is rarely so); "" otherwise."""
        import pyarrow as pa
        import pyarrow.compute as pc

        column = ds.data.table.column(self.audio_column)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            paths = column.to_pylist()
        elif pa.types.is_struct(column.type) and column.type.get_field_index("path") >= 0:
            paths = pc.struct_field(column, "path").to_pylist()
        else:
            paths = [None] * len(column)
        return [str(Path(p).resolve()) if p and Path(p).is_file() else "" for p in paths]

    def load(self, record: ClipRecord, split: str, sample_rate: int) -> np.ndarray:
        value = self._dataset(split)[int(record.audio)][self.audio_column]
        where = f"{self.path}[{split}] row {record.audio} ({record.clip_id})"
        if isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if value is None:
            raise AudioDecodeError(where, "no audio in the row")
        if isinstance(value, str):
            return load_audio(value, sample_rate, where=f"{where}: {value}")
        return load_audio(bytes(value), sample_rate, where=where)

    def describe(self) -> dict:
        return {
            "source": "audiocaps-hf",
            "path": str(Path(self.path).resolve()) if Path(self.path).exists() else self.path,
            "split_names": self.split_names,
            "audio_column": self.audio_column,
            "caption_column": self.caption_column,
        }


def describe_records(source: AudioSource, records: dict[str, list[ClipRecord]]) -> dict:
    """The data part of a store's identity: the source and a fingerprint of every split's clips."""
    return {**source.describe(), "splits": {s: {"clips": len(r), "fingerprint": _fingerprint(r)} for s, r in records.items()}}


__all__ = ["AudioCapsCSV", "AudioCapsHF", "AudioSource", "ClipRecord", "AudioDecodeError", "describe_records"]
