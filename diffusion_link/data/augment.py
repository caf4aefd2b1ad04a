"""Waveform augmentation for training an audio encoder, as sound-event models use it (numpy/scipy/soxr).

:class:`WaveAugment` is applied on the fly to every training clip, before the audio tower's features,
when the encoder's DataModule (:class:`~diffusion_link.data.clips.ClipCaptionDataModule`) is given one.
Each transform fires with its own probability, in this order:

1. speed: resampling (soxr) by a factor, which moves pitch and tempo together (Kaldi's speed perturbation);
2. pitch: a pitch shift at the same length (resample, then a phase-vocoder time stretch back; librosa);
3. filter: one of a low-pass, a high-pass (2nd-order Butterworth) or a peaking EQ (RBJ biquad);
4. reverb: a synthetic room (exponentially decaying noise, RT60 drawn, some early reflections);
5. mix: another training clip underneath at a low level (a distractor, not a caption change);
6. noise: white, pink or brown noise at a drawn SNR;
7. gain: a random level in dB.

Every draw comes from the ``numpy.random.Generator`` passed in, so the same seed gives the same audio.
"""

from __future__ import annotations

import numpy as np


def _db(x: float) -> float:
    return float(10 ** (x / 20))


def _power(x: np.ndarray) -> float:
    return float(np.mean(x.astype(np.float64) ** 2)) + 1e-12


