"""The frozen LAION-CLAP encoder, built offline.

The model is built from its config (text tower from the RoBERTa config, never from the hub:
:mod:`~diffusion_link.encoder.clap_files`) after an offline import of laion-clap
(:mod:`~diffusion_link.encoder.laion_import`); weights come from an explicit checkpoint path through
laion-clap's own loader, or from a seeded random initialisation that is logged loudly and recorded
as ``random-init``. Audio is made deterministic before the model sees it
(:mod:`~diffusion_link.encoder.windows`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from diffusion_link.assets import MissingAssetError, sha256_file
from diffusion_link.encoder.clap_files import _TEXT_TOWERS, _laion_version, _offline_text_tower, _text_tokenizer, load_clap_state_dict, save_clap_checkpoint
from diffusion_link.encoder.laion_import import import_laion_clap
from diffusion_link.encoder.windows import SAMPLE_RATE, WINDOW_SAMPLES, CropPolicy, quantise_int16, repeat_pad, to_windows

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClapConfig:
    """Everything that changes CLAP features. Its :meth:`ClapEncoder.describe` goes into every store.

    Args:
        checkpoint: path to a laion-clap checkpoint (e.g. ``630k-audioset-best.pt``). ``None``
            builds a random-init model (seeded), recorded as ``random-init`` in every artifact.
        amodel: audio tower (``HTSAT-tiny`` for the 630k checkpoints, ``HTSAT-base`` for the music ones).
        tmodel: text tower (``roberta`` for the official checkpoints).
        tokenizer_path: folder of the text tower's tokenizer. Default: the warm Hugging Face cache
            (``roberta-base``); for a random-init model a GPT-2 BPE substitute is used when that is absent.
        crop: ``centre`` (default) or ``chunk_average`` for clips longer than 10 s.
        quantise_int16: apply laion-clap's int16 round trip to the waveform (its own pipeline does).
        seed: seed of the random initialisation (ignored with a checkpoint).
        enable_fusion: laion-clap's fusion models (need torchvision and torchaudio; not supported yet).
    """

    checkpoint: str | None = None
    amodel: str = "HTSAT-tiny"
    tmodel: str = "roberta"
    tokenizer_path: str | None = None
    crop: CropPolicy = "centre"
    quantise_int16: bool = True
    seed: int = 0
    enable_fusion: bool = False


class ClapEncoder(torch.nn.Module):
    """Frozen laion-clap model with deterministic audio (one clip at a time) and batched text encoding."""

    def __init__(self, config: ClapConfig | None = None):
        super().__init__()
        self.config = config = config or ClapConfig()
        if config.enable_fusion:
            raise NotImplementedError(
                "Fusion CLAP models choose random mel chunks and need torchvision/torchaudio; they are not "
                "supported. Use a non-fusion checkpoint such as 630k-audioset-best.pt."
            )
        if config.crop not in ("centre", "chunk_average"):
            raise ValueError(f"crop must be 'centre' or 'chunk_average', not {config.crop!r}")
        hook = import_laion_clap()
        self._checkpoint_sha256 = None
        if config.checkpoint is not None and not Path(config.checkpoint).is_file():
            raise MissingAssetError(
                f"CLAP checkpoint not found: {config.checkpoint}. Download an official one once, e.g. "
                "https://huggingface.co/lukewys/laion_clap/resolve/main/630k-audioset-best.pt, and pass its path."
            )
        with _offline_text_tower(config.tmodel), torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            model, model_cfg = hook.create_model(config.amodel, config.tmodel, precision="fp32", device="cpu", enable_fusion=False)
        if config.checkpoint is None:
            log.warning(
                "CLAP IS RANDOMLY INITIALISED (seed %d): no checkpoint was given. Embeddings are recorded as "
                "'random-init' and mean nothing about audio or text. Pass encoder.checkpoint=630k-audioset-best.pt "
                "for real features.",
                config.seed,
            )
        else:
            self._checkpoint_sha256 = sha256_file(config.checkpoint)
            model.load_state_dict(load_clap_state_dict(config.checkpoint, hook))
        model.eval().requires_grad_(False)
        self.model = model
        self.model_cfg = model_cfg
        self.tokenizer, self._tokenizer_source = _text_tokenizer(config)
        if config.checkpoint is not None and self._tokenizer_source.startswith("substitute"):
            raise MissingAssetError(
                f"A real CLAP checkpoint needs the real {_TEXT_TOWERS[config.tmodel]} tokenizer, which is not in "
                f"the Hugging Face cache. Run `huggingface-cli download {_TEXT_TOWERS[config.tmodel]}` once on a "
                "machine with network, or pass encoder.tokenizer_path=<folder with its tokenizer files>."
            )

    sample_rate = SAMPLE_RATE

    @property
    def dim(self) -> int:
        return int(self.model.joint_embed_shape)

    def train(self, mode: bool = True):  # frozen: never leave eval mode (dropout, SpecAugment)
        return super().train(False)

    def describe(self) -> dict:
        """The encoder's identity: goes into every feature store and bridge artifact."""
        cfg = self.config
        return {
            "family": "laion-clap",
            "laion_clap_version": _laion_version(),
            "amodel": cfg.amodel,
            "tmodel": cfg.tmodel,
            "weights": f"sha256:{self._checkpoint_sha256}" if self._checkpoint_sha256 else f"random-init(seed={cfg.seed})",
            "checkpoint_path": str(cfg.checkpoint) if cfg.checkpoint else None,
            "tokenizer": self._tokenizer_source,
            "dim": self.dim,
            "sample_rate": SAMPLE_RATE,
            "window_samples": WINDOW_SAMPLES,
            "crop": cfg.crop,
            "pad": "repeatpad",
            "quantise_int16": cfg.quantise_int16,
            # not an identity key (encoder_mismatch): it changes stores' checksums, so a store made when a
            # batch's clips shared one forward pass is computed again, and bundles made then still load
            "batching": "each clip alone",
        }

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def encode_audio(self, waves: list[np.ndarray]) -> torch.Tensor:
        """Embed mono 48 kHz waveforms of any length: (N, D) float32, unit norm.

        Each clip's windows go through the model on their own, one clip at a time: a clip's embedding is
        the same bits whatever it is batched with (the cache stage's shards, ``predict``'s batches, the
        API's). In one forward pass for the whole batch the kernels' floating-point sums depend on the
        batch size (~1e-7), and a bridge keys its sampling noise on the embedding's exact bits."""
        return torch.cat([self._encode_clip(wave) for wave in waves]) if len(waves) else torch.zeros(0, self.dim)

    def _encode_clip(self, wave: np.ndarray) -> torch.Tensor:
        """One clip's (1, D) embedding: its window, or the re-normalised mean of its windows (chunk_average)."""
        wave = np.asarray(wave, dtype=np.float32)
        if self.config.quantise_int16:
            wave = quantise_int16(wave)
        batch = torch.from_numpy(to_windows(wave, self.config.crop)).to(self.device)
        inputs = {"waveform": batch, "longer": torch.zeros(len(batch), 1, dtype=torch.bool, device=self.device)}
        emb = self.model.audio_projection(self.model.encode_audio(inputs, device=self.device)["embedding"])
        emb = F.normalize(emb.float(), dim=-1)
        if len(emb) != 1:  # chunk_average: mean of the clip's windows, re-normalised
            emb = F.normalize(emb.sum(0, keepdim=True), dim=-1)
        return emb.cpu()

    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Embed captions: (N, D) float32, unit norm."""
        if not texts:
            return torch.zeros(0, self.dim)
        tokens = self.tokenizer(texts, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        tokens = {k: v.to(self.device) for k, v in tokens.items() if k in ("input_ids", "attention_mask")}
        return self.model.get_text_embedding(tokens).float().cpu()


__all__ = [
    "ClapConfig",
    "ClapEncoder",
    "SAMPLE_RATE",
    "WINDOW_SAMPLES",
    "import_laion_clap",
    "load_clap_state_dict",
    "save_clap_checkpoint",
    "to_windows",
    "repeat_pad",
]
