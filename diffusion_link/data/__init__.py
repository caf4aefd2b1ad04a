"""Data: audio sources (AudioCaps, aac-datasets' layouts, a corpus of CSV / JSONL, the demo), the feature
store, the DataModules and their connection to the stages (:func:`connect`)."""

from diffusion_link.data.aac import AACDatasetsSource
from diffusion_link.data.audiocaps import AudioCapsCSV, AudioCapsHF, ClipRecord
from diffusion_link.data.corpus import CaptionCorpus
from diffusion_link.data.audio_modules import AudioDataModule, AudioFolderDataModule
from diffusion_link.data.clips import ClipCaptionDataModule
from diffusion_link.data.demo import DemoAudioCaps, build_demo
from diffusion_link.data.feature_modules import FeatureDataModule
from diffusion_link.data.store import FeatureStore, StoreError
from diffusion_link.data.wiring import ConnectedData, DataNeeds, connect

__all__ = [
    "AACDatasetsSource",
    "AudioCapsCSV",
    "AudioCapsHF",
    "AudioDataModule",
    "AudioFolderDataModule",
    "CaptionCorpus",
    "ClipCaptionDataModule",
    "ClipRecord",
    "ConnectedData",
    "DataNeeds",
    "DemoAudioCaps",
    "FeatureDataModule",
    "FeatureStore",
    "StoreError",
    "build_demo",
    "connect",
]
