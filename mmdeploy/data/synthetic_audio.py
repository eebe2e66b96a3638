"""Deterministic synthetic audio clips with text labels (the CLAP zero-shot task).

Nine classes of sounds a small audio model can tell apart from a log-mel spectrogram: low and
high steady tones, rising and falling chirps, white / pink / brown noise, a click train and a
beeping (pulsed) tone.  Every clip is drawn by numpy from a seed derived from the split and
index, so a split is bit-identical on every machine.  Splits: ``train`` (for the demo model),
``eval`` (the task metric) and ``calib`` (quantization calibration) use disjoint seeds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

SAMPLE_RATE = 16_000
DURATION_S = 1.0

CLASS_NAMES: list[str] = [
    "low tone", "high tone", "rising chirp", "falling chirp", "white noise", "pink noise",
    "brown noise", "clicks", "beeping",
]
PROMPT_TEMPLATE = "the sound of {}"
SPLIT_SEEDS = {"train": 11_000_003, "eval": 22_000_003, "calib": 33_000_017}
SPLIT_SIZES = {"train": 200 * len(CLASS_NAMES), "eval": 8 * len(CLASS_NAMES), "calib": 32}


def class_prompts() -> list[str]:
    return [PROMPT_TEMPLATE.format(name) for name in CLASS_NAMES]


def vocabulary() -> list[str]:
    words = {w for p in class_prompts() for w in p.split()}
    return sorted(words | {"a", "of", "sound", "sounds", "noise", "tone"})


def _coloured_noise(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Noise with power spectrum ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    spectrum /= f ** (exponent / 2)
    x = np.fft.irfft(spectrum, n)
    return x / (np.abs(x).max() + 1e-9)


def synthesize(label: int, rng: np.random.Generator, rate: int = SAMPLE_RATE,
               seconds: float = DURATION_S) -> np.ndarray:
    """One clip of class ``label`` as float32 in [-1, 1]."""
    n = int(rate * seconds)
    t = np.arange(n) / rate
    name = CLASS_NAMES[label]
    if name in ("low tone", "high tone", "beeping"):
        f0 = rng.uniform(120, 350) if name == "low tone" else rng.uniform(1500, 3500) \
            if name == "high tone" else rng.uniform(600, 1200)
        x = np.sin(2 * np.pi * f0 * t + rng.uniform(0, 2 * np.pi))
        x += rng.uniform(0, 0.3) * np.sin(4 * np.pi * f0 * t)  # a little second harmonic
        if name == "beeping":
            rate_hz = rng.uniform(3, 8)
            x *= (np.sin(2 * np.pi * rate_hz * t) > 0).astype(np.float64)
    elif name in ("rising chirp", "falling chirp"):
        lo, hi = rng.uniform(150, 500), rng.uniform(2500, 5000)
        f_start, f_end = (lo, hi) if name == "rising chirp" else (hi, lo)
        k = np.log(f_end / f_start) / seconds  # exponential sweep
        x = np.sin(2 * np.pi * f_start * (np.exp(k * t) - 1) / k)
    elif name.endswith("noise"):
        x = _coloured_noise(rng, n, {"white noise": 0.0, "pink noise": 1.0, "brown noise": 2.0}[name])
    else:  # clicks
        x = np.zeros(n)
        period = int(rate / rng.uniform(4, 12))
        start = int(rng.integers(0, period))
        for pos in range(start, n - 40, period):
            x[pos:pos + 40] += np.hanning(40) * rng.choice([-1.0, 1.0])
    gain = rng.uniform(0.3, 0.9)
    x = gain * x / (np.abs(x).max() + 1e-9) + rng.normal(0, 0.005, n)
    return np.clip(x, -1, 1).astype(np.float32)


def make_split(split: str, n: int | None = None, rate: int = SAMPLE_RATE) -> tuple[list[np.ndarray], list[int]]:
    """``n`` clips of ``split`` (classes in turn) and their labels; deterministic."""
    if split not in SPLIT_SEEDS:
        raise KeyError(f"unknown split {split!r}; use one of {', '.join(SPLIT_SEEDS)}")
    n = SPLIT_SIZES[split] if n is None else n
    clips, labels = [], []
    for i in range(n):
        label = i % len(CLASS_NAMES)
        rng = np.random.default_rng([SPLIT_SEEDS[split], i])
        clips.append(synthesize(label, rng, rate))
        labels.append(label)
    return clips, labels


def write_split(folder: str | Path, split: str, n: int | None = None, rate: int = SAMPLE_RATE) -> list[Path]:
    """Write a split as 16-bit WAV files ``<index>_<class>.wav`` (e.g. a calibration folder)."""
    from mmdeploy.data.media import write_wav

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clips, labels = make_split(split, n, rate)
    return [write_wav(folder / f"{i:04d}_{CLASS_NAMES[y].replace(' ', '_')}.wav", c, rate)
            for i, (c, y) in enumerate(zip(clips, labels))]
