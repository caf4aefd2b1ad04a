"""A trained two-tower contrastive audio-text encoder: the export of the encoder stage.

Usable without Lightning, with the same interface as :class:`~diffusion_link.encoder.clap.ClapEncoder`
(``dim``, ``sample_rate``, ``encode_audio``, ``encode_text``, ``describe``)::

    enc = ContrastiveEncoder.from_pretrained("artifacts/encoder/demo/export")
    audio = enc.encode_audio([wave_16k])          # (1, 512), unit norm
    text = enc.encode_text(["a dog barks"])       # (1, 512), unit norm

An export folder (the format of :mod:`diffusion_link.export`) holds ``config.json`` (both towers'
``class_path`` + ``init_args``, provenance, the description whose ``weights`` is the sha256 of
``encoder.safetensors``, and every file's sha256) and ``encoder.safetensors`` (every trained weight,
the logit scale included; a frozen text backbone is not copied, it is named in the config with its own
checksum and loaded from its asset).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffusion_link.encoder.towers import AudioTower, TextTower, build_tower
from diffusion_link.export import format_tag, load_tensors, read_export, write_export

EXPORT_FORMAT = format_tag("encoder")
WEIGHTS = "encoder.safetensors"


class ContrastiveEncoder(nn.Module):
    """Audio tower + text tower + CLAP's learnable temperature (``logit_scale`` = log(1/τ)).

    Args:
        audio: an :class:`~diffusion_link.encoder.towers.AudioTower`.
        text: a :class:`~diffusion_link.encoder.towers.TextTower`.
        temperature: the initial τ (CLAP and CLIP: 0.07).
    """

    family = "trained-contrastive"

    def __init__(self, audio: AudioTower, text: TextTower, temperature: float = 0.07):
        super().__init__()
        self.audio, self.text = audio, text
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / temperature)))
        self.weights_sha256: str | None = None  # set by save_pretrained / from_pretrained
        self.meta: dict = {}

    @property
    def dim(self) -> int:
        return int(self.audio.dim)

    @property
    def sample_rate(self) -> int:
        return int(self.audio.sample_rate)

    @property
    def device(self) -> torch.device:
        return self.logit_scale.device

    def embed_audio(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.audio(batch, lengths).float(), dim=-1)

    def embed_text(self, captions: list[str]) -> torch.Tensor:
        return F.normalize(self.text(captions).float(), dim=-1)

    # -- the encoder interface (cache stage, predict, doctor) -----------------------------------------

    @torch.no_grad()
    def encode_audio(self, waves: list[np.ndarray]) -> torch.Tensor:
        """Embed mono waveforms at :attr:`sample_rate` (centre window): (N, D) float32, unit norm.

        Each clip is embedded on its own, padded to the tower's window: its embedding is the same bits
        whatever it is batched with (the cache stage's shards, ``predict``'s batches, the API's). Padded to
        the batch's longest clip, the convolutions near a clip's end saw as much padding as that clip
        happened to get (up to 0.09 apart on the demo's test clips), and even at one shape the kernels'
        floating-point sums depend on the batch size (~1e-7). The tower is small: on CPU one clip at a
        time costs what batches of 32 cost."""
        was = self.training
        self.eval()
        out = []
        for wave in waves:
            batch, lengths = self.audio.collate([self.audio.crop(self.audio.features(wave), None)], pad_to=self.audio.window)
            out.append(self.embed_audio(batch.to(self.device), lengths.to(self.device)).cpu())
        self.train(was)
        return torch.cat(out) if out else torch.zeros(0, self.dim)

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed captions: (N, D) float32, unit norm."""
        if not texts:
            return torch.zeros(0, self.dim)
        was = self.training
        self.eval()
        out = self.embed_text(list(texts)).cpu()
        self.train(was)
        return out

    def describe(self) -> dict:
        """The encoder's identity: goes into every feature store and later artifact."""
        if self.weights_sha256 is None:
            raise RuntimeError("an encoder is described by its exported weights: save_pretrained() or from_pretrained() first")
        return {
            "family": self.family,
            "amodel": self.audio.describe(),
            "tmodel": self.text.describe(),
            "weights": f"sha256:{self.weights_sha256}",
            "export": self.meta.get("export"),
            "trained_on": self.meta.get("trained_on"),
            "dim": self.dim,
            "sample_rate": self.sample_rate,
            "crop": "centre",
            # not an identity key (encoder_mismatch): it changes stores' checksums, so a store made when clips
            # were padded to their batch's longest is computed again, and exports made then still load
            "batching": "each clip alone, padded to the window",
            **self.audio.input_description(),
        }

    # -- export ------------------------------------------------------------------------------------

    def config(self) -> dict:
        return {"audio": self.audio.spec(), "text": self.text.spec()}

    def save_pretrained(self, folder: str | Path, meta: dict | None = None) -> Path:
        """``encoder.safetensors`` + ``config.json`` (the export format of :mod:`diffusion_link.export`)."""
        folder = Path(folder)
        with write_export(folder, "encoder") as draft:
            state = self.state_dict()
            self.weights_sha256 = draft.save_tensors(WEIGHTS, state, metadata={"format": EXPORT_FORMAT})
            self.meta = {**self.meta, **(meta or {}), "export": str(folder.resolve())}
            draft.config.update(self.config(), meta=self.meta, description=self.describe())
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> "ContrastiveEncoder":
        """Load an export, after checking its kind and every file's checksum (:func:`~diffusion_link.export.read_export`)."""
        folder = Path(folder)
        config = read_export(folder, "encoder", required=(WEIGHTS,))
        model = cls(build_tower(config["audio"]), build_tower(config["text"]))
        model.load_state_dict(load_tensors(folder, WEIGHTS, map_location))
        model.weights_sha256, model.meta = config["files"][WEIGHTS], dict(config.get("meta", {}))
        model.meta["export"] = str(folder.resolve())
        return model.eval()


__all__ = ["ContrastiveEncoder", "EXPORT_FORMAT"]
