"""The base of the stages that work on a feature store (bridge, caption): their input, its checks and
their export, each in one place."""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from diffusion_link.data.store import FeatureStore, StoreError, encoder_mismatch
from diffusion_link.data.wiring import ConnectedData

log = logging.getLogger(__name__)


class FeatureStage(L.LightningModule):
    """A stage whose input is a feature store, served by :class:`FeatureDataModule`.

    :func:`~diffusion_link.data.wiring.connect` hands it what the DataModule serves (:meth:`connect_data`);
    subclasses read :attr:`store` and :meth:`split` from it, check it with :meth:`check_store`, and
    implement :meth:`export`, which ``fit`` calls at its end when the ``export_dir`` hyperparameter is set.
    """

    #: what the stage exports, for the log line ("the bridge (EMA weights)")
    export_name = "the model"
    #: whether the stage also takes a DataModule of audio files (the captioner's ``predict``)
    reads_audio_files = False
    #: what the DataModule serves, once connected
    data: ConnectedData | None = None

    def data_needs(self) -> dict:
        """A feature store needs nothing from its stage."""
        return {}

    def connect_data(self, data: ConnectedData | None) -> None:
        """What the DataModule serves: the store, the split of each stage, the predict splits."""
        if (data is None or data.store is None) and not (self.reads_audio_files and data is not None and data.kind == "files"):
            found = data.datamodule if data is not None else "no DataModule that connects"
            raise StoreError(f"{type(self).__name__} works on a feature store: data.class_path must be diffusion_link.data.FeatureDataModule (got {found})")
        self.data = data

    @property
    def store(self) -> FeatureStore:
        if self.data is None or self.data.store is None:
            found = self.data.datamodule if self.data is not None else "not connected: diffusion_link.data.connect(model, datamodule, callbacks) before the run"
            raise StoreError(f"{type(self).__name__} works on a feature store: data.class_path must be diffusion_link.data.FeatureDataModule ({found})")
        return self.data.store

    def split(self, stage: str, default: str | None = None) -> str | None:
        """The store split a stage (``fit``, ``validate``, ``test``) reads."""
        return (self.data.splits.get(stage) or default) if self.data is not None else default

    def check_store(self, dim: int, dim_option: str, split: str | None = None, trained_on: dict[str, dict] | None = None) -> None:
        """Refuse a store before any work: embeddings of another size (``dim_option`` says what to set),
        non-finite embeddings in ``split``, or another encoder than each of ``trained_on``
        (``{"bridge": its encoder description, ...}``) was trained on."""
        store = self.store
        if store.dim != dim:
            raise StoreError(f"{store.path} holds {store.dim}-dimensional embeddings; {type(self).__name__} is built for {dim} ({dim_option})")
        for what, encoder in (trained_on or {}).items():
            if diff := encoder_mismatch(encoder, store.encoder):
                raise StoreError(f"the {what} was trained on another encoder than {store.path} ({what} vs store): " + "; ".join(diff))
        if split is not None and (bad := store.non_finite(split)):
            raise StoreError(f"split '{split}' of {store.path} has NaN or infinite embeddings in {len(bad)} clip(s): {bad[:10]}")

    def export(self, folder: Path) -> Path:
        raise NotImplementedError

    def on_fit_end(self) -> None:
        folder = self.hparams.get("export_dir")
        if folder and self.trainer.is_global_zero:
            log.info("Exported %s to %s", self.export_name, self.export(Path(folder)))
