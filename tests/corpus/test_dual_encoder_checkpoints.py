"""Dual-encoder checkpoints as people save them (issue 12): the model alone
(``save_pretrained`` without tokenizer or image-processor files), processor files taken from
another folder, single-tower checkpoints, and towers missing their weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from _tiny_dual import tiny_dual_encoder
from mmdeploy.artifact import read_manifest
from mmdeploy.errors import CheckpointError, InputError


@pytest.fixture(scope="module")
def bare(tmp_path_factory) -> dict[str, Path]:
    """``model.save_pretrained(folder)`` alone: config.json + model.safetensors."""
    root = tmp_path_factory.mktemp("bare")
    return {f: tiny_dual_encoder(f, root / f, processor=False) for f in ("clip", "siglip", "align")}


@pytest.fixture(scope="module")
def full_clip(tmp_path_factory) -> Path:
    return tiny_dual_encoder("clip", tmp_path_factory.mktemp("full") / "clip")


@pytest.mark.parametrize("family", ["clip", "siglip", "align"])
def test_model_alone_converts_with_derived_preprocessing(cli, bare, family, tmp_path):
    """Was `internal error: OSError: Can't load image processor`."""
    out = tmp_path / "out"
    result = cli("convert", bare[family], "--output", out)
    assert result.returncode == 0, result.stderr
    assert "image processor derived from config.json" in result.stderr
    assert "no tokenizer" in result.stderr
    top = read_manifest(out)
    prep = top.metadata["preprocessing"]
    assert prep["source"] == "derived" and len(prep["notes"]) == 2
    assert top.parity["task"] == {"skipped": "the family has no evaluation data here"} or "skipped" in top.parity["task"]
    assert top.parity["logits_per_image"]["passed"]  # with token ids drawn from the vocabulary
    assert top.parity["logits_per_image"]["text"] == "token ids from the vocabulary"
    assert (out / "preprocess" / "preprocessor_config.json").is_file()
    assert not (out / "preprocess" / "tokenizer.json").exists()
    for name in ("vision", "text"):
        assert read_manifest(out / name).parity["passed"]


def test_derived_processor_is_the_family_standard(bare):
    from mmdeploy.models import resolve
    from mmdeploy.models.dual_encoder import OPENAI_MEAN, OPENAI_STD

    clip = resolve(bare["clip"]).image_processor
    assert list(clip.image_mean) == OPENAI_MEAN and list(clip.image_std) == OPENAI_STD
    assert clip.crop_size == {"height": 32, "width": 32}
    siglip = resolve(bare["siglip"]).image_processor
    assert list(siglip.image_mean) == [0.5] * 3 and siglip.size == {"height": 32, "width": 32}
    align = resolve(bare["align"]).image_processor
    assert align.rescale_offset and not align.do_normalize


def test_derived_processor_matches_the_saved_one(bare, full_clip):
    """The derived CLIP processor preprocesses a real photo exactly as the saved one does."""
    from mmdeploy.models import resolve
    from mmdeploy.models.preprocess import skimage_photos

    photo = [skimage_photos()[1][1]]
    derived = resolve(bare["clip"]).image_feeds(photo)["pixel_values"]
    saved = resolve(full_clip).image_feeds(photo)["pixel_values"]
    np.testing.assert_allclose(derived, saved, atol=1e-6)


def test_quantize_a_bundle_without_tokenizer(bare, tmp_path):
    """Text calibration from token ids drawn from the vocabulary (labelled in the bundle)."""
    from mmdeploy.stages.convert import convert
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    convert(bare["siglip"], tmp_path / "fp32")
    m = quantize(tmp_path / "fp32", tmp_path / "int8", QuantizeOptions(latency_runs=0, metric="cosine",
                                                                       method="ort-static"),
                 log=lambda *a, **k: None)
    assert m.precision == "int8"
    assert "token ids drawn from the vocabulary" in " ".join(m.metadata["preprocessing"]["notes"])


def test_processor_dir_supplies_the_missing_files(bare, full_clip, tmp_path):
    from mmdeploy.models import resolve

    adapter = resolve(bare["clip"], options={"processor": str(full_clip)})
    assert adapter.preprocessing["source"] == "processor-dir"
    names = {p.name for p in adapter.preprocess_files()}
    assert {"tokenizer.json", "preprocessor_config.json", "config.json"} <= names
    assert adapter.metadata()["preprocessing"]["source"] == "processor-dir"
    assert adapter.evaluate({c: _torch(adapter, c) for c in ("vision", "text")}) is not None
    with pytest.raises(InputError, match="not a folder"):
        resolve(bare["clip"], options={"processor": str(tmp_path / "nowhere")}).preprocessing
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no tokenizer"):
        resolve(bare["clip"], options={"processor": str(empty)}).preprocessing


def _torch(adapter, name):
    from mmdeploy.backends.torch import TorchRunner

    return TorchRunner(adapter.components()[name])


@pytest.mark.parametrize("cls,component", [("CLIPVisionModelWithProjection", "vision"),
                                           ("CLIPTextModelWithProjection", "text"),
                                           ("SiglipVisionModel", "vision"), ("SiglipTextModel", "text")])
def test_single_tower_checkpoints(cls, component, tmp_path):
    import torch
    import transformers

    from mmdeploy.demo.tokenizer import build_tokenizer, clip_text_ids, save_tokenizer
    from mmdeploy.stages.convert import convert

    torch.manual_seed(0)
    tok = build_tokenizer()
    model_cls = getattr(transformers, cls)
    kwargs = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)
    if component == "vision":
        kwargs.update(image_size=32, patch_size=8)
    else:
        kwargs.update(vocab_size=len(tok), max_position_embeddings=16, **clip_text_ids(tok))
    if "WithProjection" in cls:
        kwargs["projection_dim"] = 16
    model_cls(model_cls.config_class(**kwargs)).save_pretrained(tmp_path / "ckpt")
    if component == "text":
        save_tokenizer(tok, tmp_path / "ckpt")
    m = convert(tmp_path / "ckpt", tmp_path / "out")
    family = "clip" if cls.startswith("CLIP") else "siglip"
    assert m.family == family and [a.component for a in m.artifacts] == [component]
    assert read_manifest(tmp_path / "out" / component).parity["passed"]
    assert m.metadata["head"] is None and m.metadata["task"] is None
    assert "task" not in m.parity


def test_missing_tower_weights_is_one_line(cli, full_clip, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "no-text"
    shutil.copytree(full_clip, folder)
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("text_model.")}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    out = tmp_path / "out"
    result = cli("convert", folder, "--output", out)
    assert result.returncode == 2 and not out.exists()
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and "model.safetensors" in lines[-1] and "text_model" in lines[-1]
    assert "Traceback" not in result.stderr

    from mmdeploy.models import resolve

    with pytest.raises(CheckpointError, match="lacks"):
        resolve(folder).components()


def test_broken_tokenizer_files_are_one_line(full_clip, tmp_path):
    from mmdeploy.models import resolve

    folder = tmp_path / "broken-tok"
    shutil.copytree(full_clip, folder)
    (folder / "tokenizer.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="tokenizer files"):
        resolve(folder).text_feeds(["a cat"])
