"""Image–text dual encoders: one adapter, one table entry per family.

Every family here is an image tower and a text tower whose L2-normalised embeddings are
compared by a small head (``logits_per_image = scale * cos(image, text) (+ bias)``).  The
adapter drives each tower through the model's own feature methods (``get_image_features`` /
``get_text_features``; transformers 5.x returns a ``BaseModelOutputWithPooling`` whose
``pooler_output`` is the projected embedding) and a :class:`Family` entry says what differs:
model class, image processor, text inputs, padding rule and head.

Components:
* ``vision``: ``pixel_values`` [batch, 3, H, W] → ``image_embeds`` [batch, dim];
* ``text``: ``input_ids`` [batch, sequence] (+ ``attention_mask``) → ``text_embeds`` [batch, dim].

``logits_per_image`` is rebuilt from the towers with :func:`zero_shot_logits` and the head
recorded in the bundle; :meth:`DualEncoderAdapter.logits_parity` checks that against the
model's own forward.  Single-tower checkpoints (``CLIPVisionModelWithProjection``, ...) give
one component.  A folder without tokenizer or image-processor files converts: see
:func:`resolve_preprocessing`.
"""

from __future__ import annotations

import contextlib
import copy
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmdeploy.data.calib import calibration_images
from mmdeploy.data.media import modality_of
from mmdeploy.errors import CalibrationError, CheckpointError, InputError, UnsupportedError, VerificationError
from mmdeploy.models import preprocess as pp
from mmdeploy.models.base import Adapter, Component, TaskResult

CAPTION_WORDS = ["cat", "dog", "car", "tree", "house", "person", "bird", "boat", "flower", "plane",
                 "red", "green", "blue", "small", "large", "circle", "square", "photo", "drawing"]
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                   "merges.txt", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
                   "added_tokens.json")
IMAGE_PROCESSOR_FILE = "preprocessor_config.json"
OUTPUTS = {"vision": "image_embeds", "text": "text_embeds"}
OPENAI_MEAN, OPENAI_STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]

# model types with CLIP-like towers but another shape of task: refused with one line
DIFFERENT_SHAPES = {
    "owlvit": "an open-vocabulary detector (OWL-ViT: boxes per text query)",
    "owlv2": "an open-vocabulary detector (OWLv2: boxes per text query)",
    "clipseg": "a text-prompted segmenter (CLIPSeg: a mask per prompt)",
    "groupvit": "a text-grounded segmenter (GroupViT)",
    "x_clip": "a video–text model (X-CLIP)",
}


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


# --------------------------------------------------------------------------- the table


def _pooled(out):
    """The projected embedding of a feature method's result (tensor, or pooler_output)."""
    return out if hasattr(out, "shape") else out.pooler_output


def _image_features(model, pixel_values):
    return _pooled(model.get_image_features(pixel_values=pixel_values))


def _text_features(model, **inputs):
    return _pooled(model.get_text_features(**inputs))


def _siglip2_image_features(model, pixel_values):
    """Siglip2 (NaFlex) at one fixed resolution: patchify in the graph, every patch valid, and
    the positional embeddings at their native grid (the NaFlex resize is then the identity)."""
    import torch

    embeddings = model.vision_model.embeddings
    p = int(model.config.vision_config.patch_size)
    b, c, h, w = pixel_values.shape
    nh, nw = h // p, w // p
    patches = pixel_values.reshape(b, c, nh, p, nw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, nh * nw, p * p * c)
    mask = torch.ones_like(patches[..., 0], dtype=torch.long)
    grid = embeddings.position_embedding_size
    if (nh, nw) != (grid, grid):
        raise UnsupportedError(f"siglip2 fixed-resolution export needs {grid * p}x{grid * p} images, got {h}x{w}",
                               "feed the size recorded in the bundle (image_size)")
    shapes = torch.tensor([[nh, nw]], dtype=torch.long)  # one row: broadcast over the batch

    def native(positional_embeddings, spatial_shapes, max_length):  # (h, w, d) -> (1, h*w, d)
        return positional_embeddings.reshape(1, -1, positional_embeddings.shape[-1])

    embeddings.resize_positional_embeddings = native  # instance attribute, removed below
    try:
        return _pooled(model.get_image_features(pixel_values=patches, pixel_attention_mask=mask,
                                                spatial_shapes=shapes))
    finally:
        del embeddings.resize_positional_embeddings


def _siglip2_forward_kwargs(model, pixel_values):
    """What Siglip2Model.forward takes for square fixed-resolution images (for logits_parity)."""
    import torch

    p = int(model.config.vision_config.patch_size)
    b, c, h, w = pixel_values.shape
    nh, nw = h // p, w // p
    patches = pixel_values.reshape(b, c, nh, p, nw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, nh * nw, p * p * c)
    return {"pixel_values": patches, "pixel_attention_mask": torch.ones(b, nh * nw, dtype=torch.long),
            "spatial_shapes": torch.tensor([[nh, nw]] * b, dtype=torch.long)}


