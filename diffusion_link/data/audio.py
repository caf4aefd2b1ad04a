"""Decoding audio: any file soundfile reads (or bytes of one), to mono float32 at a target rate."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np


class AudioDecodeError(ValueError):
    """A clip that cannot be used; ``reason`` is what goes into ``failures.csv``."""

    def __init__(self, where: str, reason: str):
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


#: file extensions of audio that libsndfile decodes (.oga: Ogg audio, as in the freedesktop sound theme;
#: .m4a is listed so that such AudioCaps downloads are found and reported as undecodable, not as missing).
#: The AudioCaps index looks for these; ``predict`` on a folder tries *every* file and reports the rest.
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".snd", ".caf", ".w64", ".m4a")


def load_audio(source: str | Path | bytes, sample_rate: int = 48_000, where: str | None = None) -> np.ndarray:
    """Decode ``source`` (a path, or the bytes of a file) to a mono float32 waveform at ``sample_rate``.

    Mono is the mean of the channels; resampling is soxr's high-quality mode (deterministic).
    Raises :class:`AudioDecodeError` for missing, empty (0 bytes), unreadable, silent-length (0 samples) or non-finite audio.
    """
    import soundfile as sf

    where = where or (str(source) if not isinstance(source, bytes) else "<bytes>")
    if not isinstance(source, bytes) and not Path(source).is_file():
        folder = Path(source).parent
        raise AudioDecodeError(where, f"file not found: {source}" + ("" if folder.is_dir() else f" (the folder {folder} does not exist)"))
    if (not isinstance(source, bytes) and Path(source).stat().st_size == 0) or (isinstance(source, bytes) and not source):
        raise AudioDecodeError(where, "empty file (0 bytes)")
    try:
        data, rate = sf.read(io.BytesIO(source) if isinstance(source, bytes) else str(source), dtype="float32", always_2d=True)
    except Exception as err:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise AudioDecodeError(where, f"unreadable audio ({type(err).__name__}: {err})") from None
    if data.size == 0:
        raise AudioDecodeError(where, "empty audio (0 samples)")
    wave = data.mean(axis=1)
    if not np.isfinite(wave).all():
        raise AudioDecodeError(where, "audio contains NaN or infinite samples")
    if rate != sample_rate:
        import soxr

        wave = soxr.resample(wave, rate, sample_rate, quality="HQ")
    return np.ascontiguousarray(wave, dtype=np.float32)
