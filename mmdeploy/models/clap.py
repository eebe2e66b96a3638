"""CLAP (``ClapModel``): an ``audio`` and a ``text`` component, zero-shot audio classification.

* ``audio``: ``input_features`` float32 [batch, 1, frames, mels] (the checkpoint's
  ``ClapFeatureExtractor`` log-mel, see :mod:`mmdeploy.models.audio`) → ``audio_embeds``
  [batch, projection_dim], L2-normalised as ``ClapModel.get_audio_features`` returns them;
* ``text``: ``input_ids`` / ``attention_mask`` int64 [batch, seq] → ``text_embeds``.

The task metric is zero-shot top-1 on the deterministic synthetic audio set of
:mod:`mmdeploy.data.synthetic_audio` (tones, chirps, noise colours, clicks) with its class prompts.
Only unfused checkpoints (``enable_fusion=False``, e.g. ``clap-htsat-unfused``) are supported:
the fused variant picks crops at random in its feature extractor.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.errors import CalibrationError, CheckpointError, InputError, UnsupportedError
from mmdeploy.models.base import Adapter, Component, TaskResult
from mmdeploy.models.preprocess import read_captions

PREPROCESS_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                    "merges.txt", "vocab.txt", "preprocessor_config.json", "processor_config.json",
                    "generation_config.json")
TEXT_LENGTH_CAP = 77
EVAL_BATCH = 16


def from_pretrained(model_cls, source: Path, allow_pickle: bool):
    """The shared safe loader: safetensors validated, pickle only through torch's weights_only."""
    from mmdeploy.models.loading import load_hf_model

    return load_hf_model(model_cls, Path(source), allow_pickle=allow_pickle)


def load_tokenizer(folder: Path):
    from mmdeploy.models.preprocess import load_tokenizer as load

    try:
        return load(Path(folder))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the tokenizer from {folder}: {str(exc).splitlines()[0]}",
                              "save the tokenizer with the checkpoint") from None


def _towers(model) -> tuple:
    """torch modules for the two towers (positional inputs, one output each)."""
    import torch

    class AudioTower(torch.nn.Module):
        def __init__(self, clap):
            super().__init__()
            self.clap = clap

        def forward(self, input_features):
            return self.clap.get_audio_features(input_features=input_features).pooler_output

    class TextTower(torch.nn.Module):
        def __init__(self, clap):
            super().__init__()
            self.clap = clap

        def forward(self, input_ids, attention_mask):
            return self.clap.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    return AudioTower(model).eval(), TextTower(model).eval()


