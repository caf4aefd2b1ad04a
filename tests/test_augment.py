"""The encoder's waveform augmentation: each transform does what it says, draws are reproducible, and the
training data path applies it afresh to every item."""

import numpy as np
import pytest
import torch

from diffusion_link.data.augment import WaveAugment, add_noise, change_speed, mix_under, random_filter, reverberate, room_impulse

RATE = 16_000


def _tone(freq: float, seconds: float = 1.0) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _band_power(x: np.ndarray, lo: float, hi: float) -> float:
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x), 1 / RATE)
    return float(spec[(f >= lo) & (f < hi)].sum())


def test_each_transform_does_what_it_says():
    rng = np.random.default_rng(0)
    x = _tone(440)
    fast = change_speed(x, 1.25)
    assert abs(len(fast) - len(x) / 1.25) < 5
    peak = np.fft.rfftfreq(len(fast), 1 / RATE)[np.argmax(np.abs(np.fft.rfft(fast)))]
    assert abs(peak - 550) < 5  # pitch moves with speed
    ir = room_impulse(RATE, 0.5, rng)
    tail = ir[int(0.45 * RATE) :]
    assert len(ir) == RATE // 2 and np.sum(ir**2) == pytest.approx(1.0, rel=1e-4) and np.abs(tail).max() < 0.02
    click = np.zeros(RATE, np.float32)
    click[100] = 1.0
    wet = reverberate(click, RATE, 0.5, rng)
    assert np.abs(wet[RATE // 10 :]).max() > 0  # energy after the click: a room
    snr = 10.0
    noisy = add_noise(x, snr, rng)
    measured = 10 * np.log10(np.mean(x**2) / np.mean((noisy - x) ** 2))
    assert measured == pytest.approx(snr, abs=0.01)
    under = mix_under(x, _tone(3000), -12.0, rng)
    assert 10 * np.log10(np.mean((under - x) ** 2) / np.mean(x**2)) == pytest.approx(-12.0, abs=0.1)
    mixed = _tone(200) + _tone(6000)
    changed = [random_filter(mixed, RATE, np.random.default_rng(s)) for s in range(12)]
    ratios = [_band_power(y, 5000, 7000) / _band_power(y, 100, 300) for y in changed]
    base = _band_power(mixed, 5000, 7000) / _band_power(mixed, 100, 300)
    assert min(ratios) < 0.5 * base and max(ratios) > 1.5 * base  # some cut the highs, some the lows


def test_augment_is_reproducible_and_off_means_identity_up_to_gain():
    x = _tone(440) + 0.01 * np.random.default_rng(1).standard_normal(RATE).astype(np.float32)
    aug = WaveAugment(speed_prob=1.0, filter_prob=1.0, reverb_prob=1.0, mix_prob=1.0, noise_prob=1.0)
    a = aug(x, RATE, np.random.default_rng(7), other=_tone(1000))
    b = aug(x, RATE, np.random.default_rng(7), other=_tone(1000))
    c = aug(x, RATE, np.random.default_rng(8), other=_tone(1000))
    assert np.array_equal(a, b) and not np.array_equal(a[: min(len(a), len(c))], c[: min(len(a), len(c))])
    off = WaveAugment(gain_db=0.0, speed_prob=0.0, filter_prob=0.0, reverb_prob=0.0, noise_prob=0.0)
    assert np.allclose(off(x, RATE, np.random.default_rng(0)), x)
    with pytest.raises(ValueError, match="noise_prob must lie in"):
        WaveAugment(noise_prob=1.5)


def test_training_items_are_augmented_afresh_from_int16_waveforms():
    from diffusion_link.data.clips import TrainPairs

    class Clips:  # what FeatureClips(keep_waves=True) holds
        clip_ids = ["a", "b"]
        features = [(np.clip(_tone(440), -1, 1) * 32767).astype(np.int16), (_tone(880) * 32767).astype(np.int16)]
        captions = [["a tone"], ["a higher tone"]]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"clip_id": self.clip_ids[i], "features": self.features[i], "captions": self.captions[i]}

    def features(w):
        return torch.from_numpy(np.abs(np.fft.rfft(w))[:100].astype(np.float32))

    pairs = TrainPairs(Clips(), WaveAugment(noise_prob=1.0, mix_prob=1.0), features, RATE)
    torch.manual_seed(0)
    first = [pairs[0]["features"] for _ in range(2)]
    torch.manual_seed(0)
    again = pairs[0]["features"]
    assert not torch.equal(first[0], first[1]) and torch.equal(first[0], again)
