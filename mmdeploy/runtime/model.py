"""A bundle opened for inference: what the model is for, with the bundle's own preprocessing.

    model = mmdeploy.runtime.load("out/clip")           # the backend from the bundle, or chosen
    model.embed_images(["cat.jpg"]); model.embed_texts(["a cat"])
    model.classify(["cat.jpg"], ["cat", "dog"])         # zero-shot (a zeroshot bundle: its labels)
    model.caption("cat.jpg"); model.answer("cat.jpg", "what is it?")   # BLIP

Imports numpy, PIL, tokenizers and the one inference runtime the chosen artifacts need; never
torch, transformers or onnx.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np

from mmdeploy.errors import BackendUnavailable, InputError, UnsupportedError

# artifact format -> (modules of which one must import, what to install)
RUNTIME_PACKAGES = {
    "onnx": (("onnxruntime",), "pip install onnxruntime"),
    "openvino": (("openvino",), "pip install openvino"),
    "tflite": (("ai_edge_litert", "tflite_runtime"), "pip install ai-edge-litert (or tflite-runtime)"),
    "tensorrt": (("tensorrt",), "pip install tensorrt on a machine with an NVIDIA GPU"),
    "tensorrt-bundle": (("tensorrt",), "pip install tensorrt on a machine with an NVIDIA GPU"),
}
# backend names (and aliases) -> artifact formats
BACKEND_FORMATS = {"onnxruntime": ("onnx",), "ort": ("onnx",), "onnx": ("onnx",), "openvino": ("openvino",),
                   "ov": ("openvino",), "tflite": ("tflite",), "litert": ("tflite",),
                   "tensorrt": ("tensorrt", "tensorrt-bundle"), "trt": ("tensorrt", "tensorrt-bundle")}
TEMPLATE = "a photo of a {}."
TEXT_COMPONENTS = ("text", "encoder")


def runtime_installed(fmt: str) -> bool:
    modules, _ = RUNTIME_PACKAGES.get(fmt, ((), ""))
    for module in modules:
        try:
            if importlib.util.find_spec(module) is not None:
                return True
        except (ImportError, ValueError):  # a broken or blocked package counts as absent
            continue
    return False


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class Model:
    """A model bundle (convert, quantize, compile, bake or zeroshot output) ready to run.

    ``backend``: onnxruntime, openvino, tflite, tensorrt (default: per component the first of
    the bundle's artifacts whose runtime is installed); ``precision``: fp32, fp16, int8 (default:
    any); ``threads``: inference threads per network.
    """

    def __init__(self, path: str | Path, backend: str | None = None, threads: int | None = None,
                 precision: str | None = None):
        from mmdeploy.artifact import read_manifest

        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        if self.manifest.kind != "model":
            raise InputError(f"{self.path} is one component, not a model bundle",
                             "pass the directory `mmdeploy convert` (or quantize, compile, zeroshot) wrote")
        self.family = self.manifest.family
        self.metadata = dict(self.manifest.metadata or {})
        self.threads = threads
        formats = None
        if backend is not None:
            formats = BACKEND_FORMATS.get(backend.strip().lower())
            if formats is None:
                raise InputError(f"unknown backend {backend!r}",
                                 "use one of onnxruntime, openvino, tflite, tensorrt")
        self.refs = {}
        for ref in self.manifest.artifacts:
            if (formats is None or ref.format in formats) and (precision is None or ref.precision == precision):
                self.refs.setdefault(ref.component, []).append(ref)
        if not self.refs:
            wanted = " ".join(x for x in (backend, precision) if x)
            raise InputError(f"{self.path} lacks a {wanted + ' ' if wanted else ''}artifact",
                             "compile the bundle for it (`mmdeploy compile`) or choose another backend")
        self._runners: dict = {}
        self._specs: dict = {}
        self._tokenizer = None
        self._images = None
        zs = self.path / "zero_shot.json"
        self.zero_shot = json.loads(zs.read_text(encoding="utf-8")) if zs.is_file() else None

    # ---- networks -----------------------------------------------------------------------
    @property
    def components(self) -> list[str]:
        return list(self.refs)

    def has(self, component: str) -> bool:
        return component in self.refs or component in self._runners

    def spec(self, component: str):
        """The component artifact's manifest (inputs, outputs, metadata)."""
        from mmdeploy.artifact import read_manifest

        if component not in self._specs:
            self._specs[component] = read_manifest(self.path / self._ref(component).path)
        return self._specs[component]

    def _ref(self, component: str):
        refs = self.refs.get(component)
        if not refs:
            raise UnsupportedError(f"{self.path} has no {component} network (components: {', '.join(self.refs)})",
                                   "pass a bundle of a model that has one")
        return next((r for r in refs if runtime_installed(r.format)), refs[0])

    def runner(self, component: str):
        """The component's Runner (loaded once): ``run(feeds) -> outputs`` by name."""
        if component not in self._runners:
            from mmdeploy.backends import load_runner

            ref = self._ref(component)
            if not runtime_installed(ref.format):
                _, hint = RUNTIME_PACKAGES.get(ref.format, ((), None))
                raise BackendUnavailable(f"{self.path / ref.path} is a {ref.format} artifact and its runtime is "
                                         "not installed here", hint)
            options = {"threads": self.threads} if self.threads else {}
            self._runners[component] = load_runner(self.path / ref.path, **options)
        return self._runners[component]

    def set_runner(self, component: str, runner) -> None:
        """Run ``component`` on ``runner`` instead (a remote server's); None drops it."""
        if runner is None:
            self.refs.pop(component, None)
            self._runners.pop(component, None)
        else:
            self._runners[component] = runner

    @property
    def backends(self) -> list[str]:
        return sorted({r.name for r in self._runners.values()})

    # ---- preprocessing ------------------------------------------------------------------
    @property
    def tokenizer(self):
        from mmdeploy.runtime.text import TextTokenizer

        if self._tokenizer is None:
            padding = (self.metadata.get("dual_encoder") or {}).get("padding")
            padding = padding or ("max_length" if self.family == "clap" else "longest")  # as the adapters tokenize
            length = self.metadata.get("text_max_length") or self.metadata.get("text_length")
            self._tokenizer = TextTokenizer(self.path / "preprocess", length, padding)
        return self._tokenizer

    @property
    def image_preprocessor(self):
        from mmdeploy.runtime.images import ImagePreprocessor

        if self._images is None:
            self._images = ImagePreprocessor.from_dir(self.path / "preprocess")
        return self._images

    def pixel_values(self, images: list) -> np.ndarray:
        """float32 [N, 3, h, w]: the bundle's image processor on paths, PIL images or uint8 arrays."""
        return self.image_preprocessor(_as_list(images))

    # ---- embeddings ---------------------------------------------------------------------
    def embed_images(self, images, normalize: bool = True) -> np.ndarray:
        """Image embeddings [N, dim] (L2-normalised unless ``normalize=False``)."""
        from mmdeploy.runtime.images import to_rgb_array

        images = _as_list(images)
        runner, spec = self.runner("vision"), self.spec("vision")
        if spec.inputs and spec.inputs[0].name == "image":  # preprocessing baked into the graph
            rows = [_first(runner.run({"image": to_rgb_array(image)})).reshape(1, -1) for image in images]
            out = np.concatenate(rows)
        else:
            out = _first(runner.run({spec.inputs[0].name: self.pixel_values(images)}))
        if out.ndim != 2:
            raise UnsupportedError(f"{self.path}: the vision network gives {list(out.shape)} (not one embedding "
                                   "per image)", "embed images with an image-text model bundle (CLIP, SigLIP, ...)")
        return _normalize(out) if normalize else np.asarray(out, np.float32)

    def embed_texts(self, texts, normalize: bool | None = None) -> np.ndarray:
        """Text embeddings [N, dim]: a dual encoder's text tower, a sentence-transformers bundle's
        ``sentence_embedding`` (as the graph gives it, the model's own Normalize included), or the
        masked mean of a plain encoder's ``last_hidden_state``.  L2-normalised unless
        ``normalize=False`` (``None``: all but ``sentence_embedding``)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        component = next((c for c in TEXT_COMPONENTS if self.has(c)), None) or next(
            (c for c in self.refs if any(t.name == "input_ids" for t in self.spec(c).inputs)), None)
        if component is None:
            if self.zero_shot is not None:
                raise UnsupportedError(f"{self.path} is a zero-shot bundle: it holds its labels' embeddings, "
                                       "not the text network", "embed texts with the bundle it was made from")
            raise UnsupportedError(f"{self.path} has no text network (components: {', '.join(self.refs)})",
                                   "pass a bundle with a text tower or a text encoder")
        runner, spec = self.runner(component), self.spec(component)
        names = [t.name for t in spec.inputs]
        if "input_ids" not in names:
            raise UnsupportedError(f"{self.path}: the {component} network takes {', '.join(names)}, not text",
                                   "pass a text model bundle")
        feeds = self.tokenizer(texts)
        outputs = runner.run({n: feeds[n] for n in names if n in feeds})
        if "sentence_embedding" in outputs:
            out, default = outputs["sentence_embedding"], False
        elif "text_embeds" in outputs:
            out, default = outputs["text_embeds"], True
        elif "last_hidden_state" in outputs:
            hidden = np.asarray(outputs["last_hidden_state"], np.float32)
            mask = feeds["attention_mask"][:, :hidden.shape[1], None].astype(np.float32)
            out, default = (hidden * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9), True
        else:
            out, default = _first(outputs), True
        normalize = default if normalize is None else normalize
        return _normalize(out) if normalize else np.asarray(out, np.float32)

    def embed_audio(self, clips, normalize: bool = True) -> np.ndarray:
        """Audio embeddings [N, dim] of a CLAP bundle: clips are file paths or float arrays at
        the model's sampling rate (log-mel features computed as the bundle's feature extractor)."""
        from mmdeploy.runtime.audio import AudioFeatures

        runner = self.runner("audio")
        features = AudioFeatures.from_dir(self.path / "preprocess")
        out = _first(runner.run({"input_features": features(_as_list(clips))}))
        return _normalize(out) if normalize else np.asarray(out, np.float32)

    # ---- zero-shot ----------------------------------------------------------------------
    def _head(self) -> tuple[float, float | None]:
        head = self.metadata.get("head") or {}
        if self.zero_shot is not None:
            return float(self.zero_shot.get("logit_scale") or 100.0), self.zero_shot.get("logit_bias")
        scale = head.get("logit_scale") or self.metadata.get("logit_scale") or 100.0
        return float(scale), head.get("logit_bias")

    def label_embeddings(self, labels: list[str] | None = None, template: str | None = None):
        """(labels, L2-normalised text embeddings [labels, dim]): a zeroshot bundle's cached ones
        by default, else the prompts ``template.format(label)`` through the text network."""
        if self.zero_shot is not None and (labels is None or list(labels) == list(self.zero_shot["labels"])):
            return list(self.zero_shot["labels"]), _normalize(np.load(self.path / "text_embeds.npy"))
        if labels is None:
            raise InputError("no labels to classify into", 'pass labels, e.g. classify(images, ["cat", "dog"])')
        labels = [str(label) for label in labels]
        if len(labels) < 2:
            raise InputError(f"zero-shot classification needs at least two labels, got {len(labels)}",
                             "pass two labels or more")
        template = template or (self.zero_shot or {}).get("template") or TEMPLATE
        return labels, self.embed_texts([template.format(label) for label in labels], normalize=True)

    def classify(self, images, labels: list[str] | None = None, template: str | None = None,
                 top: int | None = None) -> list[dict]:
        """Zero-shot: per image ``{"label", "probability", "top": [{"label", "probability"}, ...]}``
        (``top`` most probable, all by default), with the model's logit scale (and SigLIP's bias:
        then each probability is the label's own sigmoid, as SigLIP is trained)."""
        labels, text = self.label_embeddings(labels, template)
        image = self.embed_images(images)
        scale, bias = self._head()
        logits = scale * image.astype(np.float64) @ text.astype(np.float64).T
        if bias is not None:
            probs = 1.0 / (1.0 + np.exp(-(logits + float(bias))))
        else:
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
        results = []
        for row in probs:
            order = np.argsort(-row, kind="stable")[:top or len(labels)]
            results.append({"label": labels[order[0]], "probability": float(row[order[0]]),
                            "top": [{"label": labels[i], "probability": float(row[i])} for i in order]})
        return results

    # ---- BLIP ---------------------------------------------------------------------------
    def _settings(self):
        from mmdeploy.runtime.generate import GenerationSettings

        if not self.metadata.get("generation"):
            raise UnsupportedError(f"{self.path} is not a captioning / question-answering bundle "
                                   f"(family {self.family!r})", "pass a BLIP bundle from `mmdeploy convert`")
        return GenerationSettings.from_metadata(self.metadata)

    def caption_tokens(self, images, max_length: int | None = None) -> list[list[int]]:
        """Greedy caption token ids per image (trimmed after eos), as ``generate()``."""
        from mmdeploy.runtime.generate import caption_tokens, trim

        settings = self._settings()
        runners = {c: self.runner(c) for c in ("vision", "text_decoder", "text_decoder_with_past") if self.has(c)}
        tokens = caption_tokens(self.pixel_values(images), runners, settings, max_length)
        return [trim(row, settings) for row in tokens.tolist()]

    def caption(self, image, max_length: int | None = None) -> str:
        """The greedy caption of one image (BLIP), decoded as ``decode(skip_special_tokens=True)``."""
        return self.tokenizer.decode(self.caption_tokens([image], max_length)[0]).strip()

    def question_feeds(self, question: str) -> dict[str, np.ndarray]:
        if not isinstance(question, str) or not question.strip():
            raise InputError("the question is empty", 'pass a question, e.g. "what color is the shape?"')
        ids = np.asarray([self.tokenizer.ids(question.strip())], dtype=np.int64)
        return {"input_ids": ids, "attention_mask": np.ones_like(ids)}

    def answer_tokens(self, image, question: str, max_length: int | None = None) -> list[int]:
        from mmdeploy.runtime.generate import answer_tokens, trim

        settings = self._settings()
        feeds = self.question_feeds(question)
        if not self.has("question_encoder"):
            raise UnsupportedError(f"{self.path} has no question encoder (family {self.family!r})",
                                   "pass a BLIP question-answering bundle")
        runners = {c: self.runner(c) for c in ("vision", "question_encoder", "text_decoder",
                                               "text_decoder_with_past") if self.has(c)}
        tokens = answer_tokens(runners, self.pixel_values([image]), feeds, settings, max_length)
        return trim(tokens.tolist()[0], settings)

    def answer(self, image, question: str, max_length: int | None = None) -> str:
        """The greedy answer to ``question`` about one image (BLIP VQA)."""
        return self.tokenizer.decode(self.answer_tokens(image, question, max_length)).strip()


def _as_list(items) -> list:
    if isinstance(items, (str, Path)) or (isinstance(items, np.ndarray) and items.ndim in (2, 3)) \
            or hasattr(items, "getpixel"):
        return [items]
    return list(items)


def _first(outputs: dict) -> np.ndarray:
    return np.asarray(next(iter(outputs.values())))


def load(path: str | Path, backend: str | None = None, threads: int | None = None,
         precision: str | None = None) -> Model:
    """Open a bundle written by the toolchain (see :class:`Model`)."""
    return Model(path, backend=backend, threads=threads, precision=precision)
