"""Audio in, caption out, in Python: one object over a bundle (``diffusion-link bundle``)::

    from diffusion_link import AudioCaptioner

    captioner = AudioCaptioner.from_pretrained("bundle/")            # device="cuda" where there is one
    captioner(["a.wav", "b.flac"])                                    # -> ["a dog barks ...", ...]
    captioner(waveforms, sample_rate=48_000, bridge=False)            # raw audio, for comparison
    captioner.embed_audio(["a.wav"]), captioner.bridge(embeddings)   # the stages on their own

Files are decoded as the CLI decodes them (any format libsndfile reads, mixed to mono, resampled to the
encoder's rate with soxr); waveforms are resampled from ``sample_rate``. With ``strict=False`` a file
that cannot be decoded does not stop the batch: its caption is ``None`` and ``result.failures`` names it
and why; with ``strict=True`` (the default) it raises :class:`~diffusion_link.data.audio.AudioDecodeError`
naming the file.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from diffusion_link.bridge.model import DiffusionLink
from diffusion_link.caption.bundled import bundle_settings
from diffusion_link.caption.model import CaptionModel, DecodingOptions
from diffusion_link.data.audio import AudioDecodeError, load_audio
from diffusion_link.data.store import encoder_mismatch
from diffusion_link.encoder import load_encoder
from diffusion_link.export import BundleError

#: one clip: a path or a 1-D mono waveform; a batch: a list (each item a path, 1-D, or (channels, samples))
#: or a 2-D (N, samples) array of mono waveforms
Audio = str | Path | np.ndarray | torch.Tensor


class Captions(list):
    """The captions of a call, in input order (``None`` where the input failed), with ``sources`` (each
    input's name: its path, or ``waveform[i]``) and ``failures`` (``{source: reason}``)."""

    def __init__(self, captions: list[str | None], sources: list[str], failures: dict[str, str]):
        super().__init__(captions)
        self.sources, self.failures = sources, failures

    def by_source(self) -> dict[str, str | None]:
        return dict(zip(self.sources, self))


class AudioCaptioner:
    """Encoder -> bridge -> LLM captioner, loaded from a bundle. Use :meth:`from_pretrained`."""

    def __init__(
        self, encoder, bridge: DiffusionLink | None, captioner: CaptionModel, decoding: DecodingOptions, device: torch.device, meta: dict | None = None
    ):
        self.encoder, self._bridge, self.captioner, self.decoding, self.device = encoder, bridge, captioner, decoding, device
        self.meta = meta or {}
        self.timings: dict[str, float] = defaultdict(float)  # seconds per stage since the last reset_timings()

    @classmethod
    def from_pretrained(
        cls, folder: str | Path, device: str | torch.device | None = None, clap_checkpoint: str | None = None, llm: str | None = None
    ) -> "AudioCaptioner":
        """Load a bundle after checking it: its structure, every component's checksums, the encoder that the
        bridge and captioner were trained on, and the captioner's base LM (refused when its files differ).

        Args:
            folder: the bundle (a folder from ``diffusion-link bundle``, or a ``snapshot_download`` of one).
            device: ``cuda``, ``cpu``, ...; default: CUDA when there is one.
            clap_checkpoint: a bundle with a laion-clap encoder references its checkpoint by sha256: the path
                of that file here (default: the path it was bundled from).
            llm: another local folder (or name) of the captioner's base LM; its files must be the ones it was trained with.
        """
        settings = bundle_settings(folder, clap_checkpoint)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        captioner = CaptionModel.from_pretrained(settings["pretrained"], llm=llm)
        weights = settings["bridge_weights"]  # as the captioner was trained and tested (raw: Diffusion Bridge's captioner)
        bridge = DiffusionLink.from_pretrained(settings["bridge"], weights=weights) if settings["bridge"] is not None else None
        encoder = load_encoder(settings["clap"], settings["encoder_export"])
        described = encoder.describe()
        for name, expected in (("bridge", bridge.encoder if bridge is not None else None), ("captioner", captioner.meta.get("encoder"))):
            if expected and (diff := encoder_mismatch(expected, described)):
                raise BundleError(f"{folder}: the encoder is not the one the {name} was trained with: " + "; ".join(diff))
        if isinstance(encoder, torch.nn.Module):
            encoder.to(device)
        if bridge is not None:
            bridge.to(device)
        captioner.to(device)
        return cls(encoder, bridge, captioner, settings["decoding"], device, settings["bundle"])

    @property
    def sample_rate(self) -> int:
        """The rate audio is decoded to (the encoder's)."""
        return int(self.encoder.sample_rate)

    # -- the stages ------------------------------------------------------------------------------------

    def load(
        self, audio: Audio | Sequence[Audio], sample_rate: int | None = None, strict: bool = True
    ) -> tuple[list[np.ndarray | None], list[str], dict[str, str]]:
        """Decode ``audio`` (paths, a folder: every file under it, or waveforms at ``sample_rate``) to mono
        waveforms at :attr:`sample_rate`: (waves, ``None`` where one failed; each input's name; failures)."""
        start = time.perf_counter()
        items = _items(audio)
        waves, sources, failures = [], [], {}
        for i, item in enumerate(items):
            source = str(item) if isinstance(item, (str, Path)) else f"waveform[{i}]"
            try:
                waves.append(self._decode(item, source, sample_rate))
            except AudioDecodeError as err:
                if strict:
                    raise
                waves.append(None)
                failures[source] = err.reason
            sources.append(source)
        self.timings["decode"] += time.perf_counter() - start
        return waves, sources, failures

    def _decode(self, item: Any, source: str, sample_rate: int | None) -> np.ndarray:
        if isinstance(item, (str, Path)):
            return load_audio(item, self.sample_rate)
        if sample_rate is None:
            raise ValueError("waveforms need their sample_rate (captioner(waves, sample_rate=48_000))")
        wave = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
        wave = wave.astype(np.float32).reshape(-1, wave.shape[-1]).mean(axis=0) if wave.ndim > 1 else wave.astype(np.float32)
        if wave.size == 0:
            raise AudioDecodeError(source, "empty audio (0 samples)")
        if not np.isfinite(wave).all():
            raise AudioDecodeError(source, "audio contains NaN or infinite samples")
        if sample_rate != self.sample_rate:
            import soxr

            wave = soxr.resample(wave, sample_rate, self.sample_rate, quality="HQ")
        return np.ascontiguousarray(wave, dtype=np.float32)

    def embed_audio(self, audio: Audio | Sequence[Audio], sample_rate: int | None = None, batch_size: int = 32) -> torch.Tensor:
        """The encoder's (N, D) audio embeddings (unit norm; on :attr:`device`) of every input (strict: a file
        that cannot be decoded raises)."""
        waves, _, _ = self.load(audio, sample_rate, strict=True)
        return self._embed(waves, batch_size)

    def _embed(self, waves: list[np.ndarray], batch_size: int) -> torch.Tensor:
        start = time.perf_counter()
        out = [self.encoder.encode_audio(waves[i : i + batch_size]) for i in range(0, len(waves), batch_size)]
        emb = torch.cat(out).to(self.device) if out else torch.zeros(0, self.encoder.dim, device=self.device)
        self._sync()
        self.timings["encoder"] += time.perf_counter() - start
        return emb

    def bridge(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Audio embeddings through the bundle's bridge into the text-embedding distribution (unit vectors)."""
        if self._bridge is None:
            raise BundleError("this bundle has no bridge (it captions raw audio): call captioner(..., bridge=False)")
        start = time.perf_counter()
        out = self._bridge.bridge(embeddings.to(self.device))
        self._sync()
        self.timings["bridge"] += time.perf_counter() - start
        return out

    def caption_embeddings(self, embeddings: torch.Tensor) -> list[str]:
        """Captions of (N, D) embeddings, as the LLM sees them (already bridged, or raw)."""
        start = time.perf_counter()
        out = self.captioner.generate(embeddings.to(self.device), self.decoding) if len(embeddings) else []
        self._sync()
        self.timings["llm"] += time.perf_counter() - start
        return out

    # -- the whole chain --------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self, audio: Audio | Sequence[Audio], sample_rate: int | None = None, bridge: bool = True, strict: bool = True, batch_size: int = 32
    ) -> Captions:
        """Caption ``audio`` (one or more paths, a folder, or waveforms at ``sample_rate``), ``batch_size``
        clips at a time: through the bridge (``bridge=False``: raw audio, normalised, for comparison)."""
        if bridge and self._bridge is None:
            raise BundleError("this bundle has no bridge (it captions raw audio): call captioner(..., bridge=False)")
        waves, sources, failures = self.load(audio, sample_rate, strict)
        good = [i for i, w in enumerate(waves) if w is not None]
        captions: list[str | None] = [None] * len(waves)
        for start in range(0, len(good), batch_size):
            chunk = good[start : start + batch_size]
            emb = self._embed([waves[i] for i in chunk], batch_size)
            emb = self.bridge(emb) if bridge else F.normalize(emb.float(), dim=-1)
            for i, caption in zip(chunk, self.caption_embeddings(emb)):
                captions[i] = caption
        return Captions(captions, sources, failures)

    def reset_timings(self) -> None:
        self.timings.clear()

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _items(audio: Audio | Sequence[Audio]) -> list[Any]:
    """The inputs one by one: a path (a folder: every file under it, sorted), a waveform, or a batch of them
    (a list, or a 2-D array / tensor of mono waveforms (N, samples))."""
    if isinstance(audio, (str, Path)):
        root = Path(audio)
        if root.is_dir():
            files = sorted(str(p) for p in root.rglob("*") if p.is_file())
            if not files:
                raise FileNotFoundError(f"{root} holds no files")
            return files
        return [audio]
    if isinstance(audio, (np.ndarray, torch.Tensor)):
        return [audio] if audio.ndim == 1 else list(audio)
    return list(audio)


__all__ = ["AudioCaptioner", "Captions"]
