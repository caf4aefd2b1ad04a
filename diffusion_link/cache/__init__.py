"""Stage 1: encode audio and captions once with a frozen CLAP into a feature store."""

from diffusion_link.cache.module import CacheModule
from diffusion_link.cache.writer import FeatureStoreWriter

__all__ = ["CacheModule", "FeatureStoreWriter"]