def _blip_image_features(model, pixel_values):
    """BLIP retrieval's ITC image embedding: vision_proj of the [CLS] state."""
    hidden = model.vision_model(pixel_values=pixel_values).last_hidden_state
    return model.vision_proj(hidden[:, 0, :])


def _blip_text_features(model, input_ids, attention_mask=None):
    """BLIP retrieval's ITC text embedding: text_proj of the text encoder's first token."""
    hidden = model.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return model.text_proj(hidden[:, 0, :])


def _blip_logits(model, pixel_values, **text):
    return model(pixel_values=pixel_values, use_itm_head=False, **text).itm_score


@contextlib.contextmanager
def _global_average_pool(module, image_size: int):
    """ALIGN's pooler is ``AvgPool2d(hidden_dim, ceil_mode=True)``: a kernel larger than the
    feature map, i.e. a global mean, which OpenVINO rejects as an AveragePool.  Around export it
    is computed as that mean (the same numbers; instances only, restored afterwards)."""
    import torch

    from mmdeploy.models.attention import restore_forwards

    patched = []
    for sub in module.modules():
        if isinstance(sub, torch.nn.AvgPool2d) and sub.ceil_mode and _size(sub.kernel_size) >= image_size:
            patched.append((sub, sub.__dict__.get("forward")))
            sub.forward = lambda x: x.mean(dim=(2, 3), keepdim=True)
    try:
        yield len(patched)
    finally:
        restore_forwards(patched)


def _size(kernel) -> int:
    return min(kernel) if isinstance(kernel, (tuple, list)) else int(kernel)


def _scale_head(model) -> dict:
    bias = getattr(model, "logit_bias", None)
    return {"logit_scale": float(model.logit_scale.exp().item()),
            "logit_bias": float(bias.item()) if bias is not None else None}


def _temperature_head(model) -> dict:  # ALIGN: logits = cos / temperature
    t = float(model.temperature.item())
    return {"logit_scale": 1.0 / t, "logit_bias": None, "temperature": t}


def _cosine_head(model) -> dict:  # BLIP retrieval's ITC score is the plain cosine
    return {"logit_scale": 1.0, "logit_bias": None}


@dataclass(frozen=True)
class Family:
    """What one dual-encoder family looks like (one row of :data:`TABLE`)."""

    name: str
    description: str
    model_class: str
    model_types: tuple[str, ...]
    architectures: tuple[str, ...]
    image_processor_class: str
    # how to derive the processor from the config: class kwargs for a square image of side S
    derive: Callable[[int], dict]
    text_inputs: tuple[str, ...] = ("input_ids", "attention_mask")
    pad_to_max_length: bool = False
    text_length: int | None = None  # the family's standard context length, when below the config's
    position_offset: int = 0  # positions the text embeddings reserve (RoBERTa: padding_idx + 1)
    head: Callable = _scale_head
    image_features: Callable = _image_features
    text_features: Callable = _text_features
    forward_logits: Callable | None = None  # model's own logits_per_image (None: model(...).logits_per_image)
    forward_image_kwargs: Callable | None = None
    detect_by_model_type: bool = True
    # single-tower checkpoints of this family: architecture -> (component, output attribute)
    single_towers: dict = field(default_factory=dict)
    # export-time rewrite a backend needs (module, image size) -> context manager
    export_rewrite: Callable | None = None
    pruning: bool = False  # the pruner understands its blocks (mmdeploy.models.pruned)
    notes: tuple[str, ...] = ()


def _clip_processor(size: int) -> dict:  # resize shortest edge, centre crop, OpenAI CLIP mean/std
    return {"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size},
            "image_mean": OPENAI_MEAN, "image_std": OPENAI_STD}


def _square_processor(mean, std):
    def derive(size: int) -> dict:
        return {"size": {"height": size, "width": size}, "image_mean": mean, "image_std": std}
    return derive


def _align_processor(size: int) -> dict:  # ALIGN: pixels to [-1, 1], no mean/std normalisation
    return {"size": {"height": size, "width": size}, "crop_size": {"height": size, "width": size},
            "rescale_factor": 1 / 127.5, "rescale_offset": True, "do_normalize": False, "include_top": False}


