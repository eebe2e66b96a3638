"""Every tiny model, checkpoint and bundle the tests build: one module (fixtures: conftest.py).

Nothing is downloaded and nothing is mocked: models are small random (seeded) networks of the
real classes; bundles are exported with the real torch.onnx.export and laid out as
`mmdeploy convert` writes them (OUT/manifest.json of kind model, OUT/<component>/{manifest.json,
model.onnx, reference.npz}); checkpoints are saved like Hugging Face folders.

- models: ``tiny_clip`` (in memory), ``tower_classes``/``towers`` (CLIP towers as modules)
- checkpoints: ``tiny_clip_checkpoint``, ``tiny_siglip_checkpoint``, ``tiny_clap_checkpoint``,
  ``tiny_blip_checkpoint``; ``convert_bundle`` (the real convert of one)
- bundles: ``quantize_bundle`` (family unset, preprocess/, fusable attention), ``split_bundle``
  (+ ``cached_bundle``/``cached_split``), ``tiny_clip_bundle`` (from ``TinyClipAdapter``'s
  components; ``shared_bundle``/``copy_bundle``), ``onnx_graph_artifact`` (a hand-built graph)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdeploy.artifact import (ArtifactRef, Manifest, TensorSpec, save_reference, sha256_path,
                               write_manifest)
from mmdeploy.models.base import Adapter, Component, TaskResult

IMAGE = 32
SEQ = 16
VOCAB = 100


# --------------------------------------------------------------------------- models


def tiny_clip(seed: int = 0, layers: int = 2, hidden: int = 32, image_size: int = IMAGE, patch: int = 8):
    """A small random CLIPModel (eval mode): 2 heads, vocabulary 100, text length 16, projection 16."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, vocab_size=VOCAB, max_position_embeddings=SEQ),
        vision_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=2, image_size=image_size, patch_size=patch),
        projection_dim=16)
    return CLIPModel(config).eval()


build_clip = tiny_clip  # the name the quantize/passes tests used


def tower_classes(model):
    """(Vision, Text) nn.Module classes mapping a CLIPModel's inputs to its projected embeddings."""
    import torch

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, pixel_values):
            return self.m.get_image_features(pixel_values=pixel_values).pooler_output

    class Text(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, input_ids, attention_mask):
            return self.m.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    return Vision, Text


def towers(model):
    """The two towers of ``model`` as module instances (eval mode)."""
    Vision, Text = tower_classes(model)
    return Vision().eval(), Text().eval()


# --------------------------------------------------------------------------- checkpoints


def tiny_clip_checkpoint(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from mmdeploy.demo.tokenizer import build_tokenizer, clip_text_ids, save_tokenizer

    torch.manual_seed(seed)
    tok = build_tokenizer()
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=len(tok), max_position_embeddings=16, **clip_text_ids(tok)),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    save_tokenizer(tok, folder)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return Path(folder)


def tiny_siglip_checkpoint(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    from mmdeploy.demo.tokenizer import build_tokenizer, clip_text_ids, save_tokenizer

    torch.manual_seed(seed)
    tok = build_tokenizer()
    config = SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=len(tok), max_position_embeddings=16, projection_size=32,
                         **clip_text_ids(tok)),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8))
    SiglipModel(config).save_pretrained(folder)
    save_tokenizer(tok, folder)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return Path(folder)


def _tokenizer(words, max_length):
    from mmdeploy.demo.tokenizer import build_tokenizer

    return build_tokenizer(words, max_length=max_length)


def tiny_clap_checkpoint(folder: Path) -> Path:
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from mmdeploy.data import synthetic_audio as audio_data

    tok = _tokenizer(audio_data.vocabulary(), 16)
    torch.manual_seed(0)
    config = ClapConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=24, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        audio_config=dict(spec_size=64, num_mel_bins=32, window_size=4, patch_size=4, patch_stride=(4, 4),
                          depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16,
                          hidden_size=32, num_hidden_layers=2),
        projection_dim=16)
    ClapModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    ClapFeatureExtractor(feature_size=32, sampling_rate=16000, hop_length=160, max_length_s=1,
                         fft_window_size=512, frequency_max=8000, truncation="rand_trunc",
                         padding="repeatpad").save_pretrained(folder)
    return Path(folder)


