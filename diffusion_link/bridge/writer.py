"""Writes ``predict``'s bridged embeddings as a new feature store in the same format.

The output store is the source store with ``audio_embedding`` replaced by the bridged embedding;
captions and text embeddings are copied. Its ``store.json`` keeps the source's encoder and data
description and adds ``bridge`` (name, settings, training record) and ``source_store``, so the next
stage can tell a bridged store from a raw one. Each DDP rank writes its own parts; rank 0 merges
them by row (dropping the rows the distributed sampler repeated).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
from lightning.pytorch.callbacks import BasePredictionWriter

from diffusion_link.data.store import FeatureStore, store_header, write_split
from diffusion_link.files import atomic_folder, write_json


class BridgedStoreWriter(BasePredictionWriter):
    """Args:
    output: folder of the bridged store (replaced when it exists).
    """

    def __init__(self, output: str = "artifacts/stores/demo-bridged"):
        super().__init__(write_interval="batch")
        self.output = Path(output)

    def _parts(self) -> Path:
        return self.output.with_name(self.output.name + ".parts")

    def on_predict_start(self, trainer, pl_module) -> None:
        if trainer.is_global_zero:
            shutil.rmtree(self._parts(), ignore_errors=True)
        trainer.strategy.barrier("bridged-store-start")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx=0) -> None:
        split = pl_module.data.predict_splits[dataloader_idx]
        folder = self._parts() / split
        folder.mkdir(parents=True, exist_ok=True)
        np.savez(folder / f"rank{trainer.global_rank}-{batch_idx:07d}.npz", row=prediction["row"].numpy(), bridged=prediction["bridged"].numpy())

    def on_predict_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("bridged-store-parts")
        if trainer.is_global_zero:
            self._finalise(pl_module.store, pl_module.data.predict_splits, pl_module.bridge_record())
        trainer.strategy.barrier("bridged-store-final")

    def _finalise(self, source: FeatureStore, splits: list[str], bridge: dict) -> None:
        rows = {}
        with atomic_folder(self.output) as tmp:
            for split in splits:
                n = len(source.split(split))
                bridged = np.full((n, source.dim), np.nan, dtype=np.float32)
                for part in sorted((self._parts() / split).glob("*.npz")):
                    with np.load(part) as data:
                        bridged[data["row"]] = data["bridged"]
                if n and np.isnan(bridged).any():
                    raise RuntimeError(f"rows of split '{split}' were not bridged; run predict again")
                rows[split] = write_split(tmp / split, _replace_audio(source, split, bridged), source.dim)
            header = store_header(source.dim, source.encoder, source.meta["data"], extra={"bridge": bridge, "source_store": str(source.path)})
            write_json(tmp / "store.json", {**header, "status": "complete", "rows": rows})
            for name in ("failures.csv", "audio.csv"):
                if (source.path / name).is_file():
                    shutil.copy(source.path / name, tmp / name)
        shutil.rmtree(self._parts(), ignore_errors=True)
        print(f"Bridged feature store: {self.output} ({', '.join(f'{s} {n}' for s, n in rows.items())})", flush=True)


def _replace_audio(source: FeatureStore, split: str, bridged: np.ndarray):
    """The source split's record batches with the bridged audio column, cast to the store schema
    (a store written by another tool may use plain lists or float64)."""
    from diffusion_link.data.store import features

    schema = features(source.dim).arrow_schema
    start = 0
    for batch in source.iter_batches(split):
        n = batch.num_rows
        audio = pa.FixedSizeListArray.from_arrays(pa.array(bridged[start : start + n].reshape(-1)), source.dim)
        start += n
        columns = [batch.column("clip_id"), audio, batch.column("captions"), batch.column("text_embeddings")]
        table = pa.Table.from_arrays(columns, names=schema.names).cast(schema)
        yield from table.to_batches()
