"""A generic Hugging Face encoder (BERT-family text encoders, ViT-family vision encoders).

One component, ``encoder``: token or patch-level hidden states (``last_hidden_state``), plus
``pooler_output`` when the model has a pooler.  A sentence-transformers folder (``modules.json``)
exports its whole pipeline instead (:mod:`mmdeploy.models.sentence_pipeline`): outputs
``token_embeddings`` and ``sentence_embedding``, the embedding ``SentenceTransformer.encode``
returns.  No task metric: quantization is judged by the embedding users consume.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.data.calib import calibration_images
from mmdeploy.data.media import modality_of
from mmdeploy.errors import CalibrationError
from mmdeploy.models import preprocess as pp
from mmdeploy.models.base import Adapter, Component

# families with their own adapter, or that are not encoders
_NOT_HERE = {"clip", "siglip", "clap", "blip", "gpt2", "llama", "t5", "bart", "whisper"}
# ViT-family image processors: a square resize to the config's image size, mean = std = 0.5
IMAGE_DEFAULTS = {"class": "ViTImageProcessor", "mean": pp.IMAGENET_STANDARD_MEAN, "std": pp.IMAGENET_STANDARD_STD,
                  "size": "height_width", "name": "ImageNet standard (mean = std = 0.5)"}


def default_sentences() -> list[str]:
    """The default text calibration set: varied real English sentences shipped with the package."""
    from mmdeploy.data.sentences import sentences

    return sentences()


class HFEncoderAdapter(Adapter):
    family = "hf-encoder"
    description = "any Hugging Face AutoModel text or vision encoder (BERT, ViT, ...)"

    def __init__(self, source: Path, *, allow_pickle: bool = False, options: dict | None = None):
        super().__init__(source, allow_pickle=allow_pickle, options=options)
        self._model = None
        self._config: dict | None = None
        self._pipeline: dict | None | bool = False  # False: not read yet

    @classmethod
    def detect(cls, source: Path, config: dict | None) -> bool:
        config = config or {}
        kind = config.get("model_type")
        if not kind or kind in _NOT_HERE or config.get("is_encoder_decoder"):
            return False
        try:
            from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
        except ImportError:  # pragma: no cover
            return False
        return kind in MODEL_MAPPING_NAMES

    @property
    def config(self) -> dict:
        if self._config is None:
            from mmdeploy.models import read_config

            self._config = self.bundle_metadata.get("config") or read_config(self.source)
        return self._config

    @property
    def pipeline(self) -> dict | None:
        """The sentence-transformers pipeline (``modules.json``), or None for a plain encoder."""
        if self._pipeline is False:
            from mmdeploy.models.sentence_pipeline import read_pipeline

            self._pipeline = self.bundle_metadata.get("sentence_transformers") if self.bundle_metadata else (
                read_pipeline(self.source) if self.source.is_dir() and self.modality == "text" else None)
        return self._pipeline

    @property
    def max_length(self) -> int | None:
        """The token length sentence-transformers truncates to (``max_seq_length``)."""
        return (self.pipeline or {}).get("max_seq_length")

    @property
    def modality(self) -> str:
        return "image" if "image_size" in self.config or "num_channels" in self.config else "text"

    def torch_model(self):
        if self._model is None:
            from transformers import AutoModel

            from mmdeploy.models.loading import load_hf_model

            pp.quiet_transformers()
            self._model = load_hf_model(AutoModel, self.source, self.allow_pickle,
                                        attn_implementation=self.options.get("attn_implementation", "eager"))
        return self._model

    def components(self) -> dict[str, Component]:
        import torch

        model = self.torch_model()
        if self.pipeline:
            from mmdeploy.models.sentence_pipeline import build_module

            inputs = ["input_ids", "attention_mask"]
            outputs = ["token_embeddings", "sentence_embedding"]
            axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
            axes.update(token_embeddings={0: "batch", 1: "sequence"}, sentence_embedding={0: "batch"})
            module = build_module(model, self.pipeline, self.source, self.allow_pickle)
            return {"encoder": Component(name="encoder", module=module, input_names=inputs, output_names=outputs,
                                         dynamic_axes=axes, make_inputs=self._random_inputs, modality="text")}
        has_pooler = getattr(model, "pooler", None) is not None
        outputs = ["last_hidden_state"] + (["pooler_output"] if has_pooler else [])

        class Encoder(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                names = ["pixel_values"] if image else ["input_ids", "attention_mask"]
                out = self.model(**dict(zip(names, args)))
                return tuple(getattr(out, n) for n in outputs)

        image = self.modality == "image"
        if image:
            inputs, axes = ["pixel_values"], {"pixel_values": {0: "batch"}}
            seq_axes = {0: "batch"}  # patch count is fixed by the image size
        else:
            inputs = ["input_ids", "attention_mask"]
            axes = {n: {0: "batch", 1: "sequence"} for n in inputs}
            seq_axes = {0: "batch", 1: "sequence"}
        axes["last_hidden_state"] = seq_axes
        if has_pooler:
            axes["pooler_output"] = {0: "batch"}
        return {"encoder": Component(name="encoder", module=Encoder().eval(), input_names=inputs,
                                     output_names=outputs, dynamic_axes=axes, make_inputs=self._random_inputs,
                                     modality=self.modality)}

    def metadata(self) -> dict[str, Any]:
        if self.bundle_metadata:
            return dict(self.bundle_metadata)
        keep = ("model_type", "image_size", "num_channels", "vocab_size", "max_position_embeddings")
        meta = {"config": {k: self.config[k] for k in keep if k in self.config},
                "modality": self.modality, "task": None}
        if self.pipeline:
            meta["sentence_transformers"] = self.pipeline
        return meta

    def library_parity(self, runners: dict) -> dict | None:
        """A sentence-transformers folder: ``sentence_embedding`` against ``SentenceTransformer.encode``
        on the default real sentences (convert records it in the bundle's parity)."""
        if not self.pipeline or "encoder" not in runners:
            return None
        from mmdeploy.models.sentence_pipeline import library_parity

        tokenizer = pp.tokenizer_for(self.source, self.processor_dir(), self.provenance)
        if tokenizer is None:
            return {"skipped": "no tokenizer in the checkpoint (pass --processor DIR)"}
        return library_parity(self.source, runners["encoder"], tokenizer, default_sentences()[:32], self.max_length)

    def preprocess_files(self) -> list[Path]:
        self.resolve_preprocessing()
        config = [self.source / "config.json"] if (self.source / "config.json").is_file() else []
        return config + pp.preprocess_files_from(self.source, self.processor_dir()) + pp.derived_files(self.provenance)

    def _random_inputs(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        if self.modality == "image":
            size = int(self.config.get("image_size", 224))
            channels = int(self.config.get("num_channels", 3))
            return {"pixel_values": rng.standard_normal((batch, channels, size, size)).astype(np.float32)}
        length = int(rng.integers(4, 12))
        vocab = int(self.config.get("vocab_size", 1000))
        ids = rng.integers(min(5, vocab - 1), vocab, size=(batch, length)).astype(np.int64)
        mask = np.ones_like(ids)
        mask[1:, length - 2:] = 0 if batch > 1 else 1  # some padding when batched
        return {"input_ids": ids, "attention_mask": mask}

    def calibration_feeds(self, component: str, path: Path | None = None,
                          limit: int | None = None) -> list[dict[str, np.ndarray]]:
        limit = limit or 64
        if self.modality == "text":
            if path is not None and (Path(path).is_dir() or modality_of(path)):
                raise CalibrationError(f"--calib {path}: this text encoder needs captions",
                                       "pass a .txt file with one sentence per line")
            sentences = pp.read_captions(Path(path)) if path is not None else default_sentences()
            tokenizer = pp.tokenizer_for(self.source, self.processor_dir(), self.provenance,
                                         required=path is not None)
            if tokenizer is None:  # no tokenizer: token ids drawn from the vocabulary, labelled so
                vocab = int(self.config.get("vocab_size", 1000))
                length = min(16, int(self.config.get("max_position_embeddings", 16)))
                return [pp.random_token_ids(vocab, 1, length, seed) for seed in range(len(sentences[:limit]))]
            # one padded length for the whole set (the mask marks the padding), so that samples
            # batch together in calibration and in the accuracy check
            enc = tokenizer(list(sentences[:limit]), return_tensors="np", truncation=True, padding=True,
                            max_length=self.max_length)
            ids, mask = (np.asarray(enc[n], dtype=np.int64) for n in ("input_ids", "attention_mask"))
            return [{"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]} for i in range(len(ids))]
        if path is None:
            images = [img for _, img in pp.skimage_photos()]
        else:
            images = calibration_images(path, limit).images  # folder or ImageFolder; unreadable skipped
        processor = self._image_processor()
        return [{"pixel_values": np.asarray(processor(images=[img], return_tensors="np")["pixel_values"],
                                            dtype=np.float32)} for img in images[:limit]]

    def _image_processor(self):
        return pp.image_processor_for(self.source, self.processor_dir(), self.config, IMAGE_DEFAULTS,
                                      self.provenance)

    def resolve_preprocessing(self):
        if self.modality == "image":
            self._image_processor()
        else:
            pp.tokenizer_for(self.source, self.processor_dir(), self.provenance)
        return self.provenance