CAPTION_WORDS = "a an the of photo picture red green blue circle square star on with small large".split()


def _tiny_blip(folder: Path, model_class: str, words: list[str], max_length: int) -> Path:
    """A tiny random BLIP model saved like a real one (weights, tokenizer, processor), with wider
    weights than the default init so outputs depend on the image (and question) and vary in length."""
    import torch
    import transformers
    from transformers import BlipConfig, BlipImageProcessorPil

    tok = _tokenizer(words, 24)
    torch.manual_seed(0)
    config = BlipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         sep_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    model = getattr(transformers, model_class)(config).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.1)
    model.generation_config.max_length = max_length
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    BlipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)


def tiny_blip_checkpoint(folder: Path, max_length: int = 12) -> Path:
    return _tiny_blip(folder, "BlipForConditionalGeneration", CAPTION_WORDS, max_length)


# --------------------------------------------------------------------------- bundles


VQA_WORDS = CAPTION_WORDS + "what shape color is in how many are there large or small yes no one two ?".split()


def tiny_blip_vqa_checkpoint(folder: Path, max_length: int = 8) -> Path:
    """A tiny random ``BlipForQuestionAnswering`` saved like a real one (weights, tokenizer, processor)."""
    return _tiny_blip(folder, "BlipForQuestionAnswering", VQA_WORDS, max_length)


def convert_bundle(checkpoint: Path, out: Path) -> Path:
    """The real convert pipeline (export, onnxsim, verification, task parity) into a bundle."""
    from mmdeploy.stages.convert import convert

    convert(checkpoint, out)
    return out


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


# --------------------------------------------------------------------------- runners


class OpenVINORunner:
    """OpenVINO straight from an ONNX component artifact (until the openvino backend lands)."""

    name = "openvino"

    def __init__(self, artifact_dir: Path):
        import openvino as ov

        from mmdeploy.artifact import read_manifest

        manifest = read_manifest(artifact_dir)
        self.compiled = ov.Core().compile_model(str(Path(artifact_dir) / manifest.metadata["model_file"]), "CPU",
                                               {"INFERENCE_PRECISION_HINT": "f32"})
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def run(self, feeds):
        result = self.compiled({n: np.ascontiguousarray(feeds[n]) for n in self.input_names})
        return {o.get_any_name(): np.asarray(v) for o, v in result.items()}


def openvino_runner(artifact_dir: Path):
    """The backends' OpenVINO runner when it exists, else :class:`OpenVINORunner`."""
    try:
        from mmdeploy.backends import get_backend

        backend = get_backend("openvino")
    except ImportError:
        return OpenVINORunner(artifact_dir)
    ok, _ = backend.available()
    if not ok:
        return OpenVINORunner(artifact_dir)
    try:
        return backend.load(Path(artifact_dir))  # loads ONNX directly if the backend supports it
    except Exception:  # noqa: BLE001 - the backend may want a compiled IR artifact
        return OpenVINORunner(artifact_dir)


