"""The multimodal encoder whose pooled embeddings every later stage works on.

Two families behind one interface (:class:`Encoder`): laion-clap (an official checkpoint, or random
init) and a contrastive encoder trained by the ``encoder`` stage (:class:`ContrastiveEncoder`,
loaded from its export). The cache stage, audio-folder ``predict`` and ``doctor`` build theirs with
:func:`load_encoder`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from diffusion_link.encoder.clap import ClapConfig, ClapEncoder
from diffusion_link.encoder.contrastive import ContrastiveEncoder
from diffusion_link.encoder.module import EncoderModule


@runtime_checkable
class Encoder(Protocol):
    """What every stage needs of an encoder."""

    @property
    def dim(self) -> int: ...

    @property
    def sample_rate(self) -> int: ...

    def encode_audio(self, waves: list[np.ndarray]) -> torch.Tensor: ...

    def encode_text(self, texts: list[str]) -> torch.Tensor: ...

    def describe(self) -> dict: ...


def load_encoder(clap: ClapConfig | dict | None = None, export: str | None = None) -> Encoder:
    """laion-clap from ``clap`` (checkpoint or random init), or a trained encoder's ``export`` folder."""
    if isinstance(clap, dict):
        clap = ClapConfig(**clap)
    if not export:
        return ClapEncoder(clap or ClapConfig())
    if clap is not None and clap.checkpoint:
        raise ValueError(f"two encoders given: a trained encoder export ({export}) and a CLAP checkpoint ({clap.checkpoint}); keep one")
    return ContrastiveEncoder.from_pretrained(export)


__all__ = ["ClapConfig", "ClapEncoder", "ContrastiveEncoder", "Encoder", "EncoderModule", "load_encoder"]
