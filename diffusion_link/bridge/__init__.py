"""Stage 2: Diffusion-Link, the bridge from CLAP audio embeddings to the text distribution."""

from diffusion_link.bridge.model import BridgeConfig, DiffusionLink
from diffusion_link.bridge.module import BridgeModule
from diffusion_link.bridge.writer import BridgedStoreWriter

__all__ = ["BridgeConfig", "BridgeModule", "BridgedStoreWriter", "DiffusionLink"]
