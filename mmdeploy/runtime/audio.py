"""CLAP log-mel features from a bundle's ``preprocessor_config.json``, in numpy alone.

transformers' ``ClapFeatureExtractor`` on the deterministic path the toolchain uses
(``truncation="rand_trunc"`` with clips cut to their first ``max_length_s`` seconds,
``padding="repeatpad"``): Slaney mel filters, a periodic Hann window, centred reflect-padded
frames, power spectrum, dB.  Nothing of transformers is imported.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdeploy.errors import InputError


def _hz_to_mel(freq):
    freq = np.asarray(freq, np.float64)
    mels = 3.0 * freq / 200.0
    log = freq >= 1000.0
    return np.where(log, 15.0 + np.log(np.maximum(freq, 1e-12) / 1000.0) * (27.0 / np.log(6.4)), mels)


def _mel_to_hz(mels):
    mels = np.asarray(mels, np.float64)
    freq = 200.0 * mels / 3.0
    return np.where(mels >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels - 15.0)), freq)


def slaney_mel_filters(bins: int, mels: int, fmin: float, fmax: float, rate: int) -> np.ndarray:
    """[bins, mels] triangular filters, Slaney scale and normalisation (librosa's default)."""
    filter_freqs = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), mels + 2))
    fft_freqs = np.linspace(0, rate // 2, bins)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    diff = np.diff(filter_freqs)
    filters = np.maximum(0.0, np.minimum(-slopes[:, :-2] / diff[:-1], slopes[:, 2:] / diff[1:]))
    return filters * (2.0 / (filter_freqs[2:mels + 2] - filter_freqs[:mels]))[None, :]


class AudioFeatures:
    """``__call__(clips) -> input_features`` float32 [N, 1, frames, mels]."""

    def __init__(self, config: dict):
        self.rate = int(config.get("sampling_rate", 48000))
        self.window = int(config.get("fft_window_size", 1024))
        self.hop = int(config.get("hop_length", 480))
        self.max_samples = int(config.get("nb_max_samples") or self.rate * int(config.get("max_length_s", 10)))
        self.padding = config.get("padding", "repeatpad")
        bins = self.window // 2 + 1
        self.filters = slaney_mel_filters(bins, int(config.get("feature_size", 64)), float(config.get("frequency_min", 0)),
                                          float(config.get("frequency_max", 14000)), self.rate)

    @classmethod
    def from_dir(cls, folder: Path) -> "AudioFeatures":
        from mmdeploy.runtime.images import read_preprocessor_config

        config = read_preprocessor_config(folder, "the CLAP feature extractor",
                                          "re-create the bundle with `mmdeploy convert`")
        if config.get("feature_extractor_type", "ClapFeatureExtractor") != "ClapFeatureExtractor":
            raise InputError(f"{folder}/preprocessor_config.json: {config.get('feature_extractor_type')} is not supported by the runtime",
                             "CLAP's feature extractor is")
        return cls(config)

    def waveform(self, clip) -> np.ndarray:
        """A mono float waveform at the model's rate (files decoded and resampled)."""
        if isinstance(clip, (str, Path)):
            from mmdeploy.models.audio import load_audio

            if not Path(clip).is_file():
                raise InputError(f"{clip}: no such audio file", "check the path")
            return load_audio(Path(clip), self.rate)
        clip = np.asarray(clip, np.float32)
        if clip.ndim != 1:
            raise InputError(f"expected a mono waveform [samples], got shape {list(clip.shape)}",
                             f"pass one channel at {self.rate} Hz")
        return clip

    def one(self, clip) -> np.ndarray:
        wave = self.waveform(clip)[: self.max_samples]
        if not wave.size:
            wave = np.zeros(1, np.float32)
        if wave.size < self.max_samples:
            if self.padding == "repeatpad":
                wave = np.tile(wave, self.max_samples // wave.size)
            elif self.padding == "repeat":
                wave = np.tile(wave, self.max_samples // wave.size + 1)[: self.max_samples]
            wave = np.pad(wave, (0, self.max_samples - wave.size))
        half = self.window // 2
        x = np.pad(wave, (half, half), mode="reflect").astype(np.float64)
        frames = 1 + (x.size - self.window) // self.hop
        index = np.arange(self.window)[None, :] + self.hop * np.arange(frames)[:, None]
        hann = np.hanning(self.window + 1)[:-1]
        spec = np.fft.rfft(x[index] * hann, axis=1).astype(np.complex64)  # as transformers keeps it
        power = np.abs(spec, dtype=np.float64) ** 2
        mel = np.maximum(1e-10, power @ self.filters)
        return (10.0 * np.log10(np.maximum(mel, 1e-10))).astype(np.float32)[None]  # [1, frames, mels]

    def __call__(self, clips: list) -> np.ndarray:
        return np.stack([self.one(c) for c in clips]).astype(np.float32)
