import numpy as np
import pytest
import soundfile as sf

from diffusion_link.data.audio import AudioDecodeError, load_audio


def test_stereo_resampled_to_mono_48k(tmp_path):
    t = np.arange(22050) / 22050
    left, right = np.sin(2 * np.pi * 440 * t), np.zeros_like(t)
    sf.write(tmp_path / "s.wav", np.stack([left, right], 1), 22050)
    wave = load_audio(tmp_path / "s.wav", 48_000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 48_000) <= 1
    assert np.abs(wave).max() == pytest.approx(0.5, abs=0.02)  # mean of a sine and silence


def test_bytes_decode_like_paths(tmp_path):
    sf.write(tmp_path / "a.flac", np.random.RandomState(0).uniform(-0.5, 0.5, 16000).astype(np.float32), 16000)
    np.testing.assert_array_equal(load_audio((tmp_path / "a.flac").read_bytes()), load_audio(tmp_path / "a.flac"))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "file not found"),
        (lambda p: p.write_bytes(b"RIFF....not really a wav file"), "unreadable audio"),
        (lambda p: sf.write(p, np.zeros(0, dtype=np.float32), 16000), "empty audio"),
    ],
)
def test_bad_audio_is_a_clear_error(tmp_path, make, reason):
    path = tmp_path / "bad.wav"
    make(path)
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path)
    assert reason in err.value.reason and str(path) in str(err.value)
