"""What a captioner's LLM sees: the rows of the captioning table and the bridges they go through.

A bridge *setting* (a captioner's ``bridge``, a test row's ``bridge``) is one of

* ``None``: the raw (normalised) audio embedding;
* an exported bridge folder (Diffusion-Link, Diffusion Bridge, ...), loaded frozen once;
* ``mean-shift`` or ``projection-decoding``: a training-free baseline of the gap table, fitted on the
  feature store's training split when the store is known (:meth:`Bridges.fit`).

:class:`TrainThrough` is Diffusion Bridge's captioner augmentation: each training text embedding is
forward-noised to ``t_start`` and run back through a bridge's reverse chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_link.bridge.baselines import MeanShift, ProjectionDecoding
from diffusion_link.bridge.model import DiffusionLink
from diffusion_link.data.store import StoreError

MEAN_SHIFT = "mean-shift"
PROJECTION = "projection-decoding"
FITTED = (MEAN_SHIFT, PROJECTION)  # settings fitted on the store's training split, not loaded


@dataclass
class TestRow:
    """One row of the captioning table, made by ``test`` with the other rows of the same captioner.

    Args:
        name: the row's name in reports.
        bridge: an exported bridge folder, ``mean-shift``, ``projection-decoding``, or ``None`` (raw audio).
        input: ``audio`` (through ``bridge``) or ``text`` (the first reference's text embedding, the ceiling;
            scored against the other references, leave-one-out).
    """

    name: str
    bridge: str | None = None
    input: Literal["audio", "text"] = "audio"


@dataclass
class TrainThrough:
    """Diffusion Bridge's captioner augmentation (``make_dataset_with_diffusion_text.py``): every training
    text embedding is forward-noised to ``t_start`` and taken back to x0 by the bridge's DDIM chain, so the
    zero-shot captioner learns from what the bridge outputs.

    Args:
        bridge: the exported bridge folder.
        t_start: the step the text is noised to (the source: 400).
        steps: DDIM steps from there (``None``: the bridge's own K; the source: 5).
    """

    bridge: str
    t_start: int = 400
    steps: int | None = None

    def __post_init__(self) -> None:
        if not self.bridge:
            raise ValueError("train_through.bridge is an exported bridge folder (e.g. artifacts/bridge/diffusion-bridge/export)")
        if self.t_start < 1 or (self.steps is not None and not 0 < self.steps <= self.t_start):
            raise ValueError(f"train_through: t_start must be >= 1 and steps in 1..t_start, got t_start={self.t_start}, steps={self.steps}")

    def apply(self, bridge: DiffusionLink, text: torch.Tensor) -> torch.Tensor:
        """Text embeddings through the chain: preprocessed as text, noised to t_start, DDIM back, unit vectors."""
        steps = {"steps": self.steps} if self.steps is not None else {}
        return bridge.bridge(text, modality="text", t_start=self.t_start, noise_start=True, keyed=False, **steps)  # fresh noise each time


def load_bridge(folder: str | None, weights: Literal["ema", "raw"] = "ema") -> DiffusionLink | None:
    """A frozen exported bridge, or None for raw audio and the fitted baselines."""
    if not folder or folder in FITTED:
        return None
    bridge = DiffusionLink.from_pretrained(folder, weights=weights)
    bridge.requires_grad_(False)
    bridge.source = folder
    return bridge


def training_record(bridge: nn.Module | None) -> dict | None:
    """What an exported bridge was trained on (its export's record), for a row's scores.json."""
    return bridge.meta.get("training") if bridge is not None and hasattr(bridge, "meta") else None


class Bridges(nn.Module):
    """The bridges of a captioner by setting: each export folder loaded once (frozen submodules: they follow
    the device), and the training-free baselines once :meth:`fit` has seen the store."""

    def __init__(
        self,
        settings: Iterable[str | None],
        weights: Literal["ema", "raw"] = "ema",
        projection_temperature: float = 0.01,
        support_size: int | None = 50_000,
    ):
        super().__init__()
        if not projection_temperature > 0:
            raise ValueError(f"projection_temperature must be positive, got {projection_temperature}")
        self.settings = list(dict.fromkeys(settings))
        self.exports = nn.ModuleList()
        self._index: dict[str, int] = {}
        for folder in self.settings:
            if folder and folder not in FITTED:
                self._index[folder] = len(self.exports)
                self.exports.append(load_bridge(folder, weights))
        self.projection_temperature, self.support_size = projection_temperature, support_size
        self.fitted = nn.ModuleDict()

    def loaded(self, settings: Iterable[str | None]) -> list[DiffusionLink]:
        """The loaded export of each of ``settings`` that is one (the store checks compare their encoders)."""
        return [self.exports[self._index[s]] for s in dict.fromkeys(settings) if s in self._index]

    def module(self, setting: str | None) -> nn.Module | None:
        """The module of a setting: a loaded export, a fitted baseline, or None (raw audio)."""
        if setting in self._index:
            return self.exports[self._index[setting]]
        return self.fitted[setting] if setting in self.fitted else None

    def fit(self, store, split: str, settings: Iterable[str | None]) -> None:
        """Fit the baselines among ``settings`` on ``split`` of ``store`` (means; a seeded support set of texts)."""
        settings = set(settings)
        if MEAN_SHIFT in settings:
            self.fitted[MEAN_SHIFT] = MeanShift(*store.means(split))
        if PROJECTION in settings:
            support = torch.from_numpy(store.text_matrix(split, self.support_size))
            self.fitted[PROJECTION] = ProjectionDecoding(support, self.projection_temperature)

    def forward(self, audio: torch.Tensor, setting: str | None, keyed: bool = True) -> torch.Tensor:
        """The embedding the LLM sees for ``audio`` through ``setting``.

        ``keyed`` (the default: test rows, ``predict``, the API): a diffusion bridge takes the clips in chunks of
        fixed shape, each one's noise keyed by its embedding (:meth:`DiffusionLink.bridge`). ``keyed=False`` (the
        training inputs of a supervised captioner): the batch goes through at once on torch's global stream,
        fresh noise every step (keyed, a clip would see the same noise every epoch) and no padding of the last chunk."""
        module = self.module(setting)
        if isinstance(module, DiffusionLink):
            return module.bridge(audio, keyed=keyed)
        if module is not None:
            device = next(module.buffers()).device
            return module(audio.to(device))
        if setting in FITTED:
            raise StoreError(f"the {setting} baseline is fitted on a feature store's training split; it cannot caption audio files directly")
        return F.normalize(audio.float(), dim=-1)

    def stochastic(self, setting: str | None) -> bool:
        """Whether ``setting`` draws noise: a diffusion bridge that forward-noises its entry (``noise_start``) or
        samples ancestrally (``ddpm``). Raw audio, the fitted baselines, a regressor and DDIM from the audio
        itself give one input per clip."""
        module = self.module(setting)
        return isinstance(module, DiffusionLink) and module.stochastic

    def seeded(self, audio: torch.Tensor, setting: str | None, seeds: list[int]) -> torch.Tensor:
        """``audio`` through a stochastic ``setting``, clip i's noise drawn from a generator seeded with
        ``seeds[i]`` (:func:`sample_seed`): the same clip and seed give the same sample whatever the batch."""
        if len(seeds) != len(audio):
            raise ValueError(f"one seed per clip: {len(seeds)} seeds for {len(audio)} clips")
        module = self.module(setting)
        if not self.stochastic(setting):
            return self(audio, setting)
        return module.bridge(audio, keys=seeds)


def sample_seed(base: int, clip: str, k: int) -> int:
    """The seed of sample ``k`` of ``clip`` under the run's seed ``base``: stable across runs and processes."""
    digest = hashlib.sha256(f"{base}/{clip}/{k}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def rng_state(device: torch.device) -> tuple:
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


@contextmanager
def rng_stream(states: dict, key, device: torch.device):
    """Run the block on row ``key``'s own random stream (CPU, and the device's on CUDA), then keep where it got to."""
    cpu, cuda = states[key]
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
    try:
        yield
    finally:
        states[key] = rng_state(device)
