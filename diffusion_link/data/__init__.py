"""Data: audio sources (AudioCaps, the demo), the feature store, and the DataModules."""

from diffusion_link.data.audiocaps import AudioCapsCSV, AudioCapsHF, ClipRecord
from diffusion_link.data.clips import ClipCaptionDataModule
from diffusion_link.data.datamodules import AudioDataModule, AudioFolderDataModule, FeatureDataModule
from diffusion_link.data.demo import DemoAudioCaps, build_demo
from diffusion_link.data.store import FeatureStore, StoreError

__all__ = [
    "AudioCapsCSV",
    "AudioCapsHF",
    "AudioDataModule",
    "AudioFolderDataModule",
    "ClipCaptionDataModule",
    "ClipRecord",
    "DemoAudioCaps",
    "FeatureDataModule",
    "FeatureStore",
    "StoreError",
    "build_demo",
]
