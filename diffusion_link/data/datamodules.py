"""DataModules: raw audio for the cache stage, feature stores for every later stage."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from diffusion_link.data.audio import AudioDecodeError
from diffusion_link.data.audiocaps import AudioSource, ClipRecord, describe_records
from diffusion_link.data.store import FeatureStore, StoreError

# ----------------------------------------------------------------------------------------------
# Raw audio, in shards (cache stage)
# ----------------------------------------------------------------------------------------------


def _agree_on_rate(configured: int | None, encoder_rate: int) -> int:
    if configured is not None and configured != encoder_rate:
        raise ValueError(
            f"data.init_args.sample_rate is {configured} Hz but the encoder expects {encoder_rate} Hz; leave sample_rate unset (null) to use the encoder's rate"
        )
    return encoder_rate


def _audio_file(record: ClipRecord) -> str:
    """Where a clip's audio file is (absolute), for the report's players; "" when it lives inside a dataset."""
    return str(Path(record.audio).resolve()) if isinstance(record.audio, str) else ""


def _identity(item):
    return item


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
            the cache stage sets (48 kHz for CLAP, 16 kHz for the demo's trained encoder).
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

    def prepare_data(self) -> None:
        prepare = getattr(self.source, "prepare", None)
        if prepare is not None:
            prepare()

    def use_sample_rate(self, rate: int) -> None:
        """The encoder's rate; an explicitly configured different rate is an error, not a silent resample."""
        self.sample_rate = _agree_on_rate(self.sample_rate, rate)

    @property
    def records(self) -> dict[str, list[ClipRecord]]:
        if self._records is None:
            self._records = {s: self.source.records(s) for s in self.split_names}
        return self._records

    def shard_plan(self) -> dict[str, int]:
        """Number of shards of each split."""
        return {s: math.ceil(len(r) / self.shard_size) for s, r in self.records.items()}

    def only_shards(self, shards: dict[str, list[int]]) -> None:
        """Serve only these shards of each split (the store writer's: the others are already written).
        Call it before the dataloaders are built; Lightning calls callbacks' ``setup``, where the
        writer does, before it asks for them."""
        plan = self.shard_plan()
        unknown = {s: [i for i in ids if not 0 <= i < plan.get(s, 0)] for s, ids in shards.items()}
        if any(unknown.values()) or set(shards) - set(plan):
            raise ValueError(f"no such shards in the plan {plan}: {unknown}")
        self._shards = {s: list(shards.get(s, [])) for s in plan}

    def describe(self) -> dict:
        return {**describe_records(self.source, self.records), "shard_size": self.shard_size, "sample_rate": self.sample_rate}

    def predict_dataloader(self) -> list[DataLoader]:
        plan = self.shard_plan()
        pending = self._shards if self._shards is not None else {s: list(range(n)) for s, n in plan.items()}
        return [
            DataLoader(
                ShardDataset(self.source, s, self.records[s], self.shard_size, pending[s], self.sample_rate),
                batch_size=None,
                collate_fn=_identity,
                num_workers=self.num_workers,
                persistent_workers=False,
                prefetch_factor=2 if self.num_workers else None,
            )
            for s in self.split_names
        ]


# ----------------------------------------------------------------------------------------------
# Feature stores (bridge and caption stages)
# ----------------------------------------------------------------------------------------------


class PairDataset(Dataset):
    """Every (clip, caption) of a split as a training pair: audio embedding, text embedding, caption."""

    def __init__(self, store: FeatureStore, split: str):
        self.ds = store.split(split)
        counts = store.caption_counts(split)
        self.rows = np.repeat(np.arange(len(counts)), counts)
        self.caption = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        rows = self.rows[indices]
        batch = self.ds[rows.tolist()]
        out = []
        for j, k in enumerate(self.caption[indices]):
            out.append(
                {
                    "clip_id": batch["clip_id"][j],
                    "audio_embedding": np.asarray(batch["audio_embedding"][j], dtype=np.float32),
                    "text_embedding": np.asarray(batch["text_embeddings"][j][k], dtype=np.float32),
                    "caption": batch["captions"][j][k],
                }
            )
        return out


class ClipDataset(Dataset):
    """One item per clip with all its references (evaluation)."""

    def __init__(self, store: FeatureStore, split: str):
        self.ds = store.split(split)

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> list[dict]:
        batch = self.ds[list(map(int, indices))]
        return [
            {
                "row": int(indices[j]),
                "clip_id": batch["clip_id"][j],
                "audio_embedding": np.asarray(batch["audio_embedding"][j], dtype=np.float32),
                "text_embeddings": np.stack(batch["text_embeddings"][j]).astype(np.float32),
                "captions": list(batch["captions"][j]),
            }
            for j in range(len(indices))
        ]


def collate_pairs(items: list[dict]) -> dict:
    return {
        "clip_id": [x["clip_id"] for x in items],
        "audio_embedding": torch.from_numpy(np.stack([x["audio_embedding"] for x in items])),
        "text_embedding": torch.from_numpy(np.stack([x["text_embedding"] for x in items])),
        "caption": [x["caption"] for x in items],
    }


