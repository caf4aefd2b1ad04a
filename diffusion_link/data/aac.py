"""Sources of the field's datasets in ``aac-datasets``' local layouts (AudioCaps, Clotho, MACS, WavCaps),
read through ``aac-datasets``' own classes from a root the user already has: never downloading.

``aac-datasets`` gives the metadata (each clip's file path, its captions, the subsets); we decode the audio
ourselves (soundfile, :func:`~diffusion_link.data.audio.load_audio`), so a clip is read the same way whatever
the source. The layouts (``{root}/CLOTHO_v2.1/clotho_csv_files/...``, ``{root}/AUDIOCAPS/csv_files_v1/...``,
``{root}/MACS/MACS.yaml``, ``{root}/WavCaps/json_files/...``) are those ``aac-datasets``' downloader writes;
``docs/datasets.md`` shows each.

``import aac_datasets`` imports ``torchaudio`` at module level, and no torchaudio wheel imports beside our CPU
torch (docs/offline.md). :func:`import_aac_datasets` is the one place that deals with it: while
``aac_datasets`` is imported it puts a stand-in ``torchaudio`` module in ``sys.modules`` whose ``load``/``info``
raise, and removes it right after (a stand-in left there makes torchmetrics and transformers believe torchaudio
exists, and crash). ``aac-datasets`` only calls torchaudio to decode audio, which we never ask it to do.
"""

from __future__ import annotations

import importlib.machinery
import sys
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from diffusion_link.data.audio import load_audio
from diffusion_link.data.audiocaps import AudioSource, ClipRecord

#: our dataset name -> (aac-datasets class, our split -> its subset)
DATASETS = {
    "audiocaps": ("AudioCaps", {"train": "train", "val": "val", "test": "test"}),
    "clotho": ("Clotho", {"dev": "dev", "val": "val", "eval": "eval", "train": "dev", "test": "eval"}),
    "macs": ("MACS", {"train": "full", "full": "full"}),
    "wavcaps": ("WavCaps", {}),  # subsets by name: audioset, bbc, freesound, soundbible, ...
}


def _refuse(*args, **kwargs):
    raise RuntimeError("torchaudio is not available here: diffusion-link decodes audio itself (soundfile), never through aac-datasets")


@contextmanager
def _torchaudio_for_import():
    """A stand-in ``torchaudio`` in ``sys.modules`` for the duration of the block only (or the real one when
    it imports). Modules that bound it keep their reference; ``sys.modules`` is left as it was."""
    saved = {k: v for k, v in sys.modules.items() if k == "torchaudio" or k.startswith("torchaudio.")}
    try:
        import torchaudio  # noqa: F401  (a working torchaudio, where there is one)

        works = True
    except Exception:  # not installed, or a CUDA build that fails to load
        works = False
        for k in [k for k in sys.modules if k == "torchaudio" or k.startswith("torchaudio.")]:
            del sys.modules[k]
    if works:
        yield
        return
    stub = types.ModuleType("torchaudio")
    stub.__version__ = "0+unavailable"
    stub.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    stub.load = stub.info = _refuse
    stub.AudioMetaData = type("AudioMetaData", (), {})
    sys.modules["torchaudio"] = stub
    try:
        yield
    finally:
        for k in [k for k in sys.modules if k == "torchaudio" or k.startswith("torchaudio.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def import_aac_datasets():
    """``aac_datasets``, imported without torchaudio (see the module's docstring)."""
    if "aac_datasets" in sys.modules:
        return sys.modules["aac_datasets"]
    try:
        import pythonwrench  # noqa: F401  (imported first, without the stand-in: they probe for torchaudio
        import torchwrench  # noqa: F401   at import and must find none)

        with _torchaudio_for_import():
            import aac_datasets
    except ImportError as err:
        raise ImportError(
            f"aac-datasets is needed for the aac-datasets sources ({err}); install it without its dependencies "
            "(`pip install --no-deps aac-datasets==0.7.0`: its torchaudio has no CPU wheel here) or run `make venv`"
        ) from None
    return aac_datasets


class AACDatasetsSource(AudioSource):
    """A dataset in ``aac-datasets``' local layout, its metadata read by ``aac-datasets``' own class.

    Args:
        dataset: ``audiocaps``, ``clotho``, ``macs`` or ``wavcaps``.
        root: the folder that holds ``AUDIOCAPS/``, ``CLOTHO_v2.1/``, ``MACS/`` or ``WavCaps/`` (``aac-datasets``' root).
        subsets: our split name -> the dataset's subset, over the defaults (Clotho: ``dev``, ``val``, ``eval``
            and ``train``/``test`` as ``dev``/``eval``; AudioCaps: ``train``, ``val``, ``test``; MACS: ``train``
            is its one subset ``full``; WavCaps: the split names are its subsets, e.g. ``soundbible``).
        options: more keyword arguments of the class (e.g. ``{"version": "v2.1"}`` for Clotho,
            ``{"sr": 32000, "audio_format": "flac"}`` for AudioCaps).
    """

    def __init__(self, dataset: str, root: str, subsets: dict[str, str] | None = None, options: dict | None = None):
        if dataset not in DATASETS:
            raise ValueError(f"unknown aac-datasets dataset '{dataset}': one of {sorted(DATASETS)}")
        self.dataset, self.root = dataset, root
        self.subsets = {**DATASETS[dataset][1], **(subsets or {})}
        self.options = dict(options or {})
        self._records: dict[str, list[ClipRecord]] = {}

    def subset(self, split: str) -> str:
        return self.subsets.get(split, split)

    def _open(self, split: str):
        cls = getattr(import_aac_datasets(), DATASETS[self.dataset][0])
        if not Path(self.root).is_dir():
            raise FileNotFoundError(f"aac-datasets root {self.root} does not exist (it holds {DATASETS[self.dataset][0].upper()}-style folders)")
        try:
            return cls(str(self.root), subset=self.subset(split), download=False, verbose=0, **self.options)
        except RuntimeError as err:  # aac-datasets' "not prepared": say which layout it expected
            raise FileNotFoundError(
                f"{DATASETS[self.dataset][0]} subset '{self.subset(split)}' (split '{split}') is not in aac-datasets' layout under {self.root}: {err} "
                "See docs/datasets.md for the folders and files each dataset needs."
            ) from None

    def records(self, split: str) -> list[ClipRecord]:
        if split not in self._records:
            raw = self._open(split).raw_data
            records = {}
            for fpath, fname, captions in zip(raw["fpath"], raw["fname"], raw["captions"]):
                clip_id = Path(fname).stem
                records[clip_id] = ClipRecord(clip_id, str(Path(fpath).resolve()), [" ".join(c.split()) for c in captions if c and c.strip()])
            self._records[split] = sorted(records.values(), key=lambda r: r.clip_id)
        return self._records[split]

    def load(self, record: ClipRecord, split: str, sample_rate: int) -> np.ndarray:
        return load_audio(record.audio, sample_rate)

    def describe(self) -> dict:
        return {
            "source": f"aac-datasets:{self.dataset}",
            "root": str(Path(self.root).resolve()),
            "subsets": self.subsets,
            "options": self.options,
        }


__all__ = ["AACDatasetsSource", "DATASETS", "import_aac_datasets"]
