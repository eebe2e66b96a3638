"""Tiny real models wrapped as mmdeploy artifacts, for the backend and compile tests.

``tiny_clip_bundle(dir)`` exports the two towers of a small random CLIPModel with
torch.onnx.export, stores reference outputs and writes component and bundle manifests, the way
`mmdeploy convert` lays a bundle out.  ``TinyClipAdapter`` exposes the same towers as real
torch Components (for TFLite, which converts from PyTorch) and a toy zero-shot task.
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


def tiny_clip(seed: int = 0, family: str = "clip"):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=VOCAB, max_position_embeddings=SEQ),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=IMAGE, patch_size=8),
        projection_dim=16)
    return CLIPModel(config).eval()


def _towers(model):
    import torch

    class Vision(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m.get_image_features(pixel_values=pixel_values).pooler_output

    class Text(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output

    return Vision(model).eval(), Text(model).eval()


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
            vision, text = _towers(self.model)
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
        root = Path(tempfile.mkdtemp(prefix="mmdeploy-backends-")) / "bundle"
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
