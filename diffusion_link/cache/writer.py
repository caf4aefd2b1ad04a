"""Writes the cache stage's predictions into a feature store, shard by shard, resumably.

Layout while running (``<root>/<name>-<checksum>/``)::

    store.json                 status "incomplete" until every shard of every split is written
    shards/<split>/000012/     one finished shard (datasets.save_to_disk + failures.json + audio.json),
                               renamed into place atomically: a shard either exists whole or not
    shards/<split>/.000012.tmp-*  a shard being written (left over by a killed run: ignored)

When every shard exists, rank 0 checks the failures: a split that ends with no clip, or one whose share of
failed clips is above ``max_failure_rate``, fails the run (``store.json`` status "failed" with the reason,
``failures.csv`` kept to read; no split is written, the link is not moved, the run exits non-zero, and the
same command computes everything again). Otherwise it concatenates each split in shard order into ``<split>/``, merges
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
        max_failure_rate: the largest share of a split's clips that may fail (missing, undecodable, no
            caption) for the store to be complete; above it, or with no clip left in a split, the run fails.
    """

    def __init__(self, root: str = "artifacts/stores", name: str = "store", max_failure_rate: float = 0.25):
        super().__init__(write_interval="batch")
        if not 0.0 <= max_failure_rate <= 1.0:
            raise ValueError(f"max_failure_rate must lie in [0, 1], got {max_failure_rate}")
        self.max_failure_rate = max_failure_rate
        from datasets.utils.logging import disable_progress_bar

        disable_progress_bar()  # one bar per shard write would bury Lightning's own progress bar
        self.root = Path(root)
        self.name = name
        self.path: Path | None = None  # set by pending_shards, when the stage and its data are connected
        self.plan: dict[str, int] = {}
        self._pending: dict[str, list[int]] = {}
        self._complete = False
        self._done = False

    # -- where things go -------------------------------------------------------------------------

    def _shard_dir(self, split: str, shard: int) -> Path:
        return self.path / "shards" / split / f"{shard:06d}"

    def pending_shards(self, model, data) -> dict[str, list[int]]:
        """The shards the DataModule should serve, asked by ``diffusion_link.data.connect`` before the run:
        from the stage's encoder and the data's description (``data``, a ``ConnectedData`` of kind
        ``shards``) this decides the store's folder; none when a complete store of these settings is
        there, else every shard not written yet. Reads the file system only (every process asks)."""
        self.header = store_header(model.encoder.dim, model.describe(), data.description)
        self.path = (self.root / f"{self.name}-{self.header['checksum']}").resolve()
        self.plan = dict(data.shards)
        meta = self.path / "store.json"
        self._complete = meta.is_file() and json.loads(meta.read_text()).get("status") == "complete"
        if self._complete:
            log.info("Feature store %s is complete for these settings: reusing it, nothing to compute.", self.path)
            self._pending = {s: [] for s in self.plan}
            return self._pending
        self._pending = {s: [i for i in range(n) if not self._shard_dir(s, i).is_dir()] for s, n in self.plan.items()}
        left = sum(map(len, self._pending.values()))
        if done := sum(self.plan.values()) - left:
            log.info("Resuming %s: %d of %d shards already written, computing the other %d.", self.path, done, sum(self.plan.values()), left)
        return self._pending

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage != "predict":
            return
        if self.path is None:
            raise RuntimeError(
                "FeatureStoreWriter has no shard plan: diffusion_link.data.connect(model, datamodule, trainer.callbacks) "
                "gives it one before predict (the diffusion-link command does)"
            )
        self._done = False
        if self._complete:
            self._finish(trainer, finalise=False)
            return
        if trainer.is_global_zero:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / "store.json", {**self.header, "status": "incomplete", "shards": self.plan})
        if not any(self._pending.values()):  # killed after the last shard, before finalising
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
                self._finalise(self.plan)
            if self._status()[0] == "complete":
                self._link()
                self._summary()
        trainer.strategy.barrier("feature-store-final")
        status, reason = self._status()
        if status != "complete":
            raise RuntimeError(f"Feature store {self.path} failed: {reason}")

    def _status(self) -> tuple[str, str]:
        meta = json.loads((self.path / "store.json").read_text())
        return meta.get("status", ""), meta.get("reason", "")

    def _verdict(self, tried: dict[str, int], failures: list[tuple]) -> str:
        """Why the store must not be complete ("" when it may be): a split with no clip, or too many failures."""
        failed = {s: sum(1 for f in failures if f[1] == s) for s in tried}
        for split, n in tried.items():
            if n - failed[split] <= 0:
                first = next((f for f in sorted(failures) if f[1] == split), None)
                example = f" (first: {first[0]} at {first[2]}: {first[3]})" if first else " (the source lists no clip for it)"
                return f"split '{split}' has no usable clip: {failed[split]} of {n} failed{example}. See {self.path / 'failures.csv'}"
            if failed[split] / n > self.max_failure_rate:
                return (
                    f"{failed[split]} of {n} clips of split '{split}' failed ({failed[split] / n:.0%}), above max_failure_rate "
                    f"{self.max_failure_rate:.0%}; see {self.path / 'failures.csv'} (raise the bound on FeatureStoreWriter to accept it)"
                )
        return ""

    def _finalise(self, plan: dict[str, int]) -> None:
        from datasets import concatenate_datasets, load_from_disk

        missing = [str(self._shard_dir(s, i)) for s, n in plan.items() for i in range(n) if not self._shard_dir(s, i).is_dir()]
        if missing:
            raise RuntimeError(
                f"{len(missing)} shard(s) of {self.path} were not written (first: {missing[0]}). "
                "Run the same command again to compute them; finished shards are kept."
            )
        failures, audio, counts, parts_of = [], [], {}, {}
        for split, n in plan.items():
            parts = [load_from_disk(str(d)) for i in range(n) if ((d := self._shard_dir(split, i)) / "state.json").is_file()]
            for i in range(n):
                failures += [(c, split, p, r) for c, p, r in json.loads((self._shard_dir(split, i) / "failures.json").read_text())]
                if (located := self._shard_dir(split, i) / "audio.json").is_file():
                    audio += [(c, split, p) for c, p in json.loads(located.read_text())]
            parts_of[split] = parts
            counts[split] = sum(len(p) for p in parts)
        with open(self.path / "failures.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["clip_id", "split", "path", "reason"])
            writer.writerows(sorted(failures))
        tried = {s: counts[s] + sum(1 for f in failures if f[1] == s) for s in plan}
        if reason := self._verdict(tried, failures):
            write_json(self.path / "store.json", {**self.header, "status": "failed", "reason": reason, "rows": counts, "failures": len(failures)})
            shutil.rmtree(self.path / "shards", ignore_errors=True)  # the same command computes everything again
            return
        for split, parts in parts_of.items():
            merged = concatenate_datasets(parts) if parts else rows_to_dataset({c: [] for c in COLUMNS}, self.header["dim"])
            with atomic_folder(self.path / split) as tmp:
                merged.save_to_disk(str(tmp))
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
