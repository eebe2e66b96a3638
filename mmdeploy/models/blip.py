"""BLIP captioning (``BlipForConditionalGeneration``): vision encoder + text decoder graphs.

Components:

* ``vision``: ``pixel_values`` [batch, 3, H, W] → ``image_embeds`` [batch, tokens, hidden]
  (the encoder's last hidden state, what the decoder cross-attends to);
* ``text_decoder``: ``input_ids`` int64 [batch, sequence], ``encoder_hidden_states`` →
  ``logits`` [batch, sequence, vocab], ``present.{i}.key|value`` [batch, heads, sequence,
  head_dim] per layer (the self-attention cache) and ``cross.{i}.key|value`` [batch, heads,
  image_tokens, head_dim] (the image projected for cross-attention, computed once);
* ``text_decoder_with_past``: ``input_ids`` (the new token), ``past.{i}.key|value`` (dynamic
  past length) and ``cross.{i}.key|value`` → ``logits``, ``present.{i}.key|value``: incremental
  decoding without re-projecting the image at every step.

:mod:`mmdeploy.runtime.generate` runs the greedy loop over any Runners.  The task metric is
token-level agreement of those captions with PyTorch ``generate()`` on the verification images
(the demo's procedural shape images); the reference tokens are kept in the bundle metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.errors import CalibrationError, InputError
from mmdeploy.backends.torch import TorchRunner
from mmdeploy.models.base import Adapter, Component, TaskResult
from mmdeploy.runtime.generate import GenerationSettings, caption_tokens, past_names, token_agreement, trim
from mmdeploy.models.clap import from_pretrained
from mmdeploy.models.preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, read_captions

EVAL_IMAGES = 8
NO_TOKENIZER = ("generated answers/captions compared as token ids (not decoded), text calibration from token ids "
                "drawn from the vocabulary")
# BLIP's image processor: a square resize to the vision config's image size, CLIP normalization
IMAGE_DEFAULTS = {"class": "BlipImageProcessor", "mean": OPENAI_CLIP_MEAN, "std": OPENAI_CLIP_STD,
                  "size": "height_width", "name": "BLIP (OpenAI CLIP mean/std)"}


def _modules(model) -> tuple:
    """torch modules for the vision encoder and the two decoder variants (positional inputs)."""
    import torch
    from transformers.cache_utils import DynamicCache, EncoderDecoderCache

    layers = model.config.text_config.num_hidden_layers

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_model = model.vision_model

        def forward(self, pixel_values):
            return self.vision_model(pixel_values=pixel_values).last_hidden_state

    class Decoder(torch.nn.Module):
        """First step: (input_ids, encoder_hidden_states) → logits, self-attention present,
        cross-attention keys/values.  Later steps (``with_past``): (input_ids, past self
        keys/values, cross keys/values) → logits, present: the image is never re-projected."""

        def __init__(self, with_past: bool):
            super().__init__()
            self.text_decoder = model.text_decoder
            self.with_past = with_past

        def forward(self, input_ids, *tensors):
            self_cache, cross_cache = DynamicCache(), DynamicCache()
            if self.with_past:
                for i in range(layers):
                    self_cache.update(tensors[2 * i], tensors[2 * i + 1], i)
                    cross_cache.update(tensors[2 * layers + 2 * i], tensors[2 * layers + 2 * i + 1], i)
                # the filled cross cache is used as is; the encoder states only have to be non-None
                encoder_hidden_states = tensors[2 * layers]
            else:
                encoder_hidden_states = tensors[0]
            out = self.text_decoder(input_ids=input_ids, encoder_hidden_states=encoder_hidden_states,
                                    past_key_values=EncoderDecoderCache(self_cache, cross_cache),
                                    use_cache=True, return_dict=True)
            cache = out.past_key_values
            present = [t for i in range(layers) for t in (cache.self_attention_cache.layers[i].keys,
                                                          cache.self_attention_cache.layers[i].values)]
            if self.with_past:
                return (out.logits, *present)
            cross = [t for i in range(layers) for t in (cache.cross_attention_cache.layers[i].keys,
                                                        cache.cross_attention_cache.layers[i].values)]
            return (out.logits, *present, *cross)

    return Vision().eval(), Decoder(False).eval(), Decoder(True).eval()


class BlipAdapter(Adapter):
    family = "blip"
    description = "BLIP captioning (BlipForConditionalGeneration): vision encoder + text decoder"

    def __init__(self, source: Path, *, allow_pickle: bool = False, options: dict | None = None):
        super().__init__(source, allow_pickle=allow_pickle, options=options)
        self._model = None
        self._components: dict[str, Component] | None = None
        self._processor = None
        self._tokenizer = None

    @classmethod
    def detect(cls, source: Path, config: dict | None) -> bool:
        config = config or {}
        archs = config.get("architectures") or []
        if "BlipForConditionalGeneration" in archs:
            return True
        return config.get("model_type") == "blip" and not archs

    # ---- loading ------------------------------------------------------------------------
    def torch_model(self):
        if self._model is None:
            from transformers import BlipForConditionalGeneration

            self._model = from_pretrained(BlipForConditionalGeneration, self.source, self.allow_pickle)
        return self._model

    def _config(self) -> dict:
        from mmdeploy.models import read_config

        return read_config(self.source) if (self.source / "config.json").is_file() else {}

    @property
    def processor(self):
        """The image processor: --processor DIR, the checkpoint's, or derived from config.json."""
        if self._processor is None:
            from mmdeploy.models.preprocess import image_processor_for

            self._processor = image_processor_for(self.source, self.processor_dir(), self._config(),
                                                  IMAGE_DEFAULTS, self.provenance)
        return self._processor

    @property
    def tokenizer(self):
        """The tokenizer, or None when neither the checkpoint nor --processor DIR has one."""
        if self._tokenizer is None:
            from mmdeploy.models.preprocess import tokenizer_for

            self._tokenizer = tokenizer_for(self.source, self.processor_dir(), self.provenance,
                                            without=NO_TOKENIZER) or False
        return self._tokenizer or None

    def require_tokenizer(self):
        """The tokenizer where text really is needed (decoding, questions); one line if absent."""
        if self.tokenizer is None:
            from mmdeploy.models.preprocess import tokenizer_for

            return tokenizer_for(self.source, self.processor_dir(), required=True)
        return self.tokenizer

    def resolve_preprocessing(self):
        self.processor, self.tokenizer  # noqa: B018 - loads or derives both, recording where from
        return self.provenance

    def settings(self) -> GenerationSettings:
        if self.bundle_metadata.get("generation"):
            return GenerationSettings.from_metadata(self.bundle_metadata)
        return GenerationSettings.from_metadata(self._generation_metadata())

    def _generation_metadata(self) -> dict:
        model = self.torch_model()
        text = model.config.text_config
        gen = model.generation_config
        return {"generation": {
            "strategy": "greedy", "bos_token_id": int(text.bos_token_id), "eos_token_id": int(text.sep_token_id),
            "pad_token_id": int(text.pad_token_id), "max_length": int(gen.max_length or 20),
            "num_layers": int(text.num_hidden_layers), "num_heads": int(text.num_attention_heads),
            "head_dim": int(text.hidden_size // text.num_attention_heads)}}

    def pixel_values(self, images: list) -> dict[str, np.ndarray]:
        out = self.processor(images=list(images), return_tensors="np")
        return {"pixel_values": np.asarray(out["pixel_values"], dtype=np.float32)}

    def eval_images(self, n: int | None = None, split: str = "eval") -> list:
        from mmdeploy.data.shapes import make_split

        images, _ = make_split(split, n or EVAL_IMAGES)
        return images

    def prompt_ids(self, texts: list[str]) -> list[np.ndarray]:
        """Captions as decoder inputs: the tokenizer's ids with the first set to bos, last dropped
        (what generate() does to a prompt)."""
        bos = self.settings().bos_token_id
        out = []
        if self.tokenizer is None:  # no tokenizer: ids drawn from the vocabulary (labelled in provenance)
            rng = np.random.default_rng(0)
            vocab = int((self._config().get("text_config") or {}).get("vocab_size", 1000))
            for text in texts:
                ids = rng.integers(5, max(vocab, 6), 2 + len(text.split())).astype(np.int64)
                ids[0] = bos
                out.append(ids[None, :])
            return out
        for text in texts:
            ids = list(self.tokenizer(text)["input_ids"])
            ids = ([bos] + ids[1:-1]) if len(ids) > 2 else [bos]
            out.append(np.asarray([ids], dtype=np.int64))
        return out

    # ---- components ---------------------------------------------------------------------
    def _check_token_ids(self) -> None:
        """Every special token id of the text config inside its vocabulary: one line naming the
        field (an id past the embedding table fails deep inside the export)."""
        from mmdeploy.errors import InputError

        text = self.torch_model().config.text_config
        vocab = int(text.vocab_size)
        for field in ("bos_token_id", "sep_token_id", "pad_token_id", "eos_token_id"):
            value = getattr(text, field, None)
            if isinstance(value, int) and not 0 <= value < vocab:
                raise InputError(f"{self.source / 'config.json'}: text_config.{field} {value} is outside the "
                                 f"vocabulary [0, {vocab})",
                                 f"set text_config.{field} to the tokenizer's id (below text_config.vocab_size)")

    def components(self) -> dict[str, Component]:
        if self._components is None:
            self._check_token_ids()
            vision, decoder, decoder_with_past = _modules(self.torch_model())
            settings = self.settings()
            present = past_names(settings.num_layers, "present")
            past = past_names(settings.num_layers, "past")
            cross = past_names(settings.num_layers, "cross")
            vocab = self.torch_model().config.text_config.vocab_size

            def vision_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
                images = self.eval_images(batch + seed % 5)[seed % 5:]
                return self.pixel_values(images)

            def encoder_states(batch: int, seed: int) -> np.ndarray:
                return TorchRunner(self._components["vision"]).run(vision_inputs(batch, seed))["image_embeds"]

            def prefix(batch: int, seed: int, length: int) -> np.ndarray:
                rng = np.random.default_rng(seed)
                ids = rng.integers(5, vocab, (batch, length)).astype(np.int64)
                ids[:, 0] = settings.bos_token_id
                return ids

            def decoder_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
                return {"input_ids": prefix(batch, seed, 2 + seed % 3),
                        "encoder_hidden_states": encoder_states(batch, seed)}

            def with_past_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
                enc = encoder_states(batch, seed)
                ids = prefix(batch, seed, 3 + seed % 3)
                first = TorchRunner(self._components["text_decoder"]).run(
                    {"input_ids": ids[:, :-1], "encoder_hidden_states": enc})
                return {"input_ids": ids[:, -1:], **{p: first[n] for p, n in zip(past, present)},
                        **{n: first[n] for n in cross}}

            seq_axes = {n: {0: "batch", 2: "sequence"} for n in present}
            self._components = {
                "vision": Component("vision", vision, ["pixel_values"], ["image_embeds"],
                                    {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                                    vision_inputs, modality="image"),
                "text_decoder": Component(
                    "text_decoder", decoder, ["input_ids", "encoder_hidden_states"],
                    ["logits", *present, *cross],
                    {"input_ids": {0: "batch", 1: "sequence"}, "encoder_hidden_states": {0: "batch"},
                     "logits": {0: "batch", 1: "sequence"}, **seq_axes, **{n: {0: "batch"} for n in cross}},
                    decoder_inputs, modality="text"),
                "text_decoder_with_past": Component(
                    "text_decoder_with_past", decoder_with_past, ["input_ids", *past, *cross],
                    ["logits", *present],
                    {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"},
                     **{n: {0: "batch"} for n in cross},
                     **{n: {0: "batch", 2: "past_sequence"} for n in past},
                     **{n: {0: "batch", 2: "total_sequence"} for n in present}},
                    with_past_inputs, modality="text"),
            }
        return self._components

    # ---- bundle -------------------------------------------------------------------------
    def reference_tokens(self, n: int | None = None) -> list[list[int]]:
        """PyTorch ``generate()`` (greedy) tokens on the verification images, trimmed at eos."""
        import torch

        settings = self.settings()
        pixels = torch.from_numpy(self.pixel_values(self.eval_images(n))["pixel_values"])
        with torch.no_grad():
            # plain greedy search, whatever the checkpoint's generation_config asks for
            out = self.torch_model().generate(pixel_values=pixels, max_length=settings.max_length,
                                              do_sample=False, num_beams=1, repetition_penalty=1.0,
                                              no_repeat_ngram_size=0, min_length=0)
        return [trim(row, settings) for row in out.tolist()]

    def metadata(self) -> dict[str, Any]:
        return {**self._generation_metadata(), "task": "captioning",
                "reference_tokens": self.reference_tokens(), "options": self.options}

    def preprocess_files(self) -> list[Path]:
        from mmdeploy.models.preprocess import derived_files, preprocess_files_from

        self.resolve_preprocessing()
        generation = [self.source / "generation_config.json"] if (self.source / "generation_config.json").is_file() else []
        # config.json too: what the config determines (vocabulary size...) is needed without weights
        config = [self.source / "config.json"] if (self.source / "config.json").is_file() else []
        return config + preprocess_files_from(self.source, self.processor_dir()) + generation + derived_files(self.provenance)

    # ---- data ---------------------------------------------------------------------------
    def _runner(self, component: str):
        """Runner for a component: torch when the weights are loaded, else the bundle's artifact."""
        if not self.bundle_metadata:
            return TorchRunner(self.components()[component])
        from mmdeploy.artifact import read_manifest
        from mmdeploy.backends import load_runner

        bundle = self.source.parent
        refs = [r for r in read_manifest(bundle).artifacts if r.component == component]
        refs.sort(key=lambda r: (r.format != "onnx", r.precision != "fp32"))  # the fp32 ONNX first
        if not refs:
            raise CalibrationError(f"{bundle} has no {component} artifact to compute decoder inputs with",
                                   "convert the checkpoint with all BLIP components")
        return load_runner(bundle / refs[0].path)

    def _images_from(self, path, limit: int | None) -> list:
        from mmdeploy.data.calib import calibration_images

        if path is None:
            return self.eval_images(limit or 16, split="calib")
        return calibration_images(path, limit).images  # folder or ImageFolder; unreadable skipped

    def calibration_feeds(self, component: str, path: Path | None = None,
                          limit: int | None = None) -> list[dict[str, np.ndarray]]:
        """vision: images (folder or the demo's shapes); decoders: captions (a .txt file or the
        demo prompts) over encodings of the demo images, the past from the decoder itself."""
        if component == "vision":
            return [self.pixel_values([img]) for img in self._images_from(path, limit)]
        if component not in ("text_decoder", "text_decoder_with_past"):
            raise CalibrationError(f"blip has no component {component!r}",
                                   "components: vision, text_decoder, text_decoder_with_past")
        from mmdeploy.data.shapes import class_prompts

        texts = read_captions(Path(path)) if path is not None else class_prompts()
        if path is not None:
            self.require_tokenizer()  # the user's captions must be tokenized, not replaced
        texts = texts[:limit] if limit else texts[:16]
        images = self.eval_images(len(texts), split="calib")
        vision, decoder = self._runner("vision"), self._runner("text_decoder")
        settings = self.settings()
        feeds = []
        for ids, image in zip(self.prompt_ids(texts), images):
            enc = vision.run(self.pixel_values([image]))["image_embeds"]
            if component == "text_decoder" or ids.shape[1] < 2:
                feeds.append({"input_ids": ids, "encoder_hidden_states": enc})
                continue
            first = decoder.run({"input_ids": ids[:, :-1], "encoder_hidden_states": enc})
            feeds.append({"input_ids": ids[:, -1:],
                          **{p: first[n] for p, n in zip(past_names(settings.num_layers, "past"),
                                                         past_names(settings.num_layers, "present"))},
                          **{n: first[n] for n in past_names(settings.num_layers, "cross")}})
        return [f for f in feeds if component == "text_decoder" or "past.0.key" in f]

    # ---- task ---------------------------------------------------------------------------
    def task_components(self) -> tuple[str, ...]:
        return ("vision", "text_decoder", "text_decoder_with_past")

    def captions(self, runners: dict, images: list, max_length: int | None = None,
                 return_logits: bool = False):
        """Greedy captions (token lists trimmed at eos); with ``return_logits`` also the first
        decoding step's logits [images, vocab]."""
        settings = self.settings()
        tokens, logits = caption_tokens(self.pixel_values(images)["pixel_values"], runners, settings,
                                        max_length, return_logits=True)
        rows = [trim(row, settings) for row in tokens.tolist()]
        return (rows, logits) if return_logits else rows

    def decode(self, tokens: list[int]) -> str:
        return self.require_tokenizer().decode(tokens, skip_special_tokens=True).strip()

    def evaluate(self, runners: dict, limit: int | None = None) -> TaskResult:
        """Token-level agreement of greedy captions from ``runners`` with PyTorch generate()."""
        missing = [c for c in ("vision", "text_decoder") if c not in runners]
        if missing:
            raise InputError(f"blip evaluation needs runners for {', '.join(missing)}")
        reference = self.bundle_metadata.get("reference_tokens") or self.reference_tokens()
        reference = reference[:limit] if limit else reference
        got, logits = self.captions(runners, self.eval_images(len(reference)), return_logits=True)
        settings = self.settings()
        flat = [t for row in got for t in row + [settings.pad_token_id] * (settings.max_length - len(row))]
        exact = sum(a == b for a, b in zip(reference, got)) / len(reference)
        return TaskResult("caption-token-agreement", token_agreement(reference, got), len(reference), flat,
                          {"exact_match": exact,
                           "captions": [self.decode(t) for t in got] if self.tokenizer is not None else [],
                           "dataset": "demo-shapes/eval", "logits": logits})