class WaveAugment:
    """Random, configurable audio transforms of a mono float32 waveform (see the module's docstring).

    Args:
        gain_db: gain drawn uniformly in ±``gain_db``.
        speed_prob, speed: probability and range of the speed factor (0.9, 1.1: ±10 %).
        pitch_prob, pitch_semitones: probability and range (±) of a pitch shift that keeps the length.
        filter_prob: probability of one filter (low-pass 1.5-6 kHz, high-pass 100-800 Hz, or EQ ±9 dB).
        reverb_prob, rt60: probability and range of the reverberation time (s) of a synthetic room.
        mix_prob, mix_db: probability of mixing in another clip, and its level relative to this one (dB).
        noise_prob, snr_db: probability and range of the SNR (dB) of coloured background noise.
    """

    def __init__(
        self,
        gain_db: float = 6.0,
        speed_prob: float = 0.5,
        speed: tuple[float, float] = (0.9, 1.1),
        pitch_prob: float = 0.0,
        pitch_semitones: float = 2.0,
        filter_prob: float = 0.5,
        reverb_prob: float = 0.3,
        rt60: tuple[float, float] = (0.15, 0.8),
        mix_prob: float = 0.0,
        mix_db: tuple[float, float] = (-20.0, -8.0),
        noise_prob: float = 0.5,
        snr_db: tuple[float, float] = (5.0, 30.0),
    ):
        for name, p in dict(
            speed_prob=speed_prob, pitch_prob=pitch_prob, filter_prob=filter_prob, reverb_prob=reverb_prob, mix_prob=mix_prob, noise_prob=noise_prob
        ).items():
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"WaveAugment: {name} must lie in [0, 1] (got {p})")
        if not 0 < speed[0] <= speed[1]:
            raise ValueError(f"WaveAugment: speed must be an increasing range of positive factors (got {speed})")
        self.gain_db, self.speed_prob, self.speed = gain_db, speed_prob, tuple(speed)
        self.pitch_prob, self.pitch_semitones = pitch_prob, pitch_semitones
        self.filter_prob, self.reverb_prob, self.rt60 = filter_prob, reverb_prob, tuple(rt60)
        self.mix_prob, self.mix_db = mix_prob, tuple(mix_db)
        self.noise_prob, self.snr_db = noise_prob, tuple(snr_db)

    def describe(self) -> dict:
        keys = (
            "gain_db",
            "speed_prob",
            "speed",
            "pitch_prob",
            "pitch_semitones",
            "filter_prob",
            "reverb_prob",
            "rt60",
            "mix_prob",
            "mix_db",
            "noise_prob",
            "snr_db",
        )
        return {k: list(v) if isinstance(v, tuple) else v for k, v in ((k, getattr(self, k)) for k in keys)}

    @property
    def wants_other(self) -> bool:
        """Whether a second clip is needed (mixing is on)."""
        return self.mix_prob > 0

    def __call__(self, wave: np.ndarray, rate: int, rng: np.random.Generator, other: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(wave, dtype=np.float32)
        if len(x) == 0:
            return x
        if rng.random() < self.speed_prob:
            x = change_speed(x, float(rng.uniform(*self.speed)))
        if rng.random() < self.pitch_prob:
            x = shift_pitch(x, rate, float(rng.uniform(-self.pitch_semitones, self.pitch_semitones)))
        if rng.random() < self.filter_prob:
            x = random_filter(x, rate, rng)
        if rng.random() < self.reverb_prob:
            x = reverberate(x, rate, float(rng.uniform(*self.rt60)), rng)
        if other is not None and len(other) and rng.random() < self.mix_prob:
            x = mix_under(x, np.asarray(other, dtype=np.float32), float(rng.uniform(*self.mix_db)), rng)
        if rng.random() < self.noise_prob:
            x = add_noise(x, float(rng.uniform(*self.snr_db)), rng)
        x = x * _db(rng.uniform(-self.gain_db, self.gain_db))
        return np.clip(x, -1.0, 1.0).astype(np.float32)


def change_speed(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (shorter and higher for ``factor`` > 1), by resampling."""
    import soxr

    return soxr.resample(x, 10_000, int(round(10_000 / factor)), quality="MQ").astype(np.float32)


def shift_pitch(x: np.ndarray, rate: int, semitones: float) -> np.ndarray:
    """Shift the pitch by ``semitones`` at the same length (librosa: phase-vocoder stretch, then resample)."""
    import librosa

    if len(x) < 2048:
        return change_speed(x, 2 ** (semitones / 12))
    return librosa.effects.pitch_shift(x, sr=rate, n_steps=semitones, res_type="soxr_mq").astype(np.float32)


def random_filter(x: np.ndarray, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A low-pass, a high-pass or a peaking EQ, drawn with equal chance."""
    from scipy import signal

    nyquist = rate / 2
    kind = int(rng.integers(3))
    if kind == 0:
        sos = signal.butter(2, min(rng.uniform(1500, 6000), 0.95 * nyquist), "lowpass", fs=rate, output="sos")
    elif kind == 1:
        sos = signal.butter(2, rng.uniform(100, 800), "highpass", fs=rate, output="sos")
    else:
        sos = peaking_eq(float(rng.uniform(200, min(6000, 0.9 * nyquist))), float(rng.uniform(-9, 9)), float(rng.uniform(0.5, 2.0)), rate)
    return signal.sosfilt(sos, x).astype(np.float32)


def peaking_eq(freq: float, gain_db: float, q: float, rate: int) -> np.ndarray:
    """The RBJ cookbook's peaking EQ biquad, as one second-order section."""
    a = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * freq / rate
    alpha = np.sin(w0) / (2 * q)
    b = [1 + alpha * a, -2 * np.cos(w0), 1 - alpha * a]
    den = [1 + alpha / a, -2 * np.cos(w0), 1 - alpha / a]
    return np.array([[*(np.array(b) / den[0]), 1.0, den[1] / den[0], den[2] / den[0]]])


def room_impulse(rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """A synthetic room impulse response: the direct sound, a few early reflections, then Gaussian noise
    decaying by 60 dB in ``rt60`` seconds; unit energy."""
    n = max(int(rt60 * rate), 16)
    t = np.arange(n) / rate
    ir = rng.standard_normal(n) * np.exp(-6.908 * t / rt60)  # 6.908 = ln(1000): -60 dB at rt60
    ir[0] = 1.0 / max(float(rng.uniform(0.3, 1.0)), 1e-3)  # direct path, above the tail
    for delay in rng.uniform(0.002, 0.03, 3):
        ir[min(int(delay * rate), n - 1)] += rng.uniform(0.2, 0.6)
    return (ir / np.sqrt(np.sum(ir**2))).astype(np.float32)


def reverberate(x: np.ndarray, rate: int, rt60: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` in a synthetic room (:func:`room_impulse`), at the dry level, the tail cut to ``len(x)``."""
    from scipy.signal import fftconvolve

    wet = fftconvolve(x, room_impulse(rate, rt60, rng))[: len(x)]
    return (wet * np.sqrt(_power(x) / _power(wet))).astype(np.float32)


def mix_under(x: np.ndarray, other: np.ndarray, level_db: float, rng: np.random.Generator) -> np.ndarray:
    """``other`` (tiled or cut to ``len(x)``, from a random start) added ``level_db`` below ``x``."""
    start = int(rng.integers(len(other)))
    piece = np.resize(np.roll(other, -start), len(x))
    scale = np.sqrt(_power(x) / _power(piece)) * _db(level_db)
    return (x + scale * piece).astype(np.float32)


def coloured_noise(n: int, beta: float, rng: np.random.Generator) -> np.ndarray:
    """Noise whose power falls as 1/f^beta (0 white, 1 pink, 2 brown), unit power."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1] if n > 1 else 1.0
    noise = np.fft.irfft(spectrum / f ** (beta / 2), n)
    return (noise / np.sqrt(_power(noise))).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White, pink or brown noise at ``snr_db`` below ``x``'s power."""
    noise = coloured_noise(len(x), float(rng.choice([0.0, 1.0, 2.0])), rng)
    return (x + noise * np.sqrt(_power(x)) * _db(-snr_db)).astype(np.float32)


__all__ = ["WaveAugment", "change_speed", "shift_pitch", "random_filter", "reverberate", "mix_under", "add_noise", "room_impulse"]
