"""The cache stage's LightningModule: ``predict_step`` encodes one shard of clips and captions."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from diffusion_link.encoder import ClapConfig, load_encoder


class CacheModule(L.LightningModule):
    """A frozen encoder over audio and captions; run by ``diffusion-link predict``.

    Args:
        encoder: laion-clap settings (checkpoint path, crop policy, ...). See :class:`ClapConfig`.
        encoder_export: a trained encoder's export folder (``diffusion-link fit --config
            configs/encoder/demo.yaml``); used instead of laion-clap when given.
        text_batch_size: captions encoded per forward pass.
    """

    def __init__(self, encoder: ClapConfig = ClapConfig(), encoder_export: str | None = None, text_batch_size: int = 64):
        super().__init__()
        self.encoder = load_encoder(encoder, encoder_export)
        self.text_batch_size = text_batch_size

    @property
    def sample_rate(self) -> int:
        return self.encoder.sample_rate

    def data_needs(self) -> dict:
        """Clips are decoded at the encoder's rate (``diffusion_link.data.connect`` tells the AudioDataModule)."""
        return {"sample_rate": self.encoder.sample_rate}

    def describe(self) -> dict:
        return self.encoder.describe()

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        out = {k: batch[k] for k in ("split", "shard", "clip_ids", "captions", "audio", "failures")}
        if not batch["clip_ids"]:
            out["audio_embedding"] = torch.zeros(0, self.encoder.dim)
            out["text_embeddings"] = []
            return out
        out["audio_embedding"] = self.encoder.encode_audio(batch["waves"])
        flat = [c for caps in batch["captions"] for c in caps]
        text = torch.cat([self.encoder.encode_text(flat[i : i + self.text_batch_size]) for i in range(0, len(flat), self.text_batch_size)])
        out["text_embeddings"] = list(torch.split(text, [len(c) for c in batch["captions"]]))
        return out
