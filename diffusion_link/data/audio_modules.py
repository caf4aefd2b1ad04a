"""DataModules of raw audio: a source's clips in shards for the cache stage, a folder of audio files for
captioning. Both decode at the rate their stage's encoder expects, which :func:`~diffusion_link.data.wiring.connect`
hands them."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader, Dataset

from diffusion_link.data.audio import AUDIO_EXTENSIONS, AudioDecodeError, load_audio
from diffusion_link.data.audiocaps import AudioSource, ClipRecord, describe_records
from diffusion_link.data.loaders import evaluation_loader
from diffusion_link.data.wiring import ConnectedData, DataNeeds, require_connection


def agree_on_rate(configured: int | None, encoder_rate: int | None) -> int | None:
    """The encoder's rate; an explicitly configured different rate is an error, not a silent resample."""
    if encoder_rate is None:
        return configured
    if configured is not None and configured != encoder_rate:
        raise ValueError(
            f"data.init_args.sample_rate is {configured} Hz but the encoder expects {encoder_rate} Hz; leave sample_rate unset (null) to use the encoder's rate"
        )
    return encoder_rate


def _rate(datamodule, needs: DataNeeds, stage: str) -> int:
    rate = agree_on_rate(datamodule.sample_rate, needs.rate())
    if rate is None:
        raise TypeError(f"{type(datamodule).__name__} decodes audio at its stage's encoder rate: use it with {stage}, or set data.init_args.sample_rate")
    return rate


def _audio_file(record: ClipRecord) -> str:
    """Where a clip's audio file is (absolute), for the report's players: its path, or the file its dataset row
    names; "" when the audio lives only inside a dataset (bytes)."""
    return str(Path(record.audio).resolve()) if isinstance(record.audio, str) else record.file


def _identity(item):
    return item


# ----------------------------------------------------------------------------------------------
# Raw audio, in shards (cache stage)
# ----------------------------------------------------------------------------------------------


class ShardDataset(Dataset):
    """Items are whole shards: ``shard_size`` consecutive clips of a split, decoded together.

    A shard is the unit of work, of writing and of resuming. Shard ``i`` is always the same clips
    whatever the number of processes, so a resumed or multi-process run writes the same rows.
    """

    def __init__(self, source: AudioSource, split: str, records: list[ClipRecord], shard_size: int, shards: list[int], sample_rate: int):
        self.source, self.split, self.records = source, split, records
        self.shard_size, self.shards, self.sample_rate = shard_size, shards, sample_rate

    def __len__(self) -> int:
        return len(self.shards)

    def __getitem__(self, i: int) -> dict[str, Any]:
        shard = self.shards[i]
        item: dict[str, Any] = {"split": self.split, "shard": shard, "clip_ids": [], "waves": [], "captions": [], "audio": [], "failures": []}
        for record in self.records[shard * self.shard_size : (shard + 1) * self.shard_size]:
            try:
                wave = self.source.load(record, self.split, self.sample_rate)
            except AudioDecodeError as err:
                item["failures"].append((record.clip_id, str(record.audio), err.reason))
                continue
            if not record.captions:
                item["failures"].append((record.clip_id, str(record.audio), "no caption"))
                continue
            item["clip_ids"].append(record.clip_id)
            item["audio"].append(_audio_file(record))
            item["waves"].append(wave)
            item["captions"].append(record.captions)
        return item


