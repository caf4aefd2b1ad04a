"""The one connection between a stage and its DataModule, made before a run by :func:`connect` (the CLI's
``before_fit`` / ``before_validate`` / ``before_test`` / ``before_predict``; a test that builds its own
``Trainer`` calls it too)::

    needs = DataNeeds(**model.data_needs())        # the stage: what it needs from its data
    data = datamodule.connect(needs)                # the DataModule: takes it, says what it serves
    datamodule.only_shards(writer.pending_shards(model, data))   # a shard writer (the cache stage's)
    model.connect_data(data)                        # the stage: receives what the DataModule serves

Nothing else passes between them: no stage or callback reads the trainer's DataModule, no callback
writes into the DataModule, and every DataModule builds its datasets in ``setup(stage)`` from what was
connected, whatever the order of Lightning's hooks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:
    from diffusion_link.data.store import FeatureStore


@dataclass(frozen=True)
class DataNeeds:
    """What a stage needs from its data. A stage's ``data_needs()`` returns these fields as a plain
    ``dict`` (the encoder stage sits below ``data/`` in the layering and imports nothing from it).

    Attributes:
        sample_rate: the rate audio is decoded at (the encoder's), or a function that returns it (the
            captioner loads its audio encoder only when its data are audio files); ``None``: no audio.
        features: the encoder's fixed preprocessing of a waveform, applied once per clip (the encoder stage).
    """

    sample_rate: int | Callable[[], int] | None = None
    features: Callable[[Any], Any] | None = None

    def rate(self) -> int | None:
        """The sample rate, asked for (and, for the captioner, its encoder loaded) only by a DataModule of audio."""
        return self.sample_rate() if callable(self.sample_rate) else self.sample_rate


@dataclass(frozen=True)
class ConnectedData:
    """What a DataModule serves, handed to its stage (``connect_data``) and to the callbacks.

    Attributes:
        kind: ``shards`` (raw audio, for the cache stage), ``clips`` (clips with captions, for the
            encoder stage), ``store`` (a feature store) or ``files`` (a folder of audio files).
        datamodule: the DataModule's class name, for error messages.
        splits: the split each of ``fit``, ``validate``, ``test`` reads (``None``: none).
        predict_splits: the splits ``predict`` runs over, one dataloader each, in order.
        description: the data's description, for provenance (an export's ``trained_on``, a store's key).
        store: the feature store (kind ``store``).
        shards: the number of shards of each split (kind ``shards``).
        sample_rate: the rate audio is decoded at (kinds ``shards``, ``clips``, ``files``).
    """

    kind: str
    datamodule: str
    splits: dict[str, str | None] = field(default_factory=dict)
    predict_splits: list[str] = field(default_factory=list)
    description: dict | None = None
    store: FeatureStore | None = None
    shards: dict[str, int] | None = None
    sample_rate: int | None = None


@runtime_checkable
class ShardSelector(Protocol):
    """A callback that decides which shards the DataModule serves (the cache stage's store writer:
    those not written yet), given the stage and what the DataModule serves."""

    def pending_shards(self, model: Any, data: ConnectedData) -> dict[str, list[int]]: ...


def connect(model: Any, datamodule: Any, callbacks: list | tuple | None = ()) -> ConnectedData | None:
    """Connect a stage (``model``) and its DataModule, and the callbacks that take part, before a run.

    A DataModule without ``connect`` (or none) serves nothing to connect: the stage gets ``None`` and says
    what it expected. Returns what the DataModule serves.
    """
    ask = getattr(model, "data_needs", None)
    needs = ask() if ask is not None else {}
    needs = needs if isinstance(needs, DataNeeds) else DataNeeds(**needs)
    data = datamodule.connect(needs) if datamodule is not None and hasattr(datamodule, "connect") else None
    for callback in callbacks or ():
        if isinstance(callback, ShardSelector):
            if data is None or data.shards is None:
                served = data.datamodule if data is not None else type(datamodule).__name__
                raise TypeError(f"{type(callback).__name__} writes shards: data.class_path must be diffusion_link.data.AudioDataModule (got {served})")
            datamodule.only_shards(callback.pending_shards(model, data))
    if hasattr(model, "connect_data"):
        model.connect_data(data)
    return data


def require_connection(datamodule: Any, what: str) -> RuntimeError:
    """The error of a DataModule set up before it was connected to its stage."""
    return RuntimeError(
        f"{type(datamodule).__name__} is not connected to its stage ({what}): call "
        "diffusion_link.data.connect(model, datamodule, trainer.callbacks) before trainer.fit/validate/test/predict "
        "(the diffusion-link command does)"
    )


__all__ = ["ConnectedData", "DataNeeds", "ShardSelector", "connect", "require_connection"]
