"""Every DataModule, by kind: raw audio (:mod:`~diffusion_link.data.audio_modules`: shards for the cache
stage, a folder of files for captioning), clips with captions for the encoder stage
(:mod:`~diffusion_link.data.clips`), a feature store for the later stages
(:mod:`~diffusion_link.data.feature_modules`). Each is connected to its stage by
:func:`~diffusion_link.data.wiring.connect`."""

from diffusion_link.data.audio_modules import AudioDataModule, AudioFolderDataModule
from diffusion_link.data.clips import ClipCaptionDataModule
from diffusion_link.data.feature_modules import FeatureDataModule

__all__ = ["AudioDataModule", "AudioFolderDataModule", "ClipCaptionDataModule", "FeatureDataModule"]
