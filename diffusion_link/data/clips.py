"""Clips and captions for training a contrastive encoder (the ``encoder`` stage).

The encoder's fixed preprocessing (its audio tower's ``features``: a log-mel spectrogram, or
laion-clap's quantised waveform) comes from the stage's ``data_needs()`` through
:func:`~diffusion_link.data.wiring.connect`, and is applied **once per clip** in ``setup(stage)``;
every epoch then reads the features from memory. With a waveform augmentation
(:class:`~diffusion_link.data.augment.WaveAugment`), the training split keeps its waveforms instead (int16)
and each item is augmented afresh, then turned into features. Crops, the tower's own feature-level
augmentation and the frozen text tower's outputs are the module's business.

Training items are (clip, one of its captions), a caption drawn afresh each epoch; evaluation items
are whole clips with every reference.
"""

from __future__ import annotations

import logging
from typing import Callable

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from diffusion_link.data.audio import AudioDecodeError
from diffusion_link.data.augment import WaveAugment
from diffusion_link.data.audiocaps import AudioSource, describe_records
from diffusion_link.data.loaders import evaluation_loader
from diffusion_link.data.resume import train_loader
from diffusion_link.data.wiring import ConnectedData, DataNeeds, require_connection

log = logging.getLogger(__name__)


class FeatureClips(Dataset):
    """One split's clips as precomputed features (computed here once, with a progress bar); with
    ``keep_waves``, as int16 waveforms instead (for an on-the-fly waveform augmentation)."""

    def __init__(
        self, source: AudioSource, split: str, features: Callable[[np.ndarray], torch.Tensor], sample_rate: int, progress: bool = True, keep_waves: bool = False
    ):
        from tqdm.auto import tqdm

        records = source.records(split)
        if not records:
            raise ValueError(f"split '{split}' of {type(source).__name__} has no clips: nothing to train or evaluate on")
        self.clip_ids, self.features, self.captions, self.failures = [], [], [], []
        for record in tqdm(records, desc=f"features of {split} (once)", disable=not progress, leave=False):
            if not record.captions:
                self.failures.append((record.clip_id, "no caption"))
                continue
            try:
                wave = source.load(record, split, sample_rate)
            except AudioDecodeError as err:
                self.failures.append((record.clip_id, err.reason))
                continue
            self.clip_ids.append(record.clip_id)
            self.features.append((np.clip(wave, -1, 1) * 32767).astype(np.int16) if keep_waves else features(wave))
            self.captions.append(list(record.captions))
        if self.failures:
            log.warning("%d clip(s) of split '%s' skipped (first: %s: %s)", len(self.failures), split, *self.failures[0])
        if not self.clip_ids:
            raise ValueError(f"no usable clip in split '{split}': {len(self.failures)} failed (first: {self.failures[0]})")

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int) -> dict:
        return {"clip_id": self.clip_ids[i], "features": self.features[i], "captions": self.captions[i]}


class TrainPairs(Dataset):
    """(clip, one caption) per clip, the caption drawn each time from torch's generator (seeded by
    ``seed_everything``; the loader runs in the main process), so runs are deterministic.

    With ``augment`` (the clips hold int16 waveforms), each item's waveform is augmented with a numpy
    generator seeded from torch's, mixed with another clip where the augmentation asks, then ``features``."""

    def __init__(self, clips: FeatureClips, augment: WaveAugment | None = None, features: Callable | None = None, sample_rate: int | None = None):
        self.clips, self.augment, self.to_features, self.sample_rate = clips, augment, features, sample_rate

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> dict:
        item = self.clips[i]
        k = int(torch.randint(len(item["captions"]), (1,)))
        features = item["features"]
        if self.augment is not None:
            rng = np.random.default_rng(int(torch.randint(2**62, (1,))))
            other = self.clips.features[int(rng.integers(len(self.clips)))] if self.augment.wants_other else None
            wave = self.augment(features.astype(np.float32) / 32767, self.sample_rate, rng, None if other is None else other.astype(np.float32) / 32767)
            features = self.to_features(wave)
        return {"clip_id": item["clip_id"], "features": features, "caption": item["captions"][k]}


def _collate(items: list[dict]) -> dict:
    return {key: [x[key] for x in items] for key in items[0]} if items else {}


