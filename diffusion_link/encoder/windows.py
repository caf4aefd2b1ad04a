"""Deterministic waveform -> fixed windows, exactly as laion-clap pads, so its random crop never runs.

Clips longer than the 10 s window are centre-cropped (or cut into windows whose embeddings are
averaged), shorter ones repeat-padded like laion-clap's ``repeatpad``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

SAMPLE_RATE = 48_000
WINDOW_SAMPLES = 480_000  # laion-clap's 10 s window at 48 kHz

CropPolicy = Literal["centre", "chunk_average"]


def quantise_int16(wave: np.ndarray) -> np.ndarray:
    """laion-clap's int16 round trip, which its own pipeline always applies."""
    clipped = np.clip(wave, -1.0, 1.0)
    return ((clipped * 32767.0).astype(np.int16) / 32767.0).astype(np.float32)


def repeat_pad(wave: np.ndarray, length: int = WINDOW_SAMPLES) -> np.ndarray:
    """laion-clap's ``repeatpad``: repeat whole copies, then zero-pad to ``length``."""
    if len(wave) == 0:
        raise ValueError("empty waveform")
    if len(wave) >= length:
        return wave[:length]
    wave = np.tile(wave, length // len(wave))
    return np.pad(wave, (0, length - len(wave)))


def to_windows(wave: np.ndarray, policy: CropPolicy = "centre", length: int = WINDOW_SAMPLES) -> np.ndarray:
    """Deterministic fixed-length windows of one clip: shape (n_windows, length).

    ``centre``: one window, the middle of a long clip. ``chunk_average``: consecutive windows that
    cover the whole clip (the last one repeat-padded), whose embeddings the encoder averages.
    """
    if len(wave) <= length:
        return repeat_pad(wave, length)[None]
    if policy == "centre":
        start = (len(wave) - length) // 2
        return wave[start : start + length][None]
    if policy == "chunk_average":
        chunks = [wave[i : i + length] for i in range(0, len(wave), length)]
        if len(chunks) > 1 and len(chunks[-1]) < length // 10:  # a sliver of tail says little
            chunks = chunks[:-1]
        return np.stack([repeat_pad(c, length) for c in chunks])
    raise ValueError(f"unknown crop policy {policy!r}; use 'centre' or 'chunk_average'")
