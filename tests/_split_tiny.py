"""A tiny CLIP model bundle in the layout `mmdeploy convert` writes (for the split tests).

Built here rather than with `convert` so these tests do not depend on another branch: two
components (vision, text) exported with torch.onnx.export(dynamo=False, opset 17), each with a
component manifest and reference.npz holding PyTorch outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_clip(layers: int = 2, hidden: int = 32, image_size: int = 32, patch: int = 8, seed: int = 0):
    import torch
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                         num_attention_heads=2, vocab_size=100, max_position_embeddings=16),
        vision_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                           num_attention_heads=2, image_size=image_size, patch_size=patch),
        projection_dim=16)
    torch.manual_seed(seed)
    return CLIPModel(cfg).eval()


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


def write_bundle(out: Path, layers: int = 2, image_size: int = 32, cases: int = 2) -> Path:
    import torch

    from mmdeploy.artifact import (ArtifactRef, Manifest, TensorSpec, save_reference, write_manifest)

    model = tiny_clip(layers=layers, image_size=image_size)
    Vision, Text = tower_classes(model)

    rng = np.random.default_rng(0)
    specs = {
        "vision": (Vision(), ["pixel_values"], "image_embeds",
                   lambda b: {"pixel_values": rng.standard_normal((b, 3, image_size, image_size)).astype(np.float32)},
                   {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}),
        "text": (Text(), ["input_ids", "attention_mask"], "text_embeds",
                 lambda b: {"input_ids": rng.integers(1, 99, (b, 8)).astype(np.int64),
                            "attention_mask": np.ones((b, 8), np.int64)},
                 {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"},
                  "text_embeds": {0: "batch"}}),
    }
    out.mkdir(parents=True, exist_ok=True)
    refs = []
    for name, (module, inputs, output, make, axes) in specs.items():
        d = out / name
        d.mkdir(exist_ok=True)
        example = make(1)
        with torch.no_grad():
            torch.onnx.export(module, tuple(torch.from_numpy(example[i]) for i in inputs), str(d / "model.onnx"),
                              input_names=inputs, output_names=[output], dynamic_axes=axes, opset_version=17,
                              dynamo=False)
            ref_cases = []
            for b in [1, 2][:cases]:
                feeds = make(b)
                got = module(*[torch.from_numpy(feeds[i]) for i in inputs]).numpy()
                ref_cases.append((feeds, {output: got}))
        save_reference(d, ref_cases)
        ins = [TensorSpec(name=i, dtype=str(example[i].dtype), shape=["batch"] + list(example[i].shape[1:]))
               for i in inputs]
        write_manifest(d, Manifest(kind="component", name=name, family="clip", format="onnx",
                                   inputs=ins, outputs=[TensorSpec(name=output, dtype="float32", shape=["batch", 16])],
                                   metadata={"model_file": "model.onnx", "component": name}))
        refs.append(ArtifactRef(path=name, component=name, format="onnx"))
    write_manifest(out, Manifest(kind="model", name="tiny-clip", family="clip", artifacts=refs))
    return out


def cached_bundle(tmp_path_factory, layers: int = 2) -> Path:
    """One tiny bundle per test session (export takes a few seconds)."""
    root = tmp_path_factory.getbasetemp() / f"split-tiny-bundle-{layers}"
    if not (root / "manifest.json").is_file():
        write_bundle(root, layers=layers)
    return root


def cached_split(tmp_path_factory, component: str = "vision", at: str = "block:0", compress: str = "none") -> Path:
    from mmdeploy.split.build import split_component

    out = tmp_path_factory.getbasetemp() / f"split-{component}-{at.replace(':', '')}-{compress}"
    if not (out / "manifest.json").is_file():
        split_component(cached_bundle(tmp_path_factory), out, component=component, at=at, compress=compress)
    return out