def _export_towers(out: Path, specs: dict, family: str | None, batches, example_batch: int = 1,
                   fusable: bool = False, component_metadata: bool = True, **bundle_fields) -> Path:
    """Export each tower in ``specs`` ({name: (module, inputs, output, make_feeds, axes, in_specs)})
    into ``out/<name>`` with PyTorch reference outputs for ``batches``; then the bundle manifest."""
    import contextlib

    import torch

    from mmdeploy.models.attention import fusable_attention

    out.mkdir(parents=True, exist_ok=True)
    refs = []
    for name, (module, inputs, output, make, axes, in_specs) in specs.items():
        d = out / name
        d.mkdir(exist_ok=True)
        example = make(example_batch)
        with torch.no_grad(), (fusable_attention(module) if fusable else contextlib.nullcontext()):
            torch.onnx.export(module, tuple(torch.from_numpy(example[i]) for i in inputs), str(d / "model.onnx"),
                              input_names=inputs, output_names=[output], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
            cases = []
            for b in batches:
                feeds = make(b)
                cases.append((feeds, {output: module(*(torch.from_numpy(feeds[i]) for i in inputs)).numpy()}))
        save_reference(d, cases)
        if in_specs is None:
            in_specs = [TensorSpec(name=i, dtype=str(example[i].dtype), shape=["batch"] + list(example[i].shape[1:]))
                        for i in inputs]
        write_manifest(d, Manifest(kind="component", name=name, family=family, format="onnx",
                                   inputs=in_specs, outputs=[TensorSpec(name=output, dtype="float32", shape=["batch", 16])],
                                   metadata={"model_file": "model.onnx",
                                             **({"component": name} if component_metadata else {})}))
        refs.append(ArtifactRef(path=name, component=name, format="onnx"))
    write_manifest(out, Manifest(kind="model", name="tiny-clip", family=family, artifacts=refs, **bundle_fields))
    return out


def _write_preprocess(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    folder.mkdir(parents=True)
    CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}).save_pretrained(folder)
    words = ["[PAD]", "[UNK]", "a", "photo", "of", "red", "green", "blue", "circle", "square", "triangle", "the"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)


def quantize_bundle(out: Path, seed: int = 0, fusable: bool = True) -> Path:
    """The tiny CLIP's towers as a bundle for the quantize tests: ``family`` unset (so the generic
    path, an embedding-cosine budget, is exercised), preprocess/ files, attention exported in the
    form ONNX Runtime fuses; text of length 16, half padded."""
    Vision, Text = tower_classes(tiny_clip(seed))
    rng = np.random.default_rng(seed)

    def vision_feeds(b):
        return {"pixel_values": rng.standard_normal((b, 3, IMAGE, IMAGE)).astype(np.float32)}

    def text_feeds(b):
        ids = rng.integers(2, 12, size=(b, SEQ)).astype(np.int64)
        mask = np.ones((b, SEQ), dtype=np.int64)
        mask[:, SEQ // 2:] = 0
        return {"input_ids": ids, "attention_mask": mask}

    out = Path(out)
    out.mkdir(parents=True)
    _write_preprocess(out / "preprocess")
    batch = {0: "batch"}
    specs = {
        "vision": (Vision(), ["pixel_values"], "image_embeds", vision_feeds,
                   {"pixel_values": batch, "image_embeds": batch},
                   [TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, IMAGE, IMAGE])]),
        "text": (Text(), ["input_ids", "attention_mask"], "text_embeds", text_feeds,
                 {"input_ids": batch, "attention_mask": batch, "text_embeds": batch},
                 [TensorSpec(name="input_ids", dtype="int64", shape=["batch", SEQ]),
                  TensorSpec(name="attention_mask", dtype="int64", shape=["batch", SEQ])]),
    }
    return _export_towers(out, specs, None, (1, 3), example_batch=2, fusable=fusable, component_metadata=False,
                          metadata={"head": {"logit_scale": 4.6}})


def write_images(folder: Path, n: int = 6, size: int = 40) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def split_bundle(out: Path, layers: int = 2, image_size: int = 32, cases: int = 2) -> Path:
    """The tiny CLIP's towers as a ``family: clip`` bundle for the split tests (text of length 8)."""
    Vision, Text = tower_classes(tiny_clip(layers=layers, image_size=image_size))
    rng = np.random.default_rng(0)
    specs = {
        "vision": (Vision(), ["pixel_values"], "image_embeds",
                   lambda b: {"pixel_values": rng.standard_normal((b, 3, image_size, image_size)).astype(np.float32)},
                   {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}, None),
        "text": (Text(), ["input_ids", "attention_mask"], "text_embeds",
                 lambda b: {"input_ids": rng.integers(1, 99, (b, 8)).astype(np.int64),
                            "attention_mask": np.ones((b, 8), np.int64)},
                 {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                  "text_embeds": {0: "batch"}}, None),
    }
    return _export_towers(Path(out), specs, "clip", [1, 2][:cases])