class ClapAdapter(Adapter):
    family = "clap"
    description = "CLAP (ClapModel): audio + text towers, zero-shot audio classification"

    def __init__(self, source: Path, *, allow_pickle: bool = False, options: dict | None = None):
        super().__init__(source, allow_pickle=allow_pickle, options=options)
        self._model = None
        self._components: dict[str, Component] | None = None
        self._features = None
        self._tokenizer = None

    @classmethod
    def detect(cls, source: Path, config: dict | None) -> bool:
        config = config or {}
        return config.get("model_type") == "clap" or "ClapModel" in (config.get("architectures") or [])

    # ---- loading ------------------------------------------------------------------------
    def torch_model(self):
        if self._model is None:
            from transformers import ClapModel

            model = from_pretrained(ClapModel, self.source, self.allow_pickle)
            if model.config.audio_config.enable_fusion:
                raise UnsupportedError(f"{self.source} is a fused CLAP checkpoint (enable_fusion=True)",
                                       "use an unfused checkpoint such as clap-htsat-unfused")
            self._model = model
        return self._model

    def _config(self) -> dict:
        from mmdeploy.models import read_config

        return read_config(self.source) if (self.source / "config.json").is_file() else {}

    @property
    def features(self):
        if self._features is None:
            from mmdeploy.models.audio import clap_features_for

            self._features = clap_features_for(self.source, self.processor_dir(), self._config(), self.provenance)
        return self._features

    @property
    def tokenizer(self):
        """The tokenizer, or None when neither the checkpoint nor --processor DIR has one."""
        if self._tokenizer is None:
            from mmdeploy.models.preprocess import tokenizer_for

            self._tokenizer = tokenizer_for(
                self.source, self.processor_dir(), self.provenance,
                without="zero-shot task check skipped (no prompts), text verification and calibration from "
                        "token ids drawn from the vocabulary") or False
        return self._tokenizer or None

    def resolve_preprocessing(self):
        self.features, self.tokenizer  # noqa: B018 - loads or derives both, recording where from
        return self.provenance

    def text_length(self) -> int:
        if "text_length" in self.bundle_metadata:
            return int(self.bundle_metadata["text_length"])
        limit = self.tokenizer.model_max_length if self.tokenizer is not None else TEXT_LENGTH_CAP
        if self._model is not None:
            limit = min(limit, self._model.config.text_config.max_position_embeddings - 2)
        return int(min(limit, TEXT_LENGTH_CAP))

    def tokenize(self, texts: list[str], seed: int = 0) -> dict[str, np.ndarray]:
        """Token ids for texts; without a tokenizer, ids drawn from the vocabulary (one row per text)."""
        if self.tokenizer is None:
            from mmdeploy.models.preprocess import random_token_ids

            text = (self._config().get("text_config") or {}) if self._model is None else \
                self._model.config.text_config.to_dict()
            return random_token_ids(int(text.get("vocab_size", 1000)), len(texts), self.text_length(), seed,
                                    (text.get("bos_token_id", 0), text.get("eos_token_id", 2)))
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.text_length(), return_tensors="np")
        return {"input_ids": enc["input_ids"].astype(np.int64),
                "attention_mask": enc["attention_mask"].astype(np.int64)}

    def audio_features(self, clips: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"input_features": self.features(clips)}

    # ---- components ---------------------------------------------------------------------
    def components(self) -> dict[str, Component]:
        if self._components is None:
            from mmdeploy.data import synthetic_audio as audio_data

            audio_tower, text_tower = _towers(self.torch_model())
            rate = self.features.sampling_rate

            def audio_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
                rng = np.random.default_rng(seed)
                labels = rng.integers(0, len(audio_data.CLASS_NAMES), batch)
                return self.audio_features([audio_data.synthesize(int(y), rng, rate) for y in labels])

            def text_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
                prompts = audio_data.class_prompts()
                start = seed % len(prompts)
                return self.tokenize([prompts[(start + i) % len(prompts)] for i in range(batch)], seed)

            self._check_audio_size(audio_inputs(1, 0)["input_features"].shape)
            self._components = {
                "audio": Component("audio", audio_tower, ["input_features"], ["audio_embeds"],
                                   {"input_features": {0: "batch"}, "audio_embeds": {0: "batch"}},
                                   audio_inputs, modality="audio"),
                "text": Component("text", text_tower, ["input_ids", "attention_mask"], ["text_embeds"],
                                  {"input_ids": {0: "batch", 1: "sequence"},
                                   "attention_mask": {0: "batch", 1: "sequence"},
                                   "text_embeds": {0: "batch"}},
                                  text_inputs, modality="text"),
            }
        return self._components

    def _check_audio_size(self, shape) -> None:
        """The audio tower's image must hold the features (HTSAT's ``reshape_mel2img``): one line
        naming ``audio_config.spec_size`` where it does not (the export would fail deep inside)."""
        from mmdeploy.errors import InputError

        audio = self.torch_model().config.audio_config
        spec, mels = int(audio.spec_size), int(audio.num_mel_bins)
        frames, bins = int(shape[-2]), int(shape[-1])
        ratio = spec // mels
        if ratio and frames <= spec * ratio and bins <= spec // ratio:
            return
        fits = next((s for s in range(mels, 8 * (frames + mels)) if s // mels
                     and frames <= s * (s // mels) and bins <= s // (s // mels)), None)
        raise InputError(f"{self.source / 'config.json'}: audio_config.spec_size {spec} does not fit the "
                         f"features ({frames} frames x {bins} mel bins, num_mel_bins {mels})",
                         (f"a spec_size of at least {fits} holds them, " if fits else "") +
                         "or make the feature extractor's clips shorter (max_length_s)")

    # ---- bundle -------------------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        model = self.torch_model()
        return {
            "head": {"logit_scale_audio": float(math.exp(model.logit_scale_a.item())),
                     "logit_scale_text": float(math.exp(model.logit_scale_t.item()))},
            "task": "zero-shot-audio-classification",
            "sampling_rate": self.features.sampling_rate,
            "feature_shape": list(self.features([np.zeros(16, np.float32)]).shape[1:]),
            "text_length": self.text_length(),
            "options": self.options,
        }

    def preprocess_files(self) -> list[Path]:
        from mmdeploy.models.preprocess import derived_files, preprocess_files_from

        self.resolve_preprocessing()
        # config.json too: what the config determines (vocabulary size...) is needed without weights
        config = [self.source / "config.json"] if (self.source / "config.json").is_file() else []
        return config + preprocess_files_from(self.source, self.processor_dir()) + derived_files(self.provenance)

    # ---- data ---------------------------------------------------------------------------
    def calibration_feeds(self, component: str, path: Path | None = None,
                          limit: int | None = None) -> list[dict[str, np.ndarray]]:
        from mmdeploy.data import synthetic_audio as audio_data
        from mmdeploy.data.calib import audio_of, images_of
        from mmdeploy.data.media import skip_record, skipped_note

        if component == "audio":
            if path is None:
                clips, _ = audio_data.make_split("calib", limit, rate=self.features.sampling_rate)
                return [self.audio_features([c]) for c in clips]
            path = Path(path)
            if not path.exists():
                raise CalibrationError(f"calibration data {path} does not exist", "pass an audio folder")
            files = audio_of(path)  # a folder (sub-folders too), a clip, or an audio,caption file
            if not files:
                what = "images, not audio" if images_of(path) else "no audio files"
                raise CalibrationError(f"{path} holds {what}",
                                       "the audio component calibrates on a folder of .wav files")
            feeds, skipped = [], []
            for file in files:  # an unreadable clip is skipped and counted, not the whole set
                if limit and len(feeds) >= limit:
                    break
                try:
                    feeds.append({"input_features": self.features.files([file])})
                except InputError as exc:
                    skipped.append(skip_record(file, exc))
            if not feeds:
                raise CalibrationError(f"{path}: no audio clip in it can be decoded ({skipped_note(skipped)})",
                                       "pass PCM .wav files (or install soundfile for other formats)")
            return feeds
        if component == "text":
            texts = audio_data.class_prompts() + [f"a {name}" for name in audio_data.CLASS_NAMES]
            if path is not None:
                texts = read_captions(Path(path))
                if self.tokenizer is None:  # the user gave text: it must be tokenized, not replaced
                    from mmdeploy.models.preprocess import tokenizer_for

                    tokenizer_for(self.source, self.processor_dir(), required=True)
            texts = texts[:limit] if limit else texts
            return [self.tokenize([t], seed) for seed, t in enumerate(texts)]
        raise CalibrationError(f"clap has no component {component!r}", "components: audio, text")

    # ---- task ---------------------------------------------------------------------------
    def task_components(self) -> tuple[str, ...]:
        return ("audio", "text") if self.tokenizer is not None else ()  # no prompts without a tokenizer

    def evaluate(self, runners: dict, limit: int | None = None) -> TaskResult:
        """Zero-shot top-1 on the synthetic ``eval`` split, prompts ``the sound of <class>``."""
        from mmdeploy.data import synthetic_audio as audio_data

        missing = [c for c in self.task_components() if c not in runners]
        if missing:
            raise InputError(f"clap evaluation needs runners for {', '.join(missing)}")
        text = runners["text"].run(self.tokenize(audio_data.class_prompts()))["text_embeds"]
        clips, labels = audio_data.make_split("eval", limit, rate=self.features.sampling_rate)
        audio = np.concatenate([
            runners["audio"].run(self.audio_features(clips[i:i + EVAL_BATCH]))["audio_embeds"]
            for i in range(0, len(clips), EVAL_BATCH)])
        norm = lambda x: x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)  # noqa: E731
        scale = (self.bundle_metadata.get("head") or self.metadata()["head"])["logit_scale_audio"]
        logits = scale * norm(audio.astype(np.float64)) @ norm(text.astype(np.float64)).T  # logits_per_audio
        predictions = [int(p) for p in logits.argmax(axis=1)]
        correct = sum(p == y for p, y in zip(predictions, labels))
        return TaskResult("zero-shot-top1", correct / len(labels), len(labels), predictions,
                          {"classes": len(audio_data.CLASS_NAMES), "dataset": "synthetic-audio/eval",
                           "logits": logits})
