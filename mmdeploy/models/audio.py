"""Audio decoding and CLAP feature extraction (offline, numpy only).

WAV files are decoded with the standard library ``wave`` module (8/16/24/32-bit PCM); other
formats go through ``soundfile`` when it is installed.  Audio at another sample rate is
resampled with ``scipy.signal.resample_poly`` and a log line says so.  Features come from the
checkpoint's own ``ClapFeatureExtractor`` settings, made deterministic: clips longer than the
extractor's window are cut to their first ``max_length_s`` seconds (the extractor would crop
at random) and the unfused ``rand_trunc`` path is used (the ``fusion`` path marks a random clip
as "longer" when none is).
"""

from __future__ import annotations

import logging
import wave
from math import gcd
from pathlib import Path

import numpy as np

from mmdeploy.errors import InputError

log = logging.getLogger("mmdeploy.audio")

AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".mp3", ".aiff", ".aif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a PCM WAV file to mono float32 in [-1, 1] and its sample rate."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as fh:
            channels, width, rate = fh.getnchannels(), fh.getsampwidth(), fh.getframerate()
            raw = fh.readframes(fh.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        raise InputError(f"cannot decode audio file {path}: {exc}",
                         "pass a PCM .wav file (install soundfile for other formats)") from None
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = (np.where(ints >= 1 << 23, ints - (1 << 24), ints)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:  # pragma: no cover - wave rejects other widths itself
        raise InputError(f"cannot decode audio file {path}: {8 * width}-bit samples",
                         "pass 8/16/24/32-bit PCM")
    if channels > 1:
        data = data[: len(data) // channels * channels].reshape(-1, channels).mean(axis=1)
    if data.size == 0:
        raise InputError(f"audio file {path} holds no samples", "pass a non-empty recording")
    return data.astype(np.float32), rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """Write mono float samples in [-1, 1] as 16-bit PCM."""
    pcm = (np.clip(np.asarray(samples, np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(int(rate))
        fh.writeframes(pcm.tobytes())
    return Path(path)


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and sample rate of any supported file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {path} does not exist", "check the path")
    if path.suffix.lower() in (".wav", ".wave"):
        return read_wav(path)
    try:
        import soundfile
    except ImportError:
        raise InputError(f"cannot decode {path.name}: only .wav is supported without soundfile",
                         "convert it to .wav or pip install soundfile") from None
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises its own error types
        raise InputError(f"cannot decode audio file {path}: {exc}", "pass a valid audio file") from None
    return data.mean(axis=1).astype(np.float32), int(rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    g = gcd(int(rate), int(target))
    from scipy.signal import resample_poly

    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def load_audio(path: str | Path, sampling_rate: int) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sampling_rate`` (resampling, with a log line)."""
    samples, rate = decode_audio(path)
    if rate != sampling_rate:
        log.warning("%s: sample rate %d Hz, resampled to %d Hz", Path(path).name, rate, sampling_rate)
        samples = resample(samples, rate, sampling_rate)
    return samples


def audio_files(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


class ClapFeatures:
    """The checkpoint's ``ClapFeatureExtractor`` with deterministic settings.

    ``source`` is a folder with ``preprocessor_config.json`` or a ``ClapFeatureExtractor``."""

    def __init__(self, source):
        from transformers import ClapFeatureExtractor

        if isinstance(source, ClapFeatureExtractor):
            self.extractor = source
        else:
            folder = Path(source)
            if not (folder / "preprocessor_config.json").is_file():
                from mmdeploy.errors import CheckpointError

                raise CheckpointError(f"{folder} has no preprocessor_config.json (the CLAP feature extractor)",
                                      "save the checkpoint with its processor (processor.save_pretrained), "
                                      "or pass --processor DIR")
            self.extractor = ClapFeatureExtractor.from_pretrained(str(folder))
        self.sampling_rate = int(self.extractor.sampling_rate)
        self.max_samples = int(self.extractor.nb_max_samples)

    def __call__(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """log-mel features [batch, 1, frames, mels] float32 for mono waveforms at sampling_rate."""
        clips = [np.asarray(w, np.float32)[: self.max_samples] for w in waveforms]
        clips = [c if c.size else np.zeros(1, np.float32) for c in clips]
        out = self.extractor(clips, sampling_rate=self.sampling_rate, truncation="rand_trunc",
                             padding="repeatpad", return_tensors="np")
        return np.asarray(out["input_features"], dtype=np.float32)

    def files(self, paths: list[Path]) -> np.ndarray:
        return self([load_audio(p, self.sampling_rate) for p in paths])


def clap_features_for(folder: Path, processor_dir: Path | None, config: dict, provenance=None) -> ClapFeatures:
    """CLAP features from ``preprocessor_config.json`` (``processor_dir`` first, then ``folder``),
    else derived from config.json: ``num_mel_bins`` mels, the CLAP defaults (48 kHz, hop 480,
    window 1024, 0-14 kHz) and the longest clip the audio encoder's input size accepts (10 s for
    ``clap-htsat-unfused``)."""
    from transformers import ClapFeatureExtractor

    from mmdeploy.models.preprocess import Provenance

    provenance = provenance if provenance is not None else Provenance()
    places = ([(Path(processor_dir), "processor-dir")] if processor_dir else []) + [(Path(folder), "checkpoint")]
    for place, source in places:
        if (place / "preprocessor_config.json").is_file():
            provenance.add("feature_extractor", source,
                           None if source == "checkpoint" else f"feature extractor from {place}")
            return ClapFeatures(place)
    audio = config.get("audio_config") or {}
    mels = int(audio.get("num_mel_bins", 64))
    spec = int(audio.get("spec_size", 256))
    frames = spec * max(spec // mels, 1)  # the encoder's time axis: spec_size * freq_ratio
    rate, hop = 48_000, 480
    seconds = max(1, min(10, (frames - 1) * hop // rate))
    extractor = ClapFeatureExtractor(feature_size=mels, sampling_rate=rate, hop_length=hop, max_length_s=seconds,
                                     fft_window_size=1024, frequency_min=0, frequency_max=14_000,
                                     truncation="rand_trunc", padding="repeatpad")
    provenance.add("feature_extractor", "derived",
                   f"no preprocessor_config.json: CLAP feature extractor derived from config.json "
                   f"({mels} mels, {rate} Hz, hop {hop}, {seconds} s clips)")
    provenance.derived["feature_extractor"] = extractor
    return ClapFeatures(extractor)