def cached_bundle(tmp_path_factory, layers: int = 2) -> Path:
    """One split-test bundle per test session (export takes a few seconds)."""
    root = tmp_path_factory.getbasetemp() / f"split-tiny-bundle-{layers}"
    if not (root / "manifest.json").is_file():
        split_bundle(root, layers=layers)
    return root


def cached_split(tmp_path_factory, component: str = "vision", at: str = "block:0", compress: str = "none") -> Path:
    from mmdeploy.split.build import split_component

    out = tmp_path_factory.getbasetemp() / f"split-{component}-{at.replace(':', '')}-{compress}"
    if not (out / "manifest.json").is_file():
        split_component(cached_bundle(tmp_path_factory), out, component=component, at=at, compress=compress)
    return out


def _image_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"pixel_values": rng.standard_normal((batch, 3, IMAGE, IMAGE)).astype(np.float32)}


def _text_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB - 1, size=(batch, SEQ)).astype(np.int64)
    ids[:, -1] = VOCAB - 1  # CLIP pools at the highest id (eos)
    return {"input_ids": ids, "attention_mask": np.ones((batch, SEQ), dtype=np.int64)}


class TinyClipAdapter(Adapter):
    """Real torch components of a tiny CLIP; a toy zero-shot task over random images."""

    family = "clip"

    def __init__(self, source: Path | None = None, seed: int = 0, **kwargs):
        super().__init__(Path(source or "."), **kwargs)
        self.model = tiny_clip(seed)
        self._components = None

    def components(self) -> dict[str, Component]:
        if self._components is None:
            vision, text = towers(self.model)
            self._components = {
                "vision": Component("vision", vision, ["pixel_values"], ["image_embeds"],
                                    {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}},
                                    _image_inputs, modality="image"),
                "text": Component("text", text, ["input_ids", "attention_mask"], ["text_embeds"],
                                  {"input_ids": {0: "batch", 1: "sequence"},
                                   "attention_mask": {0: "batch", 1: "sequence"},
                                   "text_embeds": {0: "batch"}}, _text_inputs, modality="text"),
            }
        return self._components

    def task_components(self):
        return ("vision", "text")

    def evaluate(self, runners, limit=None) -> TaskResult:
        images = _image_inputs(limit or 24, 7)
        prompts = _text_inputs(5, 8)
        img = np.concatenate([runners["vision"].run({k: v[i:i + 8] for k, v in images.items()})["image_embeds"]
                              for i in range(0, len(images["pixel_values"]), 8)])
        txt = runners["text"].run(prompts)["text_embeds"]
        img = img / np.linalg.norm(img, axis=1, keepdims=True)
        txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
        pred = (img @ txt.T).argmax(axis=1).tolist()
        return TaskResult("zero-shot-top1", float(np.mean(np.array(pred) == 0)), len(pred), pred)


