"""CLAP feature extraction (offline, numpy only).

Clips are decoded by :mod:`mmdeploy.data.media` (the one door for user files: WAV by the
standard library, other formats through ``soundfile``, resampled to the model's rate with a log
line).  Features come from the checkpoint's own ``ClapFeatureExtractor`` settings, made
deterministic: clips longer than the extractor's window are cut to their first ``max_length_s``
seconds (the extractor would crop at random) and the unfused ``rand_trunc`` path is used (the
``fusion`` path marks a random clip as "longer" when none is).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdeploy.data.media import load_audio


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
