"""A synthetic audio-caption source whose captions are determined by the audio: tones of a few
pitches (with random phase, length and loudness), each caption naming its pitch. An encoder that
learns anything at all must retrieve the right captions far above chance."""

from __future__ import annotations

import numpy as np

from diffusion_link.data.audiocaps import AudioSource, ClipRecord

PITCHES = {"very low": 110.0, "low": 220.0, "middle": 440.0, "high": 880.0, "very high": 1760.0, "shrill": 3520.0}
TEMPLATES = ["a {p} tone", "a {p} pitched beep", "someone plays a {p} note"]


class ToneSource(AudioSource):
    """``n[split]`` clips per split; captions per clip: 1 (train) or 3 (val/test). ``empty``: splits
    with no clips; ``no_captions``: splits whose clips have no caption."""

    def __init__(self, n: dict[str, int] | None = None, seed: int = 0, empty: tuple[str, ...] = (), no_captions: tuple[str, ...] = ()):
        self.n = n or {"train": 96, "val": 24, "test": 24}
        self.seed, self.empty, self.no_captions = seed, empty, no_captions

    def _pitch(self, split: str, i: int) -> str:
        return list(PITCHES)[i % len(PITCHES)]

    def records(self, split: str) -> list[ClipRecord]:
        if split in self.empty:
            return []
        out = []
        for i in range(self.n[split]):
            pitch = self._pitch(split, i)
            refs = 1 if split == "train" else 3
            captions = [] if split in self.no_captions else [TEMPLATES[(i + k) % len(TEMPLATES)].format(p=pitch) for k in range(refs)]
            out.append(ClipRecord(f"{split}{i:03d}", i, captions))
        return out

    def load(self, record: ClipRecord, split: str, sample_rate: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, {"train": 0, "val": 1, "test": 2}[split], int(record.audio)])
        pitch = PITCHES[self._pitch(split, int(record.audio))]
        t = np.arange(int(rng.uniform(0.5, 1.5) * sample_rate)) / sample_rate
        wave = rng.uniform(0.2, 0.8) * np.sin(2 * np.pi * pitch * t + rng.uniform(0, 2 * np.pi))
        return (wave + rng.normal(0, 0.01, len(t))).astype(np.float32)

    def describe(self) -> dict:
        return {"source": "tones", "n": self.n, "seed": self.seed}
