"""Writes the cache stage's predictions into a feature store, shard by shard, resumably.

Layout while running (``<root>/<name>-<checksum>/``)::

    store.json                 status "incomplete" until every shard of every split is written
    shards/<split>/000012/     one finished shard (datasets.save_to_disk + failures.json + audio.json),
                               renamed into place atomically: a shard either exists whole or not
    shards/<split>/.000012.tmp-*  a shard being written (left over by a killed run: ignored)

When every shard exists, rank 0 concatenates each split in shard order into ``<split>/``, merges
the failures into ``failures.csv`` and each clip's audio file into ``audio.csv`` (what the report's
players link to), marks ``store.json`` complete, removes ``shards/`` and points
the link ``<root>/<name>`` at the store. A killed run started again recomputes only the shards
that are missing; an unchanged complete store is reused without computing anything.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import BasePredictionWriter

from diffusion_link.data.store import COLUMNS, rows_to_dataset, store_header
from diffusion_link.files import atomic_folder, write_json

log = logging.getLogger(__name__)


class FeatureStoreWriter(BasePredictionWriter):
    """Prediction writer of the cache stage.

    Args:
        root: folder that holds stores.
        name: the store's name; the folder is ``<name>-<checksum>`` and ``<root>/<name>`` links to it.
    """

    def __init__(self, root: str = "artifacts/stores", name: str = "store"):
        super().__init__(write_interval="batch")
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()  # one bar per shard write would bury Lightning's own progress bar
        self.root = Path(root)
        self.name = name
        self.path: Path | None = None
        self._done = False

    # -- where things go -------------------------------------------------------------------------

    def _shard_dir(self, split: str, shard: int) -> Path:
        return self.path / "shards" / split / f"{shard:06d}"

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "shard_plan"):
            raise TypeError("FeatureStoreWriter needs the AudioDataModule (data.class_path) to know the shards")
        datamodule.use_sample_rate(pl_module.sample_rate)
        self.header = store_header(pl_module.encoder.dim, pl_module.describe(), datamodule.describe())
        self.path = (self.root / f"{self.name}-{self.header['checksum']}").resolve()
        meta = self.path / "store.json"
        if meta.is_file() and json.loads(meta.read_text()).get("status") == "complete":
            log.info("Feature store %s is complete for these settings: reusing it, nothing to compute.", self.path)
            datamodule.only_shards({})
            self._finish(trainer, finalise=False)
            return
        plan = datamodule.shard_plan()
        if trainer.is_global_zero:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(meta, {**self.header, "status": "incomplete", "shards": plan})
        pending = {s: [i for i in range(n) if not self._shard_dir(s, i).is_dir()] for s, n in plan.items()}
        done = sum(plan.values()) - sum(map(len, pending.values()))
        if done:
            log.info(
                "Resuming %s: %d of %d shards already written, computing the other %d.", self.path, done, sum(plan.values()), sum(map(len, pending.values()))
            )
        datamodule.only_shards(pending)
        if not any(pending.values()):  # killed after the last shard, before finalising
            self._finish(trainer, finalise=True)

    # -- writing ---------------------------------------------------------------------------------

    def write_on_batch_end(self, trainer, pl_module, prediction: dict[str, Any], batch_indices, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        final = self._shard_dir(prediction["split"], prediction["shard"])
        if final.is_dir():  # a shard repeated by the distributed sampler's padding: already written
            return
        rows = {
            "clip_id": prediction["clip_ids"],
            "audio_embedding": prediction["audio_embedding"].numpy(),
            "captions": prediction["captions"],
            "text_embeddings": [t.numpy() for t in prediction["text_embeddings"]],
        }
        with atomic_folder(final, replace=False) as tmp:  # another rank may write the same padded shard first
            if rows["clip_id"]:  # (else every clip of the shard failed: only the failures are recorded)
                rows_to_dataset(rows, self.header["dim"]).save_to_disk(str(tmp))
            (tmp / "failures.json").write_text(json.dumps(prediction["failures"]))
            (tmp / "audio.json").write_text(json.dumps(list(zip(prediction["clip_ids"], prediction.get("audio", [""] * len(prediction["clip_ids"]))))))

    def on_predict_end(self, trainer, pl_module) -> None:
        if not self._done:
            self._finish(trainer, finalise=True)

    # -- finalising ------------------------------------------------------------------------------

    def _finish(self, trainer, finalise: bool) -> None:
        self._done = True
        trainer.strategy.barrier("feature-store-shards")
        if trainer.is_global_zero:
            if finalise:
                self._finalise(trainer.datamodule.shard_plan())
            self._link()
            self._summary()
        trainer.strategy.barrier("feature-store-final")

    def _finalise(self, plan: dict[str, int]) -> None:
        from datasets import concatenate_datasets, load_from_disk

        missing = [str(self._shard_dir(s, i)) for s, n in plan.items() for i in range(n) if not self._shard_dir(s, i).is_dir()]
        if missing:
            raise RuntimeError(
                f"{len(missing)} shard(s) of {self.path} were not written (first: {missing[0]}). "
                "Run the same command again to compute them; finished shards are kept."
            )
        failures, audio, counts = [], [], {}
        for split, n in plan.items():
            parts = [load_from_disk(str(d)) for i in range(n) if ((d := self._shard_dir(split, i)) / "state.json").is_file()]
            for i in range(n):
                failures += [(c, split, p, r) for c, p, r in json.loads((self._shard_dir(split, i) / "failures.json").read_text())]
                if (located := self._shard_dir(split, i) / "audio.json").is_file():
                    audio += [(c, split, p) for c, p in json.loads(located.read_text())]
            merged = concatenate_datasets(parts) if parts else rows_to_dataset({c: [] for c in COLUMNS}, self.header["dim"])
            with atomic_folder(self.path / split) as tmp:
                merged.save_to_disk(str(tmp))
            counts[split] = len(merged)
        with open(self.path / "failures.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["clip_id", "split", "path", "reason"])
            writer.writerows(sorted(failures))
        with open(self.path / "audio.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["clip_id", "split", "path"])
            writer.writerows(audio)
        write_json(self.path / "store.json", {**self.header, "status": "complete", "rows": counts, "failures": len(failures)})
        shutil.rmtree(self.path / "shards", ignore_errors=True)

    def _link(self) -> None:
        link = self.root / self.name
        tmp = self.root / f".{self.name}.link-{os.getpid()}"
        if link.exists() and not link.is_symlink():
            log.warning("%s exists and is not a link; not pointing it at %s", link, self.path)
            return
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(self.path.name)
        os.replace(tmp, link)

    def _summary(self) -> None:
        meta = json.loads((self.path / "store.json").read_text())
        rows = ", ".join(f"{s} {n}" for s, n in meta.get("rows", {}).items())
        weights = meta["encoder"].get("weights", "?")
        lines = [
            f"Feature store: {self.path}",
            f"  link:     {self.root / self.name}",
            f"  clips:    {rows}",
            f"  failures: {meta.get('failures', 0)} (see failures.csv)",
            f"  encoder:  {meta['encoder'].get('family')} {weights}",
        ]
        print("\n".join(lines), flush=True)
