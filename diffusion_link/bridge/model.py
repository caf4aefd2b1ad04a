"""DiffusionLink: preprocessing, denoiser, schedule, sampler and EMA in one plain ``nn.Module``.

Usable without Lightning::

    bridge = DiffusionLink.from_pretrained("artifacts/bridge/diffusion-link/export")
    text_like = bridge.bridge(audio_embeddings)        # (N, D) unit vectors in CLAP text space
"""

from __future__ import annotations

import copy
import hashlib
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from diffusion_link.bridge.network import Denoiser
from diffusion_link.bridge.schedule import NoiseSchedule, sample
from diffusion_link.export import ExportError, format_tag, load_tensors, read_export, write_export

EXPORT_FORMAT = format_tag("bridge")
WEIGHTS = "model.safetensors"
RAW = "raw."  # prefix of the raw (non-EMA) weights in WEIGHTS
#: rows per chunk of keyed bridging (:meth:`DiffusionLink.bridge`). On 2 CPU cores (H = 2048, K = 5) a chunk of 16
#: costs 1.5x one row alone (49 vs 32 ms) and 16 rows cost ~1/9 of 16 rows one at a time; a chunk of 8 is no
#: cheaper. Changing it moves results by float rounding (~1e-6).
KEYED_CHUNK = 16