class AudioDataModule(L.LightningDataModule):
    """Clips and captions of an audio source, served shard by shard for caching.

    Args:
        source: where clips come from (:class:`~diffusion_link.data.demo.DemoAudioCaps`,
            :class:`~diffusion_link.data.audiocaps.AudioCapsCSV`, :class:`~diffusion_link.data.audiocaps.AudioCapsHF`).
        splits: the splits to cache.
        shard_size: clips per shard (the unit of work and of resuming).
        num_workers: decoding processes; they decode the next shards while the model encodes.
        sample_rate: the rate clips are decoded at; ``None`` (default): the encoder's own rate, which
            the cache stage asks for (48 kHz for CLAP, 16 kHz for the demo's trained encoder).
    """

    def __init__(
        self,
        source: AudioSource,
        splits: list[str] = ("train", "val", "test"),
        shard_size: int = 32,
        num_workers: int = 1,
        sample_rate: int | None = None,
    ):
        super().__init__()
        self.source = source
        self.split_names = list(splits)
        self.shard_size = shard_size
        self.num_workers = num_workers
        self.sample_rate = sample_rate
        self._records: dict[str, list[ClipRecord]] | None = None
        self._shards: dict[str, list[int]] | None = None  # None: every shard
        self._datasets: list[ShardDataset] | None = None

    def prepare_data(self) -> None:
        prepare = getattr(self.source, "prepare", None)
        if prepare is not None:
            prepare()

    def connect(self, needs: DataNeeds) -> ConnectedData:
        """Takes the encoder's rate; serves the shard plan and the data's description (part of the store's key)."""
        self.sample_rate = _rate(self, needs, "the cache stage (diffusion_link.cache.CacheModule)")
        description = self.describe()
        return ConnectedData(
            "shards",
            type(self).__name__,
            predict_splits=list(self.split_names),
            description=description,
            shards=self.shard_plan(),
            sample_rate=self.sample_rate,
        )

    @property
    def records(self) -> dict[str, list[ClipRecord]]:
        if self._records is None:
            self._records = {s: self.source.records(s) for s in self.split_names}
        return self._records

    def shard_plan(self) -> dict[str, int]:
        """Number of shards of each split."""
        return {s: math.ceil(len(r) / self.shard_size) for s, r in self.records.items()}

    def only_shards(self, shards: dict[str, list[int]]) -> None:
        """Serve only these shards of each split (those the store writer has not written yet; the
        connection passes them on before the run)."""
        plan = self.shard_plan()
        unknown = {s: [i for i in ids if not 0 <= i < plan.get(s, 0)] for s, ids in shards.items()}
        if any(unknown.values()) or set(shards) - set(plan):
            raise ValueError(f"no such shards in the plan {plan}: {unknown}")
        self._shards = {s: list(shards.get(s, [])) for s in plan}

    def describe(self) -> dict:
        return {**describe_records(self.source, self.records), "shard_size": self.shard_size, "sample_rate": self.sample_rate}

    def setup(self, stage: str) -> None:
        if stage != "predict":
            return
        if self.sample_rate is None:
            raise require_connection(self, "the encoder's sample rate")
        plan = self.shard_plan()
        pending = self._shards if self._shards is not None else {s: list(range(n)) for s, n in plan.items()}
        self._datasets = [ShardDataset(self.source, s, self.records[s], self.shard_size, pending[s], self.sample_rate) for s in self.split_names]

    def predict_dataloader(self) -> list[DataLoader]:
        if self._datasets is None:
            raise RuntimeError("AudioDataModule.setup('predict') builds the shards; Lightning calls it before predict")
        return [
            evaluation_loader(
                self,
                dataset,
                batch_size=None,
                collate_fn=_identity,
                num_workers=self.num_workers,
                persistent_workers=False,
                prefetch_factor=2 if self.num_workers else None,
            )
            for dataset in self._datasets
        ]


# ----------------------------------------------------------------------------------------------
# A folder of audio files (end-user inference)
# ----------------------------------------------------------------------------------------------


class AudioFileDataset(Dataset):
    def __init__(self, paths: list[str], sample_rate: int):
        self.paths, self.sample_rate = paths, sample_rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        path = self.paths[i]
        try:
            return {"path": path, "wave": load_audio(path, self.sample_rate), "error": ""}
        except AudioDecodeError as err:
            suffix = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
            known = f".{suffix}" in AUDIO_EXTENSIONS
            reason = err.reason if known else f"not audio that libsndfile decodes (extension '{suffix or 'none'}'): {err.reason}"
            return {"path": path, "wave": None, "error": reason}


def collate_files(items: list[dict]) -> dict:
    return {"path": [x["path"] for x in items], "waves": [x["wave"] for x in items], "error": [x["error"] for x in items]}


class AudioFolderDataModule(L.LightningDataModule):
    """Every file under a folder, for ``predict``: each one is decoded if libsndfile can (any format
    it reads, whatever the extension; any rate, mono or stereo, any length), and every other one comes
    through with the reason and is listed in the failures CSV, so no file goes unaccounted for.

    Args:
        folder: the folder (searched recursively) or a single file.
        batch_size: files per batch.
        num_workers: decoding processes.
        sample_rate: decoding rate; ``None`` (default): the encoder's, which the captioner gives.
    """

    def __init__(self, folder: str, batch_size: int = 8, num_workers: int = 0, sample_rate: int | None = None):
        super().__init__()
        self.folder, self.batch_size, self.num_workers, self.sample_rate = folder, batch_size, num_workers, sample_rate
        self._files: AudioFileDataset | None = None

    def connect(self, needs: DataNeeds) -> ConnectedData:
        """Takes the encoder's rate (the captioner loads its audio encoder to give it)."""
        self.sample_rate = _rate(self, needs, "the captioner (diffusion_link.caption.CaptionerModule)")
        return ConnectedData("files", type(self).__name__, description={"folder": str(Path(self.folder).resolve())}, sample_rate=self.sample_rate)

    def paths(self) -> list[str]:
        root = Path(self.folder)
        if root.is_file():
            return [str(root)]
        if not root.is_dir():
            raise FileNotFoundError(f"no such folder of audio files: {root}")
        files = sorted(str(p) for p in root.rglob("*") if p.is_file())
        if not files:
            raise FileNotFoundError(f"{root} holds no files")
        return files

    def setup(self, stage: str) -> None:
        if stage != "predict":
            return
        if self.sample_rate is None:
            raise require_connection(self, "the encoder's sample rate")
        self._files = AudioFileDataset(self.paths(), self.sample_rate)

    def predict_dataloader(self) -> DataLoader:
        if self._files is None:
            raise RuntimeError("AudioFolderDataModule.setup('predict') lists the files; Lightning calls it before predict")
        return evaluation_loader(self, self._files, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_files)


__all__ = ["AudioDataModule", "AudioFileDataset", "AudioFolderDataModule", "ShardDataset", "agree_on_rate", "collate_files"]
