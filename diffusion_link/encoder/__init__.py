"""The frozen multimodal encoder whose pooled embeddings every later stage works on."""

from diffusion_link.encoder.clap import ClapConfig, ClapEncoder

__all__ = ["ClapConfig", "ClapEncoder"]
