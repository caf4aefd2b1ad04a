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

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diffusion_link.caption.bundled import bundle_settings
from diffusion_link.caption.chain import Timer, caption_waves
from diffusion_link.caption.inputs import Bridges
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
        self, encoder, bridges: Bridges, bridge: str | None, captioner: CaptionModel, decoding: DecodingOptions, device: torch.device, meta: dict | None = None
    ):
        """The components, as the captioner's ``test`` and ``predict`` hold them: ``bridges`` and the ``bridge``
        setting among them (an export folder; ``None``: raw audio), the LM ``captioner`` and its ``decoding``."""
        self.encoder, self.bridges, self.setting, self.captioner, self.decoding, self.device = encoder, bridges, bridge, captioner, decoding, device
        self.meta = meta or {}
        self._timer = Timer(device)
        self.timings = self._timer.seconds  # seconds per stage since the last reset_timings()

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
        # the bridge's weights as the captioner was trained and tested (raw: Diffusion Bridge's captioner)
        bridges = Bridges([settings["bridge"]], settings["bridge_weights"])
        bridge = bridges.module(settings["bridge"])
        encoder = load_encoder(settings["clap"], settings["encoder_export"])
        described = encoder.describe()
        for name, expected in (("bridge", bridge.encoder if bridge is not None else None), ("captioner", captioner.meta.get("encoder"))):
            if expected and (diff := encoder_mismatch(expected, described)):
                raise BundleError(f"{folder}: the encoder is not the one the {name} was trained with: " + "; ".join(diff))
        if isinstance(encoder, torch.nn.Module):
            encoder.to(device)
        bridges.to(device)
        captioner.to(device)
        return cls(encoder, bridges, settings["bridge"], captioner, settings["decoding"], device, settings["bundle"])

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
        with self._timer("decode"):
            return self._load(audio, sample_rate, strict)

    def _load(self, audio, sample_rate: int | None, strict: bool) -> tuple[list[np.ndarray | None], list[str], dict[str, str]]:
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
        that cannot be decoded raises). Each clip is embedded on its own: ``batch_size`` changes nothing."""
        waves, _, _ = self.load(audio, sample_rate, strict=True)
        with self._timer("encoder"):
            out = [self.encoder.encode_audio(waves[i : i + batch_size]) for i in range(0, len(waves), batch_size)]
            return torch.cat(out).to(self.device) if out else torch.zeros(0, self.encoder.dim, device=self.device)

    def bridge(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Audio embeddings through the bundle's bridge into the text-embedding distribution (unit vectors),
        as the captioner's test rows bridge them (in chunks of fixed shape, noise keyed by the embedding)."""
        with self._timer("bridge"):
            return self._through(True)(embeddings.to(self.device))

    def caption_embeddings(self, embeddings: torch.Tensor) -> list[str]:
        """Captions of (N, D) embeddings, as the LLM sees them (already bridged, or raw)."""
        with self._timer("llm"):
            return self.captioner.generate(embeddings.to(self.device), self.decoding) if len(embeddings) else []

    def _through(self, bridge: bool):
        """The bridge setting as the chain takes it (``bridge=False``: raw audio, normalised)."""
        if bridge and self.setting is None:
            raise BundleError("this bundle has no bridge (it captions raw audio): call captioner(..., bridge=False)")
        return partial(self.bridges, setting=self.setting if bridge else None)

    # -- the whole chain --------------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self, audio: Audio | Sequence[Audio], sample_rate: int | None = None, bridge: bool = True, strict: bool = True, batch_size: int = 32
    ) -> Captions:
        """Caption ``audio`` (one or more paths, a folder, or waveforms at ``sample_rate``), ``batch_size``
        clips at a time (the LLM's batch: the encoder takes each clip on its own, the bridge chunks of one shape): through the
        bridge (``bridge=False``: raw audio, normalised, for comparison). The chain is
        :func:`~diffusion_link.caption.chain.caption_waves`, the one ``predict`` runs."""
        through = self._through(bridge)
        waves, sources, failures = self.load(audio, sample_rate, strict)
        captions: list[str | None] = []
        for start in range(0, len(waves), batch_size):
            captions += caption_waves(self.encoder, waves[start : start + batch_size], self.captioner, self.decoding, through, self._timer)
        return Captions(captions, sources, failures)

    def reset_timings(self) -> None:
        self.timings.clear()


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