def collate_clips(items: list[dict]) -> dict:
    """Clips with a ragged number of references: ``text_embeddings`` is (B, R_max, D) plus ``n_refs``."""
    n_refs = torch.tensor([len(x["text_embeddings"]) for x in items])
    dim = items[0]["audio_embedding"].shape[-1] if items else 0
    texts = torch.zeros(len(items), int(n_refs.max()) if len(items) else 0, dim)
    for i, x in enumerate(items):
        texts[i, : len(x["text_embeddings"])] = torch.from_numpy(x["text_embeddings"])
    return {
        "row": torch.tensor([x["row"] for x in items], dtype=torch.long),
        "clip_id": [x["clip_id"] for x in items],
        "audio_embedding": torch.from_numpy(np.stack([x["audio_embedding"] for x in items])),
        "text_embeddings": texts,
        "n_refs": n_refs,
        "captions": [x["captions"] for x in items],
    }


class FeatureDataModule(L.LightningDataModule):
    """Serves a feature store: caption pairs for training, whole clips for evaluation.

    Shuffling (training only), batching and DDP sharding are Lightning's: the default samplers
    are replaced by distributed ones when the trainer runs on several processes.

    Args:
        store: path of a feature store directory.
        batch_size: items per training batch.
        eval_batch_size: clips per validation, test and predict batch (default: ``batch_size``). The
            captioner generates one batch at a time, so larger evaluation batches read the LLM's
            weights fewer times.
        num_workers: loader processes.
        train_split, val_split, test_split: which split serves which stage (``None`` disables it).
        predict_splits: the splits ``predict`` runs over, one dataloader each (default: all).
    """

    def __init__(
        self,
        store: str,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        predict_splits: list[str] | None = None,
    ):
        super().__init__()
        self.store_path = store
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.split_for = {"fit": train_split, "validate": val_split, "test": test_split}
        self.predict_splits = predict_splits
        self._store: FeatureStore | None = None

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            self._store = FeatureStore(self.store_path)
        return self._store

    def _split(self, stage: str) -> str:
        split = self.split_for[stage]
        if split is None:
            option = {"fit": "train_split", "validate": "val_split", "test": "test_split"}[stage]
            raise StoreError(f"no split is configured for '{stage}' (data.init_args.{option})")
        if len(self.store.split(split)) == 0:
            raise StoreError(f"split '{split}' of {self.store.path} is empty: nothing to {stage} on")
        return split

    def _loader(self, dataset: Dataset, shuffle: bool, collate) -> DataLoader:
        sampler = None
        trainer = getattr(self, "trainer", None)
        if not shuffle and trainer is not None and trainer.world_size > 1:
            # Evaluation: every clip exactly once. Lightning's default DistributedSampler pads the last
            # batch with repeated clips, which would count them twice in the gap metrics and scores.
            from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler

            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if shuffle else self.eval_batch_size,
            shuffle=shuffle,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(PairDataset(self.store, self._split("fit")), True, collate_pairs)

    def val_dataloader(self) -> DataLoader | list:
        if self.split_for["validate"] is None:  # validation switched off
            return []
        return self._loader(ClipDataset(self.store, self._split("validate")), False, collate_clips)

    def test_dataloader(self) -> DataLoader:
        return self._loader(ClipDataset(self.store, self._split("test")), False, collate_clips)

    @property
    def predict_split_names(self) -> list[str]:
        return list(self.predict_splits) if self.predict_splits else self.store.splits

    def predict_dataloader(self) -> list[DataLoader]:
        return [self._loader(ClipDataset(self.store, s), False, collate_clips) for s in self.predict_split_names]


# ----------------------------------------------------------------------------------------------
# A folder of audio files (end-user inference)
# ----------------------------------------------------------------------------------------------


class AudioFileDataset(Dataset):
    def __init__(self, paths: list[str], sample_rate: int):
        self.paths, self.sample_rate = paths, sample_rate

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        from diffusion_link.data.audio import load_audio

        from diffusion_link.data.audio import AUDIO_EXTENSIONS

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
        sample_rate: decoding rate; ``None`` (default): the encoder's, set by the captioner.
    """

    def __init__(self, folder: str, batch_size: int = 8, num_workers: int = 0, sample_rate: int | None = None):
        super().__init__()
        self.folder, self.batch_size, self.num_workers, self.sample_rate = folder, batch_size, num_workers, sample_rate

    def use_sample_rate(self, rate: int) -> None:
        """The encoder's rate; an explicitly configured different rate is an error."""
        self.sample_rate = _agree_on_rate(self.sample_rate, rate)

    def paths(self) -> list[str]:
        from pathlib import Path

        root = Path(self.folder)
        if root.is_file():
            return [str(root)]
        if not root.is_dir():
            raise FileNotFoundError(f"no such folder of audio files: {root}")
        files = sorted(str(p) for p in root.rglob("*") if p.is_file())
        if not files:
            raise FileNotFoundError(f"{root} holds no files")
        return files

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(AudioFileDataset(self.paths(), self.sample_rate), batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=collate_files)
