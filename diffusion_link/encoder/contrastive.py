"""A trained two-tower contrastive audio-text encoder: the export of the encoder stage.

Usable without Lightning, with the same interface as :class:`~diffusion_link.encoder.clap.ClapEncoder`
(``dim``, ``sample_rate``, ``encode_audio``, ``encode_text``, ``describe``)::

    enc = ContrastiveEncoder.from_pretrained("artifacts/encoder/demo/export")
    audio = enc.encode_audio([wave_16k])          # (1, 512), unit norm
    text = enc.encode_text(["a dog barks"])       # (1, 512), unit norm

An export folder holds ``config.json`` (both towers' ``class_path`` + ``init_args``, the logit scale,
the weights' sha256, provenance) and ``encoder.safetensors`` (every trained weight; a frozen text
backbone is not copied, it is named in the config with its own checksum and loaded from its asset).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from diffusion_link.encoder.towers import AudioTower, TextTower, build_tower

EXPORT_FORMAT = "diffusion-link-encoder/1"
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
    def encode_audio(self, waves: list[np.ndarray], batch_size: int = 32) -> torch.Tensor:
        """Embed mono waveforms at :attr:`sample_rate` (centre window): (N, D) float32, unit norm."""
        was = self.training
        self.eval()
        out = []
        for i in range(0, len(waves), batch_size):
            feats = [self.audio.crop(self.audio.features(w), None) for w in waves[i : i + batch_size]]
            batch, lengths = self.audio.collate(feats)
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
            **self.audio.input_description(),
        }

    # -- export ------------------------------------------------------------------------------------

    def config(self) -> dict:
        return {"format": EXPORT_FORMAT, "audio": self.audio.spec(), "text": self.text.spec()}

    def save_pretrained(self, folder: str | Path, meta: dict | None = None) -> Path:
        """``encoder.safetensors`` + ``config.json``, written to a temporary folder and renamed."""
        from safetensors.torch import save_file

        from diffusion_link.assets import sha256_file
        from diffusion_link.files import atomic_folder

        folder = Path(folder)
        with atomic_folder(folder) as tmp:  # the folder is the export's own: replaced whole
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS), metadata={"format": EXPORT_FORMAT})
            self.weights_sha256 = sha256_file(tmp / WEIGHTS)
            self.meta = {**self.meta, **(meta or {}), "export": str(folder.resolve())}
            config = {**self.config(), "weights_sha256": self.weights_sha256, "meta": self.meta, "description": self.describe()}
            (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True, default=str))
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> "ContrastiveEncoder":
        from safetensors.torch import load_file

        from diffusion_link.assets import MissingAssetError, sha256_file

        folder = Path(folder)
        config_path, weights = folder / "config.json", folder / WEIGHTS
        if not config_path.is_file() or not weights.is_file():
            raise MissingAssetError(
                f"{folder} is not an encoder export (config.json + {WEIGHTS}); make one with `diffusion-link fit --config configs/encoder/demo.yaml`"
            )
        config = json.loads(config_path.read_text())
        if config.get("format") != EXPORT_FORMAT:
            raise ValueError(f"{config_path}: format {config.get('format')!r}, expected {EXPORT_FORMAT!r}")
        sha = sha256_file(weights)
        if sha != config.get("weights_sha256"):
            raise ValueError(
                f"{weights} does not match the checksum in {config_path} (corrupt or replaced): {sha[:16]} vs {str(config.get('weights_sha256'))[:16]}"
            )
        model = cls(build_tower(config["audio"]), build_tower(config["text"]))
        model.load_state_dict(load_file(str(weights), device=str(map_location)))
        model.weights_sha256, model.meta = sha, dict(config.get("meta", {}))
        model.meta["export"] = str(folder.resolve())
        return model.eval()


__all__ = ["ContrastiveEncoder", "EXPORT_FORMAT"]
