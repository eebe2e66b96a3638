"""CLIP: a vision tower and a text tower, plus a head (logit scale) that joins them.

Components:
* ``vision``: ``pixel_values`` [batch, 3, H, W] → ``image_embeds`` [batch, dim] (projected);
* ``text``: ``input_ids`` [batch, sequence] (+ ``attention_mask``) → ``text_embeds`` [batch, dim].

``logits_per_image = logit_scale * normalize(image_embeds) @ normalize(text_embeds).T (+ bias)``
is reproduced from the towers with :func:`zero_shot_logits` and the head recorded in the bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.errors import CalibrationError
from mmdeploy.models.base import Adapter, Component, TaskResult
from mmdeploy.models import preprocess as pp

CAPTION_WORDS = ["cat", "dog", "car", "tree", "house", "person", "bird", "boat", "flower", "plane",
                 "red", "green", "blue", "small", "large", "circle", "square", "photo", "drawing"]


def zero_shot_logits(image_emb, text_emb, logit_scale, logit_bias=None, *,
                     scale_is_log: bool = True) -> np.ndarray:
    """logits_per_image, shape (n_images, n_texts), as CLIPModel/SiglipModel compute it.

    Both embeddings are L2-normalised here.  ``logit_scale`` is the checkpoint's stored (log)
    parameter unless ``scale_is_log=False`` gives the multiplier itself (as bundles record it);
    ``logit_bias`` (SigLIP) is added after scaling.
    """
    img = np.asarray(image_emb, dtype=np.float64)
    txt = np.asarray(text_emb, dtype=np.float64)
    if img.ndim != 2 or txt.ndim != 2 or img.shape[1] != txt.shape[1]:
        raise ValueError(f"expected (n, d) and (m, d) embeddings, got {img.shape} and {txt.shape}")
    img = img / np.maximum(np.linalg.norm(img, axis=-1, keepdims=True), 1e-12)
    txt = txt / np.maximum(np.linalg.norm(txt, axis=-1, keepdims=True), 1e-12)
    scale = float(np.asarray(logit_scale, dtype=np.float64).reshape(-1)[0])
    if scale_is_log:
        scale = float(np.exp(scale))
    logits = scale * (img @ txt.T)
    if logit_bias is not None:
        logits = logits + float(np.asarray(logit_bias, dtype=np.float64).reshape(-1)[0])
    return logits.astype(np.float32)


def _first_output(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(outputs.values()))


class ClipAdapter(Adapter):
    family = "clip"
    description = "CLIP (CLIPModel): vision + text towers"
    model_class = "CLIPModel"
    image_processor_class = "CLIPImageProcessor"
    model_types = ("clip",)
    architectures = ("CLIPModel",)
    text_inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    pad_to_max_length = False

    def __init__(self, source: Path, *, allow_pickle: bool = False, options: dict | None = None):
        super().__init__(source, allow_pickle=allow_pickle, options=options)
        self._torch_model = None
        self._tokenizer = None
        self._processor = None

    @classmethod
    def detect(cls, source: Path, config: dict | None) -> bool:
        config = config or {}
        return config.get("model_type") in cls.model_types or bool(
            set(config.get("architectures") or []) & set(cls.architectures))

    # ---- torch ------------------------------------------------------------------------
    def torch_model(self):
        if self._torch_model is None:
            import transformers

            from mmdeploy.models.loading import load_hf_model

            pp.quiet_transformers()
            self._torch_model = load_hf_model(
                getattr(transformers, self.model_class), self.source, self.allow_pickle,
                attn_implementation=self.options.get("attn_implementation", "eager"))
        return self._torch_model

    def _towers(self):
        """(vision module, text module) each mapping inputs to projected embeddings."""
        import torch

        model = self.torch_model()

        class VisionTower(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.vision_model = model.vision_model
                self.visual_projection = model.visual_projection

            def forward(self, pixel_values):
                return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)

        class TextTower(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.text_model = model.text_model
                self.text_projection = model.text_projection

            def forward(self, input_ids, attention_mask=None):
                out = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
                return self.text_projection(out.pooler_output)

        return VisionTower().eval(), TextTower().eval()

    def components(self) -> dict[str, Component]:
        from mmdeploy.models.attention import fusable_attention

        vision, text = self._towers()
        text_axes = {name: {0: "batch", 1: "sequence"} for name in self.text_inputs}
        return {
            "vision": Component(
                name="vision", module=vision, input_names=["pixel_values"], output_names=["image_embeds"],
                dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                make_inputs=self._random_images, modality="image",
                # attention exported in the form ONNX Runtime's fusion recognizes (same outputs)
                export_context=lambda: fusable_attention(vision)),
            "text": Component(
                name="text", module=text, input_names=list(self.text_inputs), output_names=["text_embeds"],
                dynamic_axes={**text_axes, "text_embeds": {0: "batch"}},
                make_inputs=self._random_captions, modality="text",
                export_context=lambda: fusable_attention(text)),
        }

    def head(self) -> dict[str, Any]:
        model = self.torch_model()
        bias = getattr(model, "logit_bias", None)
        return {"logit_scale": float(model.logit_scale.exp().item()),
                "logit_bias": float(bias.item()) if bias is not None else None}

    # ---- what the bundle keeps --------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        if self.bundle_metadata:
            return dict(self.bundle_metadata)
        config = self.torch_model().config
        return {
            "head": self.head(),
            "image_size": int(config.vision_config.image_size),
            "text_max_length": int(config.text_config.max_position_embeddings),
            "task": {"name": "zero-shot-top1", "dataset": self.dataset()},
            # a pruned checkpoint's structure record (per-layer heads / channels), for lineage
            "pruning": getattr(config, "mmdeploy_pruning", None),
            "options": {k: v for k, v in self.options.items() if isinstance(v, (str, int, float, bool))},
        }

    def preprocess_files(self) -> list[Path]:
        names = ["config.json", "preprocessor_config.json", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.json", "merges.txt", "spiece.model",
                 "processor_config.json", "added_tokens.json"]
        return [self.source / n for n in names if (self.source / n).is_file()]

    # ---- preprocessing ------------------------------------------------------------------
    def dataset(self) -> str:
        """Which evaluation data the task uses: the demo's shapes, or real photos."""
        if "dataset" in self.options:
            return self.options["dataset"]
        meta_task = self.bundle_metadata.get("task", {})
        if meta_task.get("dataset"):
            return meta_task["dataset"]
        try:
            from mmdeploy.models import read_config

            config = read_config(self.source) if (self.source / "config.json").is_file() else {}
        except Exception:  # noqa: BLE001
            config = {}
        return config.get("mmdeploy_dataset", "skimage-photos")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = pp.load_tokenizer(self.source)
        return self._tokenizer

    @property
    def image_processor(self):
        if self._processor is None:
            self._processor = pp.load_image_processor(self.source, self.image_processor_class)
        return self._processor

    def image_size(self) -> int:
        if "image_size" in self.bundle_metadata:
            return int(self.bundle_metadata["image_size"])
        crop = getattr(self.image_processor, "crop_size", None) or getattr(self.image_processor, "size", None) or {}
        return int(crop.get("height") or crop.get("shortest_edge") or 224)

    def text_max_length(self) -> int:
        if "text_max_length" in self.bundle_metadata:
            return int(self.bundle_metadata["text_max_length"])
        if self._torch_model is not None:
            return int(self._torch_model.config.text_config.max_position_embeddings)
        from mmdeploy.models import read_config

        return int(read_config(self.source).get("text_config", {}).get("max_position_embeddings", 77))

    def image_feeds(self, images: list) -> dict[str, np.ndarray]:
        pixel = self.image_processor(images=images, return_tensors="np")["pixel_values"]
        return {"pixel_values": np.asarray(pixel, dtype=np.float32)}

    def text_feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        kwargs = dict(padding="max_length" if self.pad_to_max_length else True, truncation=True,
                      max_length=self.text_max_length(), return_tensors="np")
        encoded = self.tokenizer(list(texts), **kwargs)
        return {name: np.asarray(encoded[name], dtype=np.int64) for name in self.text_inputs}

    def _random_images(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        size = self.image_size()
        rng = np.random.default_rng(seed)
        return {"pixel_values": rng.standard_normal((batch, 3, size, size)).astype(np.float32)}

    def _random_captions(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        texts = ["a " + " ".join(rng.choice(CAPTION_WORDS, size=int(rng.integers(1, 6))))
                 for _ in range(batch)]
        return self.text_feeds(texts)

    # ---- data -----------------------------------------------------------------------------
    def task_data(self, limit: int | None = None) -> tuple[list, list[int], list[str]]:
        """(images, labels, class prompts) of the zero-shot evaluation set."""
        if self.dataset() == "demo-shapes":
            from mmdeploy.data import shapes as data

            images, labels = data.make_split("eval")
            prompts = data.class_prompts()
        else:
            photos = pp.skimage_photos()
            if not photos:
                return [], [], []
            names = [label for label, _ in photos]
            images, labels = [img for _, img in photos], list(range(len(photos)))
            prompts = [f"a photo of {name}" for name in names]
        if limit:
            images, labels = images[:limit], labels[:limit]
        return images, labels, prompts

    def verification_feeds(self, component: str) -> list[dict[str, np.ndarray]]:
        if component == "vision":
            images, _, _ = self.task_data(limit=4)
            feeds = [self._random_images(2, 7)]
            if images:
                feeds = [self.image_feeds(images[:1]), self.image_feeds(images[1:4] or images[:1])] + feeds
            return feeds
        if component == "text":
            _, _, prompts = self.task_data(limit=1)
            prompts = prompts or ["a photo of a cat", "a dog", "a red car on a road"]
            return [self.text_feeds(prompts[:1]), self.text_feeds(prompts[:3]), self._random_captions(2, 5)]
        return super().verification_feeds(component)

    def calibration_feeds(self, component: str, path: Path | None = None,
                          limit: int | None = None) -> list[dict[str, np.ndarray]]:
        limit = limit or 64
        if component == "vision":
            if path is None:
                images, _, _ = self._calibration_images()
            else:
                path = Path(path)
                if not path.is_dir():
                    raise CalibrationError(f"--calib {path}: the vision component needs a folder of images",
                                           "pass a directory of PNG/JPEG files")
                files = pp.list_images(path)
                if not files:
                    raise CalibrationError(f"--calib {path} holds no images",
                                           "add PNG/JPEG files (the vision component needs images)")
                images = [pp.open_image(f) for f in files[:limit]]
            return [self.image_feeds([img]) for img in images[:limit]]
        if component == "text":
            if path is None:
                _, _, prompts = self.task_data()
                captions = prompts + [f"a photo of a {w}" for w in CAPTION_WORDS]
            else:
                path = Path(path)
                if path.is_dir() or path.suffix.lower() in pp.IMAGE_SUFFIXES:
                    raise CalibrationError(f"--calib {path}: the text component needs captions",
                                           "pass a .txt file with one caption per line")
                captions = pp.read_captions(path)
            return [self.text_feeds([c]) for c in captions[:limit]]
        raise CalibrationError(f"{self.family} has no component {component!r}")

    def _calibration_images(self):
        if self.dataset() == "demo-shapes":
            from mmdeploy.data import shapes as data

            images, labels = data.make_split("calib")
            return images, labels, data.class_prompts()
        return self.task_data()

    # ---- task -----------------------------------------------------------------------------
    def task_components(self) -> tuple[str, ...]:
        return ("vision", "text")

    def evaluate(self, runners: dict, limit: int | None = None, batch: int = 32) -> TaskResult | None:
        images, labels, prompts = self.task_data(limit)
        if not images:
            return None
        image_embeds = np.concatenate([
            _first_output(runners["vision"].run(self.image_feeds(images[i:i + batch])))
            for i in range(0, len(images), batch)])
        text_embeds = _first_output(runners["text"].run(self.text_feeds(prompts)))
        head = self.metadata()["head"] if self.bundle_metadata else self.head()
        logits = zero_shot_logits(image_embeds, text_embeds, head["logit_scale"], head.get("logit_bias"),
                                  scale_is_log=False)
        predictions = logits.argmax(axis=1).tolist()
        top1 = float(np.mean(np.asarray(predictions) == np.asarray(labels)))
        return TaskResult(name="zero-shot-top1", value=top1, n=len(labels), predictions=predictions,
                          extra={"dataset": self.dataset(), "classes": len(prompts), "logits": logits})