def export_component(component: Component, out: Path, opset: int = 17, onnx_file: str = "model.onnx",
                     family: str = "clip", model=None) -> Path:
    """torch.onnx.export one component and wrap it as an ONNX component artifact."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    sample = component.make_inputs(2, 0)
    args = tuple(torch.from_numpy(sample[n]) for n in component.input_names)
    torch.onnx.export(component.module, args, str(out / onnx_file), input_names=component.input_names,
                      output_names=component.output_names, dynamic_axes=component.dynamic_axes,
                      opset_version=opset, dynamo=False)
    return wrap_onnx(out, component, onnx_file=onnx_file, family=family)


def wrap_onnx(out: Path, component: Component, onnx_file: str = "model.onnx", family: str = "clip",
              cases=None) -> Path:
    """Write reference.npz (PyTorch outputs) and the component manifest for ``out/onnx_file``."""
    from mmdeploy.backends.torch import TorchRunner

    if cases is None:
        ref = TorchRunner(component)
        cases = [(f, ref.run(f)) for f in (component.make_inputs(1, 101), component.make_inputs(3, 102))]
    save_reference(out, cases)
    feeds, outputs = cases[0]

    def spec(name, value, axes):
        shape = [axes.get(i, int(d)) for i, d in enumerate(np.shape(value))]
        return TensorSpec(name=name, dtype=np.asarray(value).dtype.name, shape=shape)

    manifest = Manifest(
        kind="component", name=component.name, family=family, format="onnx", precision="fp32",
        source={"path": "tiny-clip-in-memory", "sha256": sha256_path(out / onnx_file)},
        inputs=[spec(n, feeds[n], component.dynamic_axes.get(n, {})) for n in component.input_names],
        outputs=[spec(n, outputs[n], component.dynamic_axes.get(n, {})) for n in component.output_names],
        metadata={"model_file": onnx_file, "component": component.name},
        parity={"passed": True})
    write_manifest(out, manifest)
    return out


def tiny_clip_bundle(root: Path, adapter: TinyClipAdapter | None = None, components=("vision", "text"),
                     source: str | None = None) -> Path:
    """A model bundle laid out like `mmdeploy convert` output: <component>/ ONNX artifacts."""
    adapter = adapter or TinyClipAdapter()
    root.mkdir(parents=True, exist_ok=True)
    refs = []
    for name in components:
        export_component(adapter.components()[name], root / name)
        refs.append(ArtifactRef(path=name, component=name, format="onnx", precision="fp32"))
    write_manifest(root, Manifest(kind="model", name="tiny-clip", family="clip",
                                  source={"path": source or "tiny-clip-in-memory"}, artifacts=refs))
    return root


_SHARED: dict[str, Path] = {}


def shared_bundle() -> Path:
    """One tiny-CLIP bundle per test process (read-only: copy it before writing into it)."""
    import tempfile

    if "bundle" not in _SHARED:
        _SHARED["tmp"] = tempfile.TemporaryDirectory(prefix="mmdeploy-backends-")  # removed on exit
        root = Path(_SHARED["tmp"].name) / "bundle"
        _SHARED["adapter"] = TinyClipAdapter()
        tiny_clip_bundle(root, _SHARED["adapter"])
        _SHARED["bundle"] = root
    return _SHARED["bundle"]


def shared_adapter() -> TinyClipAdapter:
    shared_bundle()
    return _SHARED["adapter"]


def copy_bundle(dest: Path) -> Path:
    import shutil

    shutil.copytree(shared_bundle(), dest)
    return dest


def onnx_graph_artifact(out: Path, nodes, inputs, outputs, cases, opset: int = 17, extra_opsets=(),
                        initializers=()) -> Path:
    """A hand-built ONNX graph wrapped as a component artifact (for unsupported ops, dtypes)."""
    import onnx
    from onnx import helper

    out.mkdir(parents=True, exist_ok=True)
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                    *(helper.make_opsetid(d, 1) for d in extra_opsets)])
    model.ir_version = 8
    onnx.save(model, str(out / "model.onnx"))
    save_reference(out, cases)

    def spec(vi):
        dims = [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)).name
        return TensorSpec(name=vi.name, dtype=dtype, shape=dims)

    write_manifest(out, Manifest(kind="component", name=out.name, format="onnx",
                                 inputs=[spec(v) for v in inputs], outputs=[spec(v) for v in outputs],
                                 metadata={"model_file": "model.onnx", "component": out.name}))
    return out