@dataclass
class BridgeConfig:
    """Everything that defines a bridge. Defaults are our decisions (docs/method.md); the paper
    states only "three residual MLP blocks" on the frozen encoder's pooled embedding.

    Args:
        dim: embedding dimension D (checked against the feature store).
        hidden: hidden width H of each block's MLP.
        blocks: number of residual MLP blocks.
        width: residual width (default D).
        time_dim: sinusoidal timestep embedding size.
        conditioning: time enters each block by ``add`` or ``film``.
        condition_on_source: also give the denoiser the source audio embedding.
        dropout: dropout inside the blocks.
        timesteps: T of the DDPM.
        schedule: ``cosine`` or ``linear``.
        parameterisation: what the network predicts: ``x0``, ``eps`` or ``v``.
        center: subtract the per-modality mean of the training split (before re-normalising).
        scale: the norm of the preprocessed vectors: ``true`` sqrt(D) (components of about unit
            variance), ``false`` 1, or a number (Diffusion Bridge: 5).
        sphere_input: project the network's noisy input onto the sphere of that norm, in training and
            before every sampling step (Diffusion Bridge's recipe).
        t_start: t* where the reverse chain is entered with the audio embedding.
        entry_snr: instead of ``t_start``, the signal-to-noise ratio at which to enter,
            alpha_bar_t * scale^2 / D / (1 - alpha_bar_t) per component, so that one setting means the same
            under any scale (t* = 600 with scale 5 at D = 512 is SNR ~0.026, which sqrt(D) reaches at t ~900).
        steps: K, DDIM steps from t* to 0.
        sampler: ``ddim`` (deterministic) or ``ddpm`` (ancestral, every step from t*).
        noise_start: forward-noise the audio embedding to t* before the reverse chain.
        ema_decay: decay of the exponential moving average of the weights used for sampling (updated
            every training step: a window of about 1 / (1 - ema_decay) steps).
        kind: ``diffusion`` (the DDPM bridge), or ``regressor``: the same network without noise or
            timestep (a constant t = 0), trained to map the audio embedding to its paired text and applied
            once; the sampling settings do not apply to it (docs/method.md, "Does the diffusion matter?").
    """

    dim: int = 512
    hidden: int = 2048
    blocks: int = 3
    width: int | None = None
    time_dim: int = 256
    conditioning: Literal["add", "film"] = "add"
    condition_on_source: bool = False
    dropout: float = 0.0
    timesteps: int = 1000
    schedule: Literal["cosine", "linear"] = "cosine"
    parameterisation: Literal["x0", "eps", "v"] = "x0"
    center: bool = False
    scale: bool | float = True
    sphere_input: bool = False
    t_start: int = 600
    entry_snr: float | None = None
    steps: int = 5
    sampler: Literal["ddim", "ddpm"] = "ddim"
    noise_start: bool = False
    ema_decay: float = 0.999
    kind: Literal["diffusion", "regressor"] = "diffusion"

    def __post_init__(self) -> None:
        """Settings that cannot work are refused when the config is built, not after training."""
        checks = [
            (self.dim > 0 and self.hidden > 0 and self.blocks > 0, f"dim, hidden and blocks must be positive (got {self.dim}, {self.hidden}, {self.blocks})"),
            (self.timesteps > 0, f"timesteps must be positive, got {self.timesteps}"),
            (0 < self.t_start <= self.timesteps, f"t_start (t*) must be in 1..timesteps ({self.timesteps}), got {self.t_start}"),
            (self.sampler == "ddpm" or 0 < self.steps <= self.t_start, f"steps (K) must be in 1..t_start ({self.t_start}), got {self.steps}"),
            (self.entry_snr is None or self.entry_snr > 0, f"entry_snr must be positive, got {self.entry_snr}"),
            (0.0 <= self.ema_decay < 1.0, f"ema_decay must be in [0, 1), got {self.ema_decay}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (self.kind in ("diffusion", "regressor"), f"kind must be 'diffusion' or 'regressor', not {self.kind!r}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"bridge: {message}")

    @classmethod
    def from_dict(cls, values: dict) -> "BridgeConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass(frozen=True)
class Sampling:
    """Sampler settings that replace a trained bridge's at test / predict time (the ablations of t* and K);
    ``None`` keeps the export's value.

    Args:
        t_start: t*, where audio enters the reverse chain.
        steps: K, the number of DDIM steps.
        sampler: ``ddim`` or ``ddpm``.
        noise_start: forward-noise the audio to t* before the chain.
    """

    t_start: int | None = None
    steps: int | None = None
    sampler: Literal["ddim", "ddpm"] | None = None
    noise_start: bool | None = None

    def apply(self, config: BridgeConfig) -> BridgeConfig:
        """A new config with these settings (checked like any config: an impossible one fails here)."""
        changed = {k: v for k, v in asdict(self).items() if v is not None}
        if "t_start" in changed:
            changed["entry_snr"] = None  # t* given directly
        return replace(config, **changed)


class Preprocessor(nn.Module):
    """L2-normalise, optionally subtract the modality's training mean and re-normalise, scale by sqrt(D).

    :meth:`inverse` maps back to the unit sphere exactly: with centring, the point is found along
    the ray from the text mean (the positive root of ||s u + mu|| = 1), so
    ``inverse(forward(c, "text")) == c`` for every unit vector c.
    """

    def __init__(self, dim: int, center: bool, scale: bool | float):
        super().__init__()
        if not isinstance(scale, bool) and not scale > 0:
            raise ValueError(f"scale must be true, false or a positive norm, got {scale!r}")
        self.center = center
        self.factor = (math.sqrt(dim) if scale else 1.0) if isinstance(scale, bool) else float(scale)
        self.register_buffer("mean_audio", torch.zeros(dim))
        self.register_buffer("mean_text", torch.zeros(dim))

    def set_means(self, mean_audio: torch.Tensor, mean_text: torch.Tensor) -> None:
        for name, value in (("audio", mean_audio), ("text", mean_text)):
            if value.norm() >= 1:
                raise ValueError(f"the mean of unit {name} vectors must have norm < 1, got {value.norm():.4f}")
        self.mean_audio.copy_(mean_audio)
        self.mean_text.copy_(mean_text)

    def forward(self, x: torch.Tensor, modality: Literal["audio", "text"]) -> torch.Tensor:
        x = F.normalize(x.float(), dim=-1)
        if self.center:
            x = F.normalize(x - (self.mean_audio if modality == "audio" else self.mean_text), dim=-1)
        return x * self.factor

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        u = F.normalize(y / self.factor, dim=-1)
        if not self.center:
            return u
        mu = self.mean_text
        dot = u @ mu
        s = -dot + (dot.pow(2) - mu.dot(mu) + 1).clamp(min=0).sqrt()
        return F.normalize(s[:, None] * u + mu, dim=-1)


def input_key(embeddings: torch.Tensor, seed: int = 0, modality: str = "audio") -> list[int]:
    """One 63-bit key per row: a hash of ``seed``, ``modality`` and the row's float32 bits (its noise's seed)."""
    rows = embeddings.detach().float().cpu().numpy()
    tag = f"{seed}:{modality}:".encode()
    return [int.from_bytes(hashlib.blake2b(tag + row.tobytes(), digest_size=8).digest(), "little") >> 1 for row in rows]


class DiffusionLink(nn.Module):
    """The bridge: audio embeddings in, text-distribution embeddings out."""

    def __init__(self, config: BridgeConfig | None = None, encoder: dict | None = None):
        super().__init__()
        self.config = config = config or BridgeConfig()
        self.encoder = encoder or {}  # description of the CLAP that made the training embeddings
        self.preprocess = Preprocessor(config.dim, config.center, config.scale)
        self.denoiser = Denoiser(
            config.dim,
            config.hidden,
            config.blocks,
            config.width,
            config.time_dim,
            config.conditioning,
            config.condition_on_source,
            config.dropout,
        )
        self.schedule = NoiseSchedule(config.timesteps, config.schedule, config.parameterisation)
        if config.entry_snr is not None:  # resolved once; the export records both
            config.t_start = self.schedule.t_for_snr(config.entry_snr, self.preprocess.factor**2 / config.dim)
        self.ema = torch.optim.swa_utils.AveragedModel(
            self.denoiser, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(config.ema_decay), use_buffers=True
        )
        self.ema.requires_grad_(False)

    @torch.no_grad()
    def update_ema(self) -> None:
        self.ema.update_parameters(self.denoiser)

    @torch.no_grad()
    def bridge(
        self,
        audio: torch.Tensor,
        use_ema: bool = True,
        generator: torch.Generator | None = None,
        modality: Literal["audio", "text"] = "audio",
        keyed: bool = True,
        seed: int = 0,
        keys: Sequence[int] | None = None,
        **overrides,
    ) -> torch.Tensor:
        """Map (N, D) audio embeddings into the text-embedding distribution; returns unit vectors.

        ``overrides`` replace sampling settings for this call (``t_start``, ``steps``, ``sampler``,
        ``noise_start``). ``modality="text"`` preprocesses the input as text (its own training mean):
        Diffusion Bridge's captioner augmentation passes text embeddings through the chain this way.

        ``keyed`` (the default): each embedding's sampling noise (``noise_start``, ``ddpm``) is drawn from
        a generator seeded by ``seed`` and the embedding's own bits (:func:`input_key`), and the chain runs
        on fixed-size chunks of :data:`KEYED_CHUNK` rows (the last one padded), so an embedding's result is
        the same bits whatever it is batched with and in whatever order (the test rows, ``predict`` and the
        API all bridge this way). A matrix product's summation order depends on its shape (a row alone came
        out ~1e-6 from the same row in a batch of 8), not, on the BLAS we test, on a row's place or
        neighbours in a product of one shape; ``tests/test_api_exact.py`` checks that on the machine it
        runs on. ``seed`` draws another sample; ``keys`` gives each row's noise seed outright (one per row,
        instead of the hash of ``seed`` and the row). ``keyed=False`` or a
        ``generator``: the batch goes through at once, its noise drawn from ``generator`` (default: torch's
        global stream; fresh noise every call, as Diffusion Bridge's captioner augmentation wants).
        """
        if audio.ndim != 2 or audio.shape[1] != self.config.dim:
            raise ValueError(f"expected audio embeddings of shape (N, {self.config.dim}), got {tuple(audio.shape)}")
        if keys is not None and (not keyed or generator is not None):
            raise ValueError("keys are the keyed path's noise seeds: they cannot go with keyed=False or a generator")
        if keys is not None and len(keys) != len(audio):
            raise ValueError(f"one noise key per row: {len(keys)} keys for {len(audio)} rows")
        cfg = {k: overrides.get(k, getattr(self.config, k)) for k in ("t_start", "steps", "sampler", "noise_start")}
        device = self.mean_device
        network = self.ema.module if use_ema else self.denoiser
        was_training = network.training
        network.eval()
        if keyed and generator is None:
            out = self._keyed(network, audio.to(device), modality, cfg, input_key(audio, seed, modality) if keys is None else list(keys))
        else:
            out = self._chain(network, audio.to(device), modality, cfg, generator)
        network.train(was_training)
        return out

    def _keyed(self, network: nn.Module, audio: torch.Tensor, modality: str, cfg: dict, keys: list[int]) -> torch.Tensor:
        """The chain in fixed-size chunks of :data:`KEYED_CHUNK` rows (the last one padded with copies of its
        first row, whose results are dropped), each row's noise from a generator seeded by its key: every
        matrix product has the same shape whatever the batch, so a row's result does not depend on it."""
        out = []
        for start in range(0, len(audio), KEYED_CHUNK):
            chunk = audio[start : start + KEYED_CHUNK]
            n = len(chunk)
            padded = torch.cat([chunk, chunk[:1].expand(KEYED_CHUNK - n, -1)]) if n < KEYED_CHUNK else chunk
            generators = [torch.Generator(audio.device).manual_seed(k) for k in keys[start : start + n]]
            generators += [torch.Generator(audio.device).manual_seed(0)] * (KEYED_CHUNK - n)
            out.append(self._chain(network, padded, modality, cfg, generators)[:n])
        return torch.cat(out) if out else torch.zeros(0, self.config.dim, device=audio.device)

    def _chain(self, network: nn.Module, audio: torch.Tensor, modality: str, cfg: dict, generator) -> torch.Tensor:
        source = self.preprocess(audio, modality)
        if self.config.kind == "regressor":
            return self.preprocess.inverse(self.regress(network, source))
        out = sample(
            self.schedule,
            lambda x, t: network(x, t, source),
            source,
            cfg["t_start"],
            cfg["steps"],
            cfg["sampler"],
            cfg["noise_start"],
            generator,
            project=self.network_input,
        )
        return self.preprocess.inverse(out)

    def regress(self, network: nn.Module, source: torch.Tensor) -> torch.Tensor:
        """The regressor's prediction of the (preprocessed) paired text: the network at the constant t = 0,
        its input the preprocessed audio itself (no noise)."""
        return network(source, torch.zeros(len(source), dtype=torch.long, device=source.device), source)

    def network_input(self, x_t: torch.Tensor) -> torch.Tensor:
        """What the network sees of a noisy x_t: x_t itself, or with ``sphere_input`` its projection onto
        the data's sphere (the x0 / eps conversions then use the projected point too)."""
        return F.normalize(x_t, dim=-1) * self.preprocess.factor if self.config.sphere_input else x_t

    @property
    def stochastic(self) -> bool:
        """Whether :meth:`bridge` draws noise: it forward-noises its entry (``noise_start``) or samples
        ancestrally (``ddpm``). A regressor and DDIM from the audio itself give one output per input."""
        return self.config.kind != "regressor" and (bool(self.config.noise_start) or self.config.sampler == "ddpm")

    @property
    def mean_device(self) -> torch.device:
        return self.preprocess.mean_audio.device

    # -- export ------------------------------------------------------------------------------------

    def save_pretrained(self, folder: str | Path, extra: dict | None = None) -> Path:
        """``model.safetensors`` (EMA weights ``denoiser.*``, the raw trained weights ``raw.denoiser.*`` and the
        preprocessing means) and ``config.json`` (the settings, the encoder's description, ``extra``; the
        export format of :mod:`diffusion_link.export`)."""
        weights = {f"denoiser.{k}": v for k, v in self.ema.module.state_dict().items()}
        weights |= {f"{RAW}denoiser.{k}": v for k, v in self.denoiser.state_dict().items()}
        weights["preprocess.mean_audio"] = self.preprocess.mean_audio
        weights["preprocess.mean_text"] = self.preprocess.mean_text
        with write_export(folder, "bridge") as draft:
            draft.save_tensors(WEIGHTS, weights)
            draft.config.update({"config": asdict(self.config), "encoder": self.encoder, **(extra or {})})
        return Path(folder)

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu", weights: Literal["ema", "raw"] = "ema") -> "DiffusionLink":
        """Load an export, after checking its kind and every file's checksum (:func:`~diffusion_link.export.read_export`).

        ``weights``: ``ema`` (default, what every table uses) or ``raw``, the trained weights without the
        average (Diffusion Bridge's captioning recipe samples with them); both sets then hold them.
        """
        if weights not in ("ema", "raw"):
            raise ValueError(f"a bridge's weights are 'ema' or 'raw', not {weights!r}")
        meta = read_export(folder, "bridge", required=(WEIGHTS,))
        model = cls(BridgeConfig.from_dict(meta["config"]), meta.get("encoder"))
        model.meta = meta
        tensors = load_tensors(folder, WEIGHTS, map_location)
        prefix = f"{RAW}denoiser." if weights == "raw" else "denoiser."
        if not any(k.startswith(prefix) for k in tensors):
            raise ExportError(f"{folder} holds no raw (non-EMA) weights: it was exported before they were kept; refit the bridge, or load weights='ema'")
        model.denoiser.load_state_dict({k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)})
        model.preprocess.set_means(tensors["preprocess.mean_audio"], tensors["preprocess.mean_text"])
        model.weights = weights
        model.ema.module.load_state_dict(copy.deepcopy(model.denoiser.state_dict()))
        return model.eval()