TABLE: dict[str, Family] = {f.name: f for f in (
    Family("clip", "CLIP (CLIPModel): vision + text towers", "CLIPModel", ("clip",), ("CLIPModel",),
           "CLIPImageProcessor", _clip_processor, pruning=True,
           single_towers={"CLIPVisionModelWithProjection": ("vision", "image_embeds"),
                          "CLIPTextModelWithProjection": ("text", "text_embeds")}),
    Family("siglip", "SigLIP (SiglipModel): vision + text towers, sigmoid head", "SiglipModel", ("siglip",),
           ("SiglipModel",), "SiglipImageProcessor", _square_processor([0.5] * 3, [0.5] * 3),
           text_inputs=("input_ids",), pad_to_max_length=True, pruning=True,  # trained on max-length text, no mask
           single_towers={"SiglipVisionModel": ("vision", "pooler_output"),
                          "SiglipTextModel": ("text", "pooler_output")}),
    Family("siglip2", "SigLIP 2 NaFlex (Siglip2Model), exported at one fixed square resolution", "Siglip2Model",
           ("siglip2",), ("Siglip2Model",), "SiglipImageProcessor", _square_processor([0.5] * 3, [0.5] * 3),
           text_inputs=("input_ids",), pad_to_max_length=True, image_features=_siglip2_image_features,
           forward_image_kwargs=_siglip2_forward_kwargs,
           notes=("fixed resolution: images resized to a square of sqrt(num_patches) patches; NaFlex's "
                  "variable resolution is not exported",)),
    Family("metaclip-2", "MetaCLIP 2 (MetaClip2Model): vision + text towers", "MetaClip2Model", ("metaclip_2",),
           ("MetaClip2Model",), "CLIPImageProcessor", _clip_processor),
    Family("chinese-clip", "Chinese-CLIP (ChineseCLIPModel): ViT + BERT towers", "ChineseCLIPModel",
           ("chinese_clip",), ("ChineseCLIPModel",), "ChineseCLIPImageProcessor", _clip_processor, text_length=52),
    Family("altclip", "AltCLIP (AltCLIPModel): ViT + XLM-R towers", "AltCLIPModel", ("altclip",), ("AltCLIPModel",),
           "CLIPImageProcessor", _clip_processor, position_offset=2),
    Family("align", "ALIGN (AlignModel): EfficientNet + BERT towers, temperature head", "AlignModel", ("align",),
           ("AlignModel",), "EfficientNetImageProcessor", _align_processor, pad_to_max_length=True, text_length=64,
           head=_temperature_head, export_rewrite=_global_average_pool),
    Family("blip-itm", "BLIP retrieval (BlipForImageTextRetrieval): ITC image + text embeddings",
           "BlipForImageTextRetrieval", (), ("BlipForImageTextRetrieval",), "BlipImageProcessor",
           _square_processor(OPENAI_MEAN, OPENAI_STD), head=_cosine_head, image_features=_blip_image_features,
           text_features=_blip_text_features, forward_logits=_blip_logits, detect_by_model_type=False),
)}


def supported() -> str:
    return ", ".join(TABLE)


# --------------------------------------------------------------------------- preprocessing


def _has_tokenizer(folder: Path | None) -> bool:
    return folder is not None and any((folder / n).is_file() for n in
                                      ("tokenizer.json", "tokenizer_config.json", "vocab.json", "vocab.txt",
                                       "spiece.model", "sentencepiece.bpe.model", "tokenizer.model"))


def resolve_preprocessing(source: Path, processor: str | Path | None, family: Family, *,
                          needs_image: bool = True, needs_text: bool = True) -> dict:
    """Where tokenizer and image processor come from, for a checkpoint folder.

    ``processor`` (the ``--processor DIR`` option) wins when given; else the checkpoint's own
    files; else the image processor is derived from config.json (image size + the family's
    standard normalisation) and a missing tokenizer is skipped.  Returns ``{"source",
    "notes", "tokenizer_dir", "image_dir"}``; source is ``checkpoint`` | ``processor-dir`` |
    ``derived`` | ``none``.
    """
    notes: list[str] = []
    tokenizer_dir = image_dir = None
    used_dir = False
    if processor:
        pdir = Path(processor)
        if not pdir.is_dir():
            raise InputError(f"--processor {pdir} is not a folder",
                             "pass the folder holding the tokenizer / preprocessor_config.json (e.g. the base model)")
        if needs_text and _has_tokenizer(pdir):
            tokenizer_dir, used_dir = pdir, True
            notes.append(f"tokenizer from {pdir}")
        if needs_image and (pdir / IMAGE_PROCESSOR_FILE).is_file():
            image_dir, used_dir = pdir, True
            notes.append(f"image processor from {pdir}")
        if not used_dir:
            raise InputError(f"--processor {pdir} holds no tokenizer or {IMAGE_PROCESSOR_FILE}",
                             "pass the folder of the model this checkpoint was fine-tuned from")
    if needs_text and tokenizer_dir is None and _has_tokenizer(source):
        tokenizer_dir = source
    if needs_image and image_dir is None and (source / IMAGE_PROCESSOR_FILE).is_file():
        image_dir = source
    derived = False
    if needs_image and image_dir is None:
        derived = True
        notes.append(f"no {IMAGE_PROCESSOR_FILE}: image processor derived from config.json "
                     f"(image size, {family.name}'s standard normalization)")
    if needs_text and tokenizer_dir is None:
        derived = derived or needs_image
        notes.append("no tokenizer: the caption-based task check is skipped; text verification and "
                     "calibration use token ids drawn from the vocabulary (pass --processor DIR for real captions)")
    if used_dir:
        kind = "processor-dir"
    elif derived or (needs_text and tokenizer_dir is None and not needs_image):
        kind = "derived" if derived else "none"
    elif tokenizer_dir is None and image_dir is None:
        kind = "none"
    else:
        kind = "checkpoint"
    return {"source": kind, "notes": notes, "tokenizer_dir": tokenizer_dir, "image_dir": image_dir}


