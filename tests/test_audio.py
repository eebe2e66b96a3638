"""Audio decoding, resampling and the synthetic audio set."""

from __future__ import annotations

import logging
import wave

import numpy as np
import pytest

from mmdeploy.data import synthetic_audio as audio_data
from mmdeploy.errors import InputError
from mmdeploy.data.media import decode_audio, load_audio, read_wav, resample, write_wav


def test_wav_roundtrip_and_widths(tmp_path):
    x = 0.5 * np.sin(np.arange(800) * 0.1).astype(np.float32)
    data, rate = read_wav(write_wav(tmp_path / "a.wav", x, 8000))
    assert rate == 8000 and data.dtype == np.float32
    assert np.abs(data - x).max() < 1e-4
    for width, dtype in ((1, None), (3, None), (4, "<i4")):  # 8/24/32-bit PCM, stereo
        pcm = (x * 0.9 * (2 ** (8 * width - 1) - 1)).astype(np.int64)
        if width == 1:
            raw = (pcm + 128).astype(np.uint8).repeat(2).tobytes()
        elif width == 3:
            u = (pcm & 0xFFFFFF).astype(np.uint32)
            raw = np.stack([u & 0xFF, (u >> 8) & 0xFF, (u >> 16) & 0xFF], 1).astype(np.uint8).repeat(2, 0).tobytes()
        else:
            raw = pcm.astype(dtype).repeat(2).tobytes()
        with wave.open(str(tmp_path / f"w{width}.wav"), "wb") as fh:
            fh.setnchannels(2)
            fh.setsampwidth(width)
            fh.setframerate(8000)
            fh.writeframes(raw)
        got, _ = read_wav(tmp_path / f"w{width}.wav")
        assert got.shape == x.shape and np.abs(got - 0.9 * x).max() < 2e-2


def test_resample_logs(tmp_path, caplog):
    t = np.arange(44100) / 44100
    write_wav(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 44100)
    with caplog.at_level(logging.WARNING, logger="mmdeploy.audio"):
        y = load_audio(tmp_path / "tone.wav", 16000)
    assert "resampled to 16000 Hz" in caplog.text
    assert y.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(y))
    assert abs(int(spectrum.argmax()) - 440) <= 1  # 1 s at 16 kHz: 1 Hz bins
    assert resample(y, 16000, 16000) is y


def test_bad_audio(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(InputError, match="cannot decode audio file"):
        decode_audio(tmp_path / "bad.wav")
    (tmp_path / "a.mp3").write_bytes(b"ID3")
    with pytest.raises(InputError, match="only .wav"):
        decode_audio(tmp_path / "a.mp3")
    with pytest.raises(InputError, match="does not exist"):
        decode_audio(tmp_path / "missing.wav")
    write_wav(tmp_path / "empty.wav", np.zeros(0), 16000)
    with pytest.raises(InputError, match="no samples"):
        decode_audio(tmp_path / "empty.wav")


def test_synthetic_split_deterministic_and_distinct():
    a, la = audio_data.make_split("eval", 18)
    b, lb = audio_data.make_split("eval", 18)
    assert la == lb == [i % 9 for i in range(18)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c, _ = audio_data.make_split("calib", 18)
    assert not np.array_equal(a[0], c[0])
    assert all(x.dtype == np.float32 and np.abs(x).max() <= 1 for x in a)
    # the classes differ where they should: spectral centroid of high tone > low tone,
    # brown noise darker than white noise; chirps move in opposite directions
    def centroid(x):
        s = np.abs(np.fft.rfft(x)) ** 2
        return float((s * np.arange(s.size)).sum() / s.sum())
    names = audio_data.CLASS_NAMES
    assert centroid(a[names.index("high tone")]) > 3 * centroid(a[names.index("low tone")])
    assert centroid(a[names.index("white noise")]) > 3 * centroid(a[names.index("brown noise")])
    up, down = a[names.index("rising chirp")], a[names.index("falling chirp")]
    assert centroid(up[-4000:]) > centroid(up[:4000]) and centroid(down[-4000:]) < centroid(down[:4000])
    with pytest.raises(KeyError):
        audio_data.make_split("nope")
