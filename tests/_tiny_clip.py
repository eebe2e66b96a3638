"""A tiny random CLIP exported as an mmdeploy bundle (vision + text), for quantize tests.

Laid out as `mmdeploy convert` writes it: OUT/manifest.json (kind model), OUT/preprocess/,
OUT/<component>/{manifest.json, model.onnx, reference.npz}.  Built with real torch, real
torch.onnx.export and real manifests; ``family`` is left unset so the generic path (embedding
cosine budget) is exercised whatever family adapters exist.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from _split_tiny import tower_classes

IMAGE = 32
SEQ = 16


def build_clip(seed: int = 0):
    from _split_tiny import tiny_clip

    return tiny_clip(hidden=32, layers=2, image_size=IMAGE, patch=8, seed=seed)


def _write_preprocess(folder: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    folder.mkdir(parents=True)
    CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}).save_pretrained(folder)
    words = ["[PAD]", "[UNK]", "a", "photo", "of", "red", "green", "blue", "circle", "square", "triangle", "the"]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)


def write_bundle(out: Path, seed: int = 0, fusable: bool = True) -> Path:
    """Export the tiny CLIP's towers into a bundle at ``out``; returns ``out``."""
    import torch

    from mmdeploy.artifact import ArtifactRef, Manifest, TensorSpec, save_reference, write_manifest
    from mmdeploy.models.attention import fusable_attention

    model = build_clip(seed)
    Vision, Text = tower_classes(model)

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
    specs = {
        "vision": (Vision(), ["pixel_values"], ["image_embeds"], vision_feeds,
                   [TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, IMAGE, IMAGE])]),
        "text": (Text(), ["input_ids", "attention_mask"], ["text_embeds"], text_feeds,
                 [TensorSpec(name="input_ids", dtype="int64", shape=["batch", SEQ]),
                  TensorSpec(name="attention_mask", dtype="int64", shape=["batch", SEQ])]),
    }
    refs = []
    for name, (module, inputs, outputs, make, in_specs) in specs.items():
        d = out / name
        d.mkdir()
        example = make(2)
        axes = {n: {0: "batch"} for n in inputs + outputs}
        with torch.no_grad(), (fusable_attention(module) if fusable else _null()):
            torch.onnx.export(module, tuple(torch.from_numpy(example[n]) for n in inputs), str(d / "model.onnx"),
                              input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=17,
                              dynamo=False)
            cases = []
            for b in (1, 3):
                feeds = make(b)
                got = module(*(torch.from_numpy(feeds[n]) for n in inputs))
                cases.append((feeds, {outputs[0]: got.numpy()}))
        save_reference(d, cases)
        write_manifest(d, Manifest(kind="component", name=name, format="onnx", precision="fp32",
                                   inputs=in_specs, metadata={"model_file": "model.onnx"},
                                   outputs=[TensorSpec(name=outputs[0], dtype="float32", shape=["batch", 16])]))
        refs.append(ArtifactRef(path=name, component=name, format="onnx", precision="fp32"))
    write_manifest(out, Manifest(kind="model", name="tiny-clip", artifacts=refs,
                                 metadata={"head": {"logit_scale": 4.6}}))
    return out


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def write_images(folder: Path, n: int = 6, size: int = 40) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder
