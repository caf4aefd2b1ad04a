"""The DataModule of a feature store (the bridge and caption stages): caption pairs for training,
whole clips for evaluation and prediction."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from diffusion_link.data.loaders import evaluation_loader
from diffusion_link.data.resume import train_loader
from diffusion_link.data.store import FeatureStore, StoreError
from diffusion_link.data.wiring import ConnectedData, DataNeeds


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

    Training pairs are shuffled once per epoch from the run's seed, each process reading its share under DDP,
    and a fit resumed mid-epoch continues the epoch's order (:func:`~diffusion_link.data.resume.train_loader`);
    evaluation and prediction read every clip exactly once over the processes (:mod:`diffusion_link.data.loaders`).
    The datasets are built in ``setup(stage)``.

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
        self._datasets: dict[str, Dataset | list[Dataset]] = {}

    @property
    def store(self) -> FeatureStore:
        if self._store is None:
            self._store = FeatureStore(self.store_path)
        return self._store

    @property
    def predict_split_names(self) -> list[str]:
        return list(self.predict_splits) if self.predict_splits else self.store.splits

    def connect(self, needs: DataNeeds) -> ConnectedData:
        """A store needs nothing from its stage; serves the store (opened and checked here, before the
        run), its splits and the description of the data it was made from."""
        store = self.store
        return ConnectedData(
            "store", type(self).__name__, splits=dict(self.split_for), predict_splits=self.predict_split_names, description=store.meta.get("data"), store=store
        )

    def _split(self, stage: str) -> str:
        split = self.split_for[stage]
        if split is None:
            option = {"fit": "train_split", "validate": "val_split", "test": "test_split"}[stage]
            raise StoreError(f"no split is configured for '{stage}' (data.init_args.{option})")
        if len(self.store.split(split)) == 0:
            raise StoreError(f"split '{split}' of {self.store.path} is empty: nothing to {stage} on")
        return split

    def setup(self, stage: str) -> None:
        """The datasets of ``stage``: training pairs (and validation clips) for ``fit``, the clips of the
        split of ``validate`` / ``test``, those of every predict split for ``predict``."""
        if stage == "fit":
            self._datasets["fit"] = PairDataset(self.store, self._split("fit"))
        if stage in ("fit", "validate") and self.split_for["validate"] is not None:
            self._datasets["validate"] = ClipDataset(self.store, self._split("validate"))
        if stage == "test":
            self._datasets["test"] = ClipDataset(self.store, self._split("test"))
        if stage == "predict":
            self._datasets["predict"] = [ClipDataset(self.store, s) for s in self.predict_split_names]

    def _dataset(self, stage: str):
        if stage not in self._datasets:
            raise RuntimeError(f"FeatureDataModule.setup('{stage}') builds this dataset; Lightning calls it before {stage}")
        return self._datasets[stage]

    def _evaluation(self, dataset: Dataset) -> DataLoader:
        kwargs = dict(batch_size=self.eval_batch_size, num_workers=self.num_workers, collate_fn=collate_clips, persistent_workers=self.num_workers > 0)
        return evaluation_loader(self, dataset, **kwargs)

    def train_dataloader(self) -> DataLoader:
        kwargs = dict(num_workers=self.num_workers, collate_fn=collate_pairs, persistent_workers=self.num_workers > 0)
        return train_loader(self, self._dataset("fit"), self.batch_size, **kwargs)

    def val_dataloader(self) -> DataLoader | list:
        if self.split_for["validate"] is None:  # validation switched off
            return []
        return self._evaluation(self._dataset("validate"))

    def test_dataloader(self) -> DataLoader:
        return self._evaluation(self._dataset("test"))

    def predict_dataloader(self) -> list[DataLoader]:
        return [self._evaluation(dataset) for dataset in self._dataset("predict")]


__all__ = ["ClipDataset", "FeatureDataModule", "PairDataset", "collate_clips", "collate_pairs"]