# --------------------------------------------------------------------------- the adapter


def _towers_used(model, run) -> set[str]:
    """Names of the model's direct children that ``run(model)`` calls (forward hooks)."""
    import torch

    used: set[str] = set()
    hooks = [child.register_forward_hook(lambda *_, name=name: used.add(name))
             for name, child in model.named_children()]
    try:
        with torch.no_grad():
            run(model)
    finally:
        for h in hooks:
            h.remove()
    return used


def _view(model, children: set[str]):
    """A shallow copy of ``model`` holding only ``children`` (shared, not copied): a tower
    module whose parameters are that tower's, so exporters and size counts see one tower."""
    view = copy.copy(model)
    view._modules = {k: v for k, v in model._modules.items() if k in children}
    return view


class _Tower:  # built lazily (torch imported inside functions only)
    @staticmethod
    def make(model, features: Callable, input_names: list[str]):
        import torch

        class Tower(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.model = model

            def forward(self, *args):
                return features(self.model, **dict(zip(input_names, args)))

        return Tower().eval()


class _MissingWeights:
    """Duck-typed model class for loading.load_hf_model that records transformers' loading info
    (missing keys), so a checkpoint lacking a tower's weights is refused, not random-filled."""

    def __init__(self, cls):
        self.cls, self.config_class, self.info = cls, cls.config_class, None

    def from_pretrained(self, *args, **kwargs):
        model, self.info = self.cls.from_pretrained(*args, output_loading_info=True, **kwargs)
        return model

    def __call__(self, *args, **kwargs):
        return self.cls(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.cls, name)


class DualEncoderAdapter(Adapter):
    """One adapter for every image–text dual encoder; subclasses only pick a :class:`Family`."""

    spec: Family = TABLE["clip"]

    def __init__(self, source: Path, *, allow_pickle: bool = False, options: dict | None = None):
        super().__init__(source, allow_pickle=allow_pickle, options=options)
        self._torch_model = None
        self._tokenizer = None
        self._processor = None
        self._components: dict[str, Component] | None = None
        self._config: dict | None = None
        self._prep: dict | None = None
        self._in_bundle = False
        self._tmp: tempfile.TemporaryDirectory | None = None
        self._task_data: tuple | None = None
        self._task_feeds: dict = {}

    # ---- detection ------------------------------------------------------------------------
    @classmethod
    def detect(cls, source: Path, config: dict | None) -> bool:
        config = config or {}
        kind = config.get("model_type")
        if kind in DIFFERENT_SHAPES:
            raise UnsupportedError(
                f"{source}: model_type {kind!r} is {DIFFERENT_SHAPES[kind]}, not an image–text dual encoder",
                f"supported dual-encoder families: {supported()}")
        archs = set(config.get("architectures") or [])
        spec = cls.spec
        if archs & (set(spec.architectures) | set(spec.single_towers)):
            return True
        if archs and any(a.endswith(("ForConditionalGeneration", "ForQuestionAnswering")) for a in archs):
            return False
        return spec.detect_by_model_type and kind in spec.model_types

    @classmethod
    def from_bundle(cls, bundle_dir: Path, metadata: dict) -> "Adapter":
        adapter = super().from_bundle(bundle_dir, metadata)
        adapter._in_bundle = True
        return adapter

    # ---- config ---------------------------------------------------------------------------
    @property
    def config(self) -> dict:
        if self._config is None:
            from mmdeploy.models import read_config

            self._config = read_config(self.source) if (self.source / "config.json").is_file() else {}
        return self._config

    @property
    def single_tower(self) -> tuple[str, str] | None:
        """(component, output attribute) for a one-tower checkpoint, else None."""
        for arch in self.config.get("architectures") or []:
            if arch in self.spec.single_towers:
                return self.spec.single_towers[arch]
        return None

    def tower_names(self) -> tuple[str, ...]:
        single = self.single_tower
        return (single[0],) if single else ("vision", "text")

    def _sub_config(self, tower: str) -> dict:
        if self.single_tower:
            return self.config
        return self.config.get("vision_config" if tower == "vision" else "text_config") or {}

    @property
    def preprocessing(self) -> dict:
        if self._prep is None:
            towers = self.tower_names()
            if self._in_bundle:
                self._prep = {**resolve_preprocessing(self.source, None, self.spec, needs_image="vision" in towers,
                                                      needs_text="text" in towers),
                              **{k: v for k, v in (self.bundle_metadata.get("preprocessing") or {}).items()}}
            else:
                self._prep = resolve_preprocessing(self.source, self.options.get("processor"), self.spec,
                                                   needs_image="vision" in towers, needs_text="text" in towers)
        return self._prep

    def notes(self) -> list[str]:
        """One line per thing the user should know about this checkpoint's preprocessing."""
        return [] if self._in_bundle else list(self.preprocessing["notes"])

    @property
    def has_tokenizer(self) -> bool:
        return self.preprocessing["tokenizer_dir"] is not None

    # ---- torch ----------------------------------------------------------------------------
    def torch_model(self):
        if self._torch_model is None:
            import transformers

            from mmdeploy.models.loading import load_hf_model

            pp.quiet_transformers()
            single = self.single_tower
            name = (self.config.get("architectures") or [None])[0] if single else self.spec.model_class
            recorder = _MissingWeights(getattr(transformers, name))
            model = load_hf_model(recorder, self.source, self.allow_pickle,
                                  attn_implementation=self.options.get("attn_implementation", "eager"))
            missing = sorted((recorder.info or {}).get("missing_keys") or [])
            if missing:
                from mmdeploy.models.loading import weight_files

                safetensors, pickles = weight_files(self.source)
                where = (safetensors or pickles or [self.source])[0]
                towers = sorted({k.split(".")[0] for k in missing})
                raise CheckpointError(
                    f"{where} lacks {len(missing)} weights of {self.spec.model_class} ({', '.join(towers)}; "
                    f"e.g. {missing[0]})",
                    "is this a checkpoint of the family its config.json says? save the whole model with "
                    "save_pretrained(), or pass --family")
            self._torch_model = model
        return self._torch_model

    def _example_image(self, batch: int = 1):
        import torch

        return torch.from_numpy(self._random_images(batch, 0)["pixel_values"])

    def components(self) -> dict[str, Component]:
        if self._components is not None:
            return self._components
        model = self.torch_model()
        single = self.single_tower
        comps: dict[str, Component] = {}
        for tower in self.tower_names():
            if tower == "vision":
                names = ["pixel_values"]
                if single:
                    attr = single[1]
                    features = lambda m, pixel_values, attr=attr: getattr(m(pixel_values=pixel_values), attr)  # noqa: E731
                else:
                    features = self.spec.image_features
                example = lambda: {"pixel_values": self._example_image()}  # noqa: E731
                axes = {"pixel_values": {0: "batch"}}
                make, modality = self._random_images, "image"
            else:
                names = list(self.spec.text_inputs)
                if single:
                    attr = single[1]
                    features = lambda m, attr=attr, **kw: getattr(m(**kw), attr)  # noqa: E731
                else:
                    features = self.spec.text_features
                example = lambda: self._torch_feeds(self._random_captions(1, 0))  # noqa: E731
                axes = {n: {0: "batch", 1: "sequence"} for n in names}
                make, modality = self._random_captions, "text"
            module = model
            if not single:
                used = _towers_used(model, lambda m, f=features, e=example: f(m, **e()))
                module = _view(model, used)
            tower_module = _Tower.make(module, features, names)
            comps[tower] = Component(
                name=tower, module=tower_module, input_names=names, output_names=[OUTPUTS[tower]],
                dynamic_axes={**axes, OUTPUTS[tower]: {0: "batch"}}, make_inputs=make, modality=modality,
                # attention exported in the form ONNX Runtime's fusion recognizes (same outputs)
                export_context=lambda m=tower_module: self._export_context(m))
        self._components = comps
        return comps

    def _export_context(self, module):
        from mmdeploy.models.attention import fusable_attention
        from mmdeploy.models.patches import matmul_patch_embedding

        stack = contextlib.ExitStack()
        stack.enter_context(fusable_attention(module))
        stack.enter_context(matmul_patch_embedding(module))
        if self.spec.export_rewrite is not None:
            stack.enter_context(self.spec.export_rewrite(module, self.image_size()))
        return stack

    @staticmethod
    def _torch_feeds(feeds: dict[str, np.ndarray]) -> dict:
        import torch

        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}

    def head(self) -> dict[str, Any] | None:
        if self.single_tower:
            return None
        return self.spec.head(self.torch_model())

    # ---- what the bundle keeps ------------------------------------------------------------
    def metadata(self) -> dict[str, Any]:
        if self.bundle_metadata:
            return dict(self.bundle_metadata)
        towers = self.tower_names()
        config = self.torch_model().config
        prep = self.preprocessing
        meta: dict[str, Any] = {
            "head": self.head(),
            "task": {"name": "zero-shot-top1", "dataset": self.dataset()} if self.task_components() else None,
            # a pruned checkpoint's structure record (per-layer heads / channels), for lineage
            "pruning": getattr(config, "mmdeploy_pruning", None),
            "options": {k: v for k, v in self.options.items() if isinstance(v, (str, int, float, bool))},
            "preprocessing": {"source": prep["source"], "notes": list(prep["notes"])},
            "dual_encoder": {"family": self.spec.name, "model_class": type(self.torch_model()).__name__,
                             "towers": list(towers), "text_inputs": list(self.spec.text_inputs),
                             "padding": "max_length" if self.spec.pad_to_max_length else "longest",
                             "notes": list(self.spec.notes)},
        }
        if "vision" in towers:
            meta["image_size"] = self.image_size()
        if "text" in towers:
            meta["text_max_length"] = self.text_max_length()
        return meta

    def preprocess_files(self) -> list[Path]:
        """config.json, the tokenizer's files (checkpoint or --processor), and the image
        processor actually used (copied, or saved when derived / fixed-resolution)."""
        prep = self.preprocessing
        files = [self.source / "config.json"] if (self.source / "config.json").is_file() else []
        tok = prep["tokenizer_dir"]
        if tok is not None:
            files += [tok / n for n in TOKENIZER_FILES if (tok / n).is_file()]
        if "vision" in self.tower_names():
            image_dir = prep["image_dir"]
            if image_dir is not None and (self.spec.name != "siglip2" or self._in_bundle):
                files.append(image_dir / IMAGE_PROCESSOR_FILE)
            else:  # derived, or siglip2's fixed-resolution processor: save the one in use
                if self._tmp is None:
                    self._tmp = tempfile.TemporaryDirectory(prefix="mmdeploy-preprocess-")
                self.image_processor.save_pretrained(self._tmp.name)
                files.append(Path(self._tmp.name) / IMAGE_PROCESSOR_FILE)
        return files

    # ---- preprocessing --------------------------------------------------------------------
    def dataset(self) -> str:
        """Which evaluation data the task uses: the demo's shapes, or real photos."""
        if "dataset" in self.options:
            return self.options["dataset"]
        meta_task = self.bundle_metadata.get("task") or {}
        if meta_task.get("dataset"):
            return meta_task["dataset"]
        return self.config.get("mmdeploy_dataset", "skimage-photos")

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            folder = self.preprocessing["tokenizer_dir"]
            if folder is None:
                raise InputError(f"{self.source} has no tokenizer files",
                                 "pass --processor DIR with the tokenizer of the model this one was fine-tuned from")
            try:
                self._tokenizer = pp.load_tokenizer(folder)
            except (OSError, ValueError, TypeError) as exc:
                first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
                raise CheckpointError(f"the tokenizer files in {folder} do not load ({first})",
                                      "restore tokenizer.json, or pass --processor DIR with a complete tokenizer") \
                    from None
        return self._tokenizer

    @property
    def image_processor(self):
        if self._processor is None:
            self._processor = self._make_image_processor()
        return self._processor

    def _processor_class(self):
        pp.quiet_transformers()
        import transformers

        name = self.spec.image_processor_class
        return getattr(transformers, name + "Pil", None) or getattr(transformers, name)

    def _make_image_processor(self):
        cls = self._processor_class()
        folder = self.preprocessing["image_dir"]
        if folder is None:
            return cls(**self.spec.derive(self._config_image_size()))
        if self.spec.name == "siglip2" and not self._in_bundle:
            # the NaFlex processor resizes per aspect ratio; the fixed export wants a square
            import json

            saved = json.loads((folder / IMAGE_PROCESSOR_FILE).read_text())
            kwargs = self.spec.derive(self._config_image_size())
            for key in ("image_mean", "image_std", "rescale_factor", "do_normalize", "resample"):
                if key in saved:
                    kwargs[key] = saved[key]
            return cls(**kwargs)
        try:
            return cls.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            raise CheckpointError(f"{folder / IMAGE_PROCESSOR_FILE} does not load ({first})",
                                  "restore it, or pass --processor DIR") from None

    def _config_image_size(self) -> int:
        vision = self._sub_config("vision")
        if self.spec.name == "siglip2":
            return int(math.isqrt(int(vision.get("num_patches", 256)))) * int(vision.get("patch_size", 16))
        size = vision.get("image_size", 224)
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def image_size(self) -> int:
        if "image_size" in self.bundle_metadata:
            return int(self.bundle_metadata["image_size"])
        if self.preprocessing["image_dir"] is None or self.spec.name == "siglip2":
            return self._config_image_size()
        proc = self.image_processor
        crop = (getattr(proc, "crop_size", None) if getattr(proc, "do_center_crop", False) else None) \
            or getattr(proc, "size", None) or {}
        return int(crop.get("height") or crop.get("shortest_edge") or self._config_image_size())

    def text_max_length(self) -> int:
        if "text_max_length" in self.bundle_metadata:
            return int(self.bundle_metadata["text_max_length"])
        text = self._sub_config("text")
        length = int(text.get("max_position_embeddings", 77)) - self.spec.position_offset
        if self.spec.text_length:
            length = min(length, self.spec.text_length)
        return length

    def image_feeds(self, images: list) -> dict[str, np.ndarray]:
        pixel = self.image_processor(images=images, return_tensors="np")["pixel_values"]
        return {"pixel_values": np.asarray(pixel, dtype=np.float32)}

    def text_feeds(self, texts: list[str]) -> dict[str, np.ndarray]:
        kwargs = dict(padding="max_length" if self.spec.pad_to_max_length else True, truncation=True,
                      max_length=self.text_max_length(), return_tensors="np")
        encoded = self.tokenizer(list(texts), **kwargs)
        return {name: np.asarray(encoded[name], dtype=np.int64) for name in self.spec.text_inputs}

    def token_id_feeds(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        """Token ids drawn from the vocabulary (no tokenizer): bos? ids eos, padded by the family's rule."""
        text = self._sub_config("text")
        vocab = int(text.get("vocab_size", 1000))
        special = {text.get(k) for k in ("pad_token_id", "bos_token_id", "eos_token_id")} - {None}
        special = {int(s) for s in special if isinstance(s, int) and 0 <= s < vocab}
        pool = np.setdiff1d(np.arange(vocab), np.fromiter(special, dtype=np.int64))
        rng = np.random.default_rng(seed)
        total = self.text_max_length()
        rows = []
        for _ in range(batch):
            ids = list(rng.choice(pool, size=int(rng.integers(2, max(3, min(12, total - 1))))))
            bos, eos = text.get("bos_token_id"), text.get("eos_token_id")
            if isinstance(bos, int) and bos in special:
                ids = [bos] + ids
            if isinstance(eos, int) and eos in special:
                ids = ids + [eos]
            rows.append(ids[:total])
        width = total if self.spec.pad_to_max_length else max(len(r) for r in rows)
        pad = int(text.get("pad_token_id") or 0) if isinstance(text.get("pad_token_id"), int) else 0
        ids = np.full((batch, width), pad, dtype=np.int64)
        mask = np.zeros((batch, width), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = row, 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        return {name: feeds[name] for name in self.spec.text_inputs}

    def _random_images(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        size = self.image_size()
        rng = np.random.default_rng(seed)
        return {"pixel_values": rng.standard_normal((batch, 3, size, size)).astype(np.float32)}

    def _random_captions(self, batch: int, seed: int) -> dict[str, np.ndarray]:
        if not self.has_tokenizer:
            return self.token_id_feeds(batch, seed)
        rng = np.random.default_rng(seed)
        texts = ["a " + " ".join(rng.choice(CAPTION_WORDS, size=int(rng.integers(1, 6))))
                 for _ in range(batch)]
        return self.text_feeds(texts)

    # ---- data -----------------------------------------------------------------------------
    def task_data(self, limit: int | None = None) -> tuple[list, list[int], list[str]]:
        """(images, labels, class prompts) of the zero-shot evaluation set."""
        if self._task_data is None:
            self._task_data = self._load_task_data()
        images, labels, prompts = self._task_data
        if limit:
            images, labels = images[:limit], labels[:limit]
        return list(images), list(labels), list(prompts)

    def _load_task_data(self) -> tuple[list, list[int], list[str]]:
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
        return images, labels, prompts

    def verification_feeds(self, component: str) -> list[dict[str, np.ndarray]]:
        if component == "vision":
            images, _, _ = self.task_data(limit=4)
            feeds = [self._random_images(2, 7)]
            if images:
                feeds = [self.image_feeds(images[:1]), self.image_feeds(images[1:4] or images[:1])] + feeds
            return feeds
        if component == "text":
            if not self.has_tokenizer:
                return [self.token_id_feeds(1, 3), self.token_id_feeds(3, 4), self.token_id_feeds(2, 5)]
            _, _, prompts = self.task_data(limit=1)
            prompts = prompts or ["a photo of a cat", "a dog", "a red car on a road"]
            return [self.text_feeds(prompts[:1]), self.text_feeds(prompts[:3]), self._random_captions(2, 5)]
        return super().verification_feeds(component)

    def calibration_feeds(self, component: str, path: Path | None = None,
                          limit: int | None = None) -> list[dict[str, np.ndarray]]:
        limit = limit or 64
        if component not in self.tower_names():
            raise CalibrationError(f"{self.family} has no component {component!r}")
        if component == "vision":
            if path is None:
                images, _, _ = self._calibration_images()
            else:
                images = calibration_images(path, limit).images  # folder or ImageFolder; unreadable skipped
            return [self.image_feeds([img]) for img in images[:limit]]
        if path is None:
            if not self.has_tokenizer:  # labelled in the bundle's preprocessing notes
                return [self.token_id_feeds(1, 1000 + i) for i in range(limit)]
            _, _, prompts = self.task_data()
            captions = prompts + [f"a photo of a {w}" for w in CAPTION_WORDS]
        else:
            path = Path(path)
            if path.is_dir() or modality_of(path):
                raise CalibrationError(f"--calib {path}: the text component needs captions",
                                       "pass a .txt file with one caption per line")
            if not self.has_tokenizer:
                raise CalibrationError(f"--calib {path}: captions need a tokenizer, and this model has none",
                                       "pass --processor DIR at convert time, or calibrate without --calib")
            captions = pp.read_captions(path)
        return [self.text_feeds([c]) for c in captions[:limit]]

    def _calibration_images(self):
        if self.dataset() == "demo-shapes":
            from mmdeploy.data import shapes as data

            images, labels = data.make_split("calib")
            return images, labels, data.class_prompts()
        return self.task_data()

    # ---- task -----------------------------------------------------------------------------
    def task_components(self) -> tuple[str, ...]:
        return () if self.single_tower else ("vision", "text")

    def _head(self) -> dict:
        return (self.bundle_metadata.get("head") if self.bundle_metadata else None) or self.head()

    def evaluate(self, runners: dict, limit: int | None = None, batch: int = 32) -> TaskResult | None:
        if self.single_tower or not self.has_tokenizer:
            return None  # no caption-based task without both towers and a tokenizer
        images, labels, prompts = self.task_data(limit)
        if not images:
            return None
        key = (limit, batch)
        cache = self._task_feeds
        if key not in cache:  # preprocess once: evaluate runs for PyTorch and for every target
            cache[key] = ([self.image_feeds(images[i:i + batch]) for i in range(0, len(images), batch)],
                          self.text_feeds(prompts))
        image_batches, text = cache[key]
        image_embeds = np.concatenate([_first_output(runners["vision"].run(f)) for f in image_batches])
        text_embeds = _first_output(runners["text"].run(text))
        head = self._head()
        logits = zero_shot_logits(image_embeds, text_embeds, head["logit_scale"], head.get("logit_bias"),
                                  scale_is_log=False)
        predictions = logits.argmax(axis=1).tolist()
        top1 = float(np.mean(np.asarray(predictions) == np.asarray(labels)))
        return TaskResult(name="zero-shot-top1", value=top1, n=len(labels), predictions=predictions,
                          extra={"dataset": self.dataset(), "classes": len(prompts), "logits": logits})

    def model_logits(self, image_feeds: dict, text_feeds: dict) -> np.ndarray:
        """logits_per_image from the full model's own forward (not the towers)."""
        import torch

        model = self.torch_model()
        pixel = torch.from_numpy(np.ascontiguousarray(image_feeds["pixel_values"]))
        text = self._torch_feeds(text_feeds)
        with torch.no_grad():
            if self.spec.forward_logits is not None:
                return self.spec.forward_logits(model, pixel, **text).float().numpy()
            images = self.spec.forward_image_kwargs(model, pixel) if self.spec.forward_image_kwargs \
                else {"pixel_values": pixel}
            return model(**images, **text).logits_per_image.float().numpy()

    def logits_parity(self, runners: dict, tolerance: float = 1e-4) -> dict:
        """logits_per_image rebuilt from ``runners`` (the exported towers) and the recorded head,
        against the model's own forward on the verification inputs.  Compared on the cosine
        scale (logits minus bias, over the scale); VerificationError beyond ``tolerance``."""
        if self.single_tower or not {"vision", "text"} <= set(runners):
            return {"skipped": "needs both towers"}
        image = self._random_images(2, 7)
        text = self.verification_feeds("text")[1]
        head = self._head()
        got = zero_shot_logits(_first_output(runners["vision"].run(image)), _first_output(runners["text"].run(text)),
                               head["logit_scale"], head.get("logit_bias"), scale_is_log=False)
        want = self.model_logits(image, text)
        error = float(np.abs(got - want).max()) / max(float(head["logit_scale"]), 1e-12)
        record = {"reference": f"{type(self.torch_model()).__name__}.forward", "shape": list(want.shape),
                  "max_abs_error": float(np.abs(got - want).max()), "max_cosine_error": error,
                  "tolerance": tolerance, "text": "tokenizer" if self.has_tokenizer else "token ids from the vocabulary",
                  "passed": error <= tolerance}
        if error > tolerance:
            raise VerificationError(
                f"logits_per_image from the exported towers and the recorded head differ from "
                f"{record['reference']} by {error:.2e} on the cosine scale (tolerance {tolerance:.0e})",
                "rerun with --debug; the head or a tower does not reproduce the model")
        return record


def _first_output(outputs: dict[str, np.ndarray]) -> np.ndarray:
    return next(iter(outputs.values()))


def _adapter_class(name: str) -> type:
    spec = TABLE[name]
    cls_name = "".join(part.capitalize() for part in name.replace("-", " ").split()) + "Adapter"
    return type(cls_name, (DualEncoderAdapter,), {"spec": spec, "family": spec.name, "description": spec.description,
                                                  "__doc__": spec.description, "__module__": __name__})


ClipAdapter = _adapter_class("clip")
SiglipAdapter = _adapter_class("siglip")
Siglip2Adapter = _adapter_class("siglip2")
MetaClip2Adapter = _adapter_class("metaclip-2")
ChineseClipAdapter = _adapter_class("chinese-clip")
AltClipAdapter = _adapter_class("altclip")
AlignAdapter = _adapter_class("align")
BlipItmAdapter = _adapter_class("blip-itm")
