"""A user's own corpus: a CSV or JSONL file of audio paths and captions, with splits.

Either one file with a split column, or one file per split. Each row names an audio file (relative paths
are resolved against ``audio_dir`` when given, else the folder of the file that lists them) and one or more
captions: several caption columns (Clotho's ``caption_1`` .. ``caption_5``), a list (JSONL), or one caption
per row with the rows of a clip sharing its path. A path without an extension is looked for with every
extension libsndfile decodes. Symlinked folders are followed (paths are resolved, never listed).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from diffusion_link.data.audio import AUDIO_EXTENSIONS, AudioDecodeError, load_audio
from diffusion_link.data.audiocaps import AudioSource, ClipRecord


def _rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}")
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        if any(not isinstance(r, dict) for r in rows):
            raise ValueError(f"{path}: every line must be a JSON object (audio path, captions, split)")
        return rows
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


class CaptionCorpus(AudioSource):
    """Audio files and their captions listed in CSV or JSONL files.

    Args:
        files: one file (every split in it, told apart by ``split_column``) or ``{split: file}``.
        audio_column: the column of audio paths.
        caption_columns: the caption columns; default every column whose name starts with ``caption``
            (``caption``, ``captions``, ``caption_1`` ..). A cell may hold a list (JSONL); empty cells are skipped.
        split_column: the split of each row, when ``files`` is one file.
        audio_dir: the folder relative paths are resolved against, ``{split}`` filled with the split
            (e.g. ``/data/clotho/{split}``); default: the folder of the file that lists them.
        id_column: a clip's id; default the audio path as written. Rows sharing an id are one clip.
    """

    def __init__(
        self,
        files: str | dict[str, str],
        audio_column: str = "file_name",
        caption_columns: list[str] | None = None,
        split_column: str = "split",
        audio_dir: str | None = None,
        id_column: str | None = None,
    ):
        self.files = files
        self.audio_column, self.caption_columns, self.split_column = audio_column, caption_columns, split_column
        self.audio_dir, self.id_column = audio_dir, id_column
        self._records: dict[str, list[ClipRecord]] = {}

    def _file(self, split: str) -> tuple[Path, list[dict]]:
        if isinstance(self.files, dict):
            if split not in self.files:
                raise KeyError(f"no file for split '{split}' in CaptionCorpus.files (has {sorted(self.files)})")
            path = Path(self.files[split])
            return path, _rows(path)
        path = Path(self.files)
        rows = _rows(path)
        if rows and self.split_column not in rows[0]:
            raise KeyError(f"{path} has no split column '{self.split_column}' (columns {sorted(rows[0])}); set split_column, or give one file per split")
        return path, [r for r in rows if str(r[self.split_column]) == split]

    def _captions(self, path: Path, row: dict) -> list[str]:
        columns = self.caption_columns or sorted((c for c in row if c.lower().startswith("caption")), key=lambda c: (len(c), c))
        if not columns or any(c not in row for c in columns):
            raise KeyError(f"{path}: caption columns {columns or '(none named caption*)'} not all in {sorted(row)}; set caption_columns")
        out = []
        for column in columns:
            value = row[column]
            for text in value if isinstance(value, list) else [value]:
                if text is not None and str(text).strip():
                    out.append(" ".join(str(text).split()))
        return out

    def records(self, split: str) -> list[ClipRecord]:
        if split not in self._records:
            path, rows = self._file(split)
            base = Path(self.audio_dir.format(split=split)) if self.audio_dir else path.parent
            clips: dict[str, ClipRecord] = {}
            for row in rows:
                if self.audio_column not in row:
                    raise KeyError(f"{path}: no audio column '{self.audio_column}' (columns {sorted(row)}); set audio_column")
                written = str(row[self.audio_column])
                clip_id = str(row[self.id_column]) if self.id_column else written
                record = clips.setdefault(clip_id, ClipRecord(clip_id, _located(base / written)))
                record.captions.extend(self._captions(path, row))
            self._records[split] = sorted(clips.values(), key=lambda r: r.clip_id)
        return self._records[split]

    def load(self, record: ClipRecord, split: str, sample_rate: int) -> np.ndarray:
        return load_audio(find_audio(Path(record.audio)), sample_rate)

    def describe(self) -> dict:
        files = {s: str(Path(f).resolve()) for s, f in self.files.items()} if isinstance(self.files, dict) else str(Path(self.files).resolve())
        return {
            "source": "caption-corpus",
            "files": files,
            "audio_dir": self.audio_dir,
            "audio_column": self.audio_column,
            "caption_columns": self.caption_columns,
        }


def _located(path: Path) -> str:
    """The file ``path`` names (an extension added when it has none), or ``path`` itself when there is none yet."""
    try:
        return str(find_audio(path).resolve())
    except AudioDecodeError:
        return str(path.resolve())


def find_audio(path: Path) -> Path:
    """``path`` when it is a file, else ``path`` with the first extension libsndfile decodes that exists;
    :class:`AudioDecodeError` naming every path tried when none does."""
    if path.is_file():
        return path
    tried = [path] + ([path.with_name(path.name + ext) for ext in AUDIO_EXTENSIONS] if path.suffix.lower() not in AUDIO_EXTENSIONS else [])
    for candidate in tried[1:]:
        if candidate.is_file():
            return candidate
    folder = path.parent
    hint = "" if folder.is_dir() else f"; the folder {folder} does not exist"
    shown = str(path) if len(tried) == 1 else f"{path}{{,{','.join(AUDIO_EXTENSIONS)}}}"
    raise AudioDecodeError(str(path), f"file not found: tried {shown}{hint}")


__all__ = ["CaptionCorpus", "find_audio"]