class ClipCaptionDataModule(L.LightningDataModule):
    """Audio clips with captions from an audio source, for training and evaluating an encoder.

    Args:
        source: an audio source (:class:`~diffusion_link.data.demo.DemoAudioCaps`,
            :class:`~diffusion_link.data.audiocaps.AudioCapsCSV`, :class:`~diffusion_link.data.audiocaps.AudioCapsHF`).
        train_split, val_split, test_split: which split serves which stage.
        batch_size: clips per batch (contrastive: every other clip of the batch is a negative).
        augment: waveform augmentation of the training clips, applied afresh to every item
            (:class:`~diffusion_link.data.augment.WaveAugment`); ``None``: the fixed features only.
    """

    def __init__(
        self,
        source: AudioSource,
        train_split: str = "train",
        val_split: str | None = "val",
        test_split: str = "test",
        batch_size: int = 64,
        augment: WaveAugment | None = None,
    ):
        super().__init__()
        self.source, self.batch_size, self.augment = source, batch_size, augment
        self.split_for = {"fit": train_split, "validate": val_split, "test": test_split}
        self._features: Callable | None = None
        self.sample_rate: int | None = None
        self._clips: dict[str, FeatureClips] = {}

    def prepare_data(self) -> None:
        prepare = getattr(self.source, "prepare", None)
        if prepare is not None:
            prepare()

    def connect(self, needs: DataNeeds) -> ConnectedData:
        """Takes the encoder's fixed preprocessing and the rate it expects (the encoder stage's needs);
        serves the splits and the description of the data (what the export records it was trained on)."""
        rate = needs.rate()
        if needs.features is None or rate is None:
            raise TypeError(
                "ClipCaptionDataModule serves encoder features: use it with the encoder stage "
                "(diffusion_link.encoder.EncoderModule), whose data_needs() gives them"
            )
        if (needs.features, rate) != (self._features, self.sample_rate):  # another encoder: other features
            self._clips.clear()
        self._features, self.sample_rate = needs.features, rate
        return ConnectedData("clips", type(self).__name__, splits=dict(self.split_for), description=self.describe(), sample_rate=rate)

    def setup(self, stage: str) -> None:
        """The features of the splits ``stage`` reads (``fit``: train and val), each computed once."""
        if self._features is None:
            raise require_connection(self, "the encoder's features")
        for key in {"fit": ("fit", "validate"), "validate": ("validate",), "test": ("test",)}.get(stage, ()):
            split = self.split_for[key]
            waves = key == "fit" and self.augment is not None  # the augmented training split keeps waveforms
            if split is not None and self._name(split, waves) not in self._clips:
                self._clips[self._name(split, waves)] = FeatureClips(self.source, split, self._features, self.sample_rate, keep_waves=waves)

    @staticmethod
    def _name(split: str, waves: bool) -> str:
        return f"{split} (waveforms)" if waves else split

    def clips(self, split: str, waves: bool = False) -> FeatureClips:
        if self._name(split, waves) not in self._clips:
            raise RuntimeError(f"ClipCaptionDataModule.setup() computes the features of split '{split}'; Lightning calls it before the run")
        return self._clips[self._name(split, waves)]

    def describe(self) -> dict:
        """The data the encoder was trained and selected on (goes into the export)."""
        splits = [s for s in (self.split_for["fit"], self.split_for["validate"]) if s]
        return {
            **describe_records(self.source, {s: self.source.records(s) for s in splits}),
            "train_split": self.split_for["fit"],
            "val_split": self.split_for["validate"],
            "augment": self.augment.describe() if self.augment is not None else None,
        }

    def train_dataloader(self) -> DataLoader:
        dataset = TrainPairs(self.clips(self.split_for["fit"], waves=self.augment is not None), self.augment, self._features, self.sample_rate)
        # resumable mid-epoch, as the bridge and captioner fits (data/resume.py): a resumed encoder fit replays the
        # uninterrupted one (the captions drawn per item come from torch's generator, which RandomState restores)
        return train_loader(self, dataset, self.batch_size, collate_fn=_collate, num_workers=0, drop_last=len(dataset) > self.batch_size)

    def _evaluation(self, split: str) -> DataLoader:
        return evaluation_loader(self, self.clips(split), batch_size=self.batch_size, collate_fn=_collate, num_workers=0)

    def val_dataloader(self) -> DataLoader | list:
        if self.split_for["validate"] is None:
            return []
        return self._evaluation(self.split_for["validate"])

    def test_dataloader(self) -> DataLoader:
        return self._evaluation(self.split_for["test"])


__all__ = ["ClipCaptionDataModule"]
