"""The dual-encoder adapter, per family: detect → convert (both towers and logits_per_image
verified against PyTorch) → quantize → compile to OpenVINO and TFLite, on tiny random
checkpoints built in fixtures (tests/_tiny_dual.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from _tiny_dual import FAMILIES, tiny_dual_encoder
from mmdeploy.artifact import read_manifest, verify_files
from mmdeploy.errors import UnsupportedError

MODEL_CLASS = {"clip": "CLIPModel", "siglip": "SiglipModel", "siglip2": "Siglip2Model",
               "metaclip-2": "MetaClip2Model", "chinese-clip": "ChineseCLIPModel", "altclip": "AltCLIPModel",
               "align": "AlignModel", "blip-itm": "BlipForImageTextRetrieval"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("dual")
    return {f: tiny_dual_encoder(f, root / f) for f in FAMILIES}


@pytest.fixture(scope="module")
def bundles(checkpoints, tmp_path_factory) -> dict[str, Path]:
    """`convert` of every family (built lazily, once per family; treat as read-only)."""
    return _Lazy(lambda family, out: convert(checkpoints[family], out), tmp_path_factory.mktemp("dual-bundles"))


@pytest.fixture(scope="module")
def compiled(bundles, tmp_path_factory) -> dict[str, Path]:
    """`compile BUNDLE --target openvino,tflite` of every family (lazily, once per family)."""
    from mmdeploy.stages.compile import compile_artifact

    return _Lazy(lambda family, out: compile_artifact(bundles[family], ["openvino", "tflite"], out),
                 tmp_path_factory.mktemp("dual-compiled"))


def convert(source, out):
    from mmdeploy.stages.convert import convert as run

    return run(source, out)


class _Lazy(dict):
    def __init__(self, build, root):
        super().__init__()
        self.build, self.root = build, root

    def __missing__(self, family):
        out = self.root / family
        self.build(family, out)
        self[family] = out
        return out


@pytest.mark.parametrize("family", FAMILIES)
def test_detected_from_config(checkpoints, family):
    from mmdeploy.models import resolve

    adapter = resolve(checkpoints[family])
    assert adapter.family == family
    assert set(adapter.components()) == {"vision", "text"}


@pytest.mark.parametrize("family", FAMILIES)
def test_convert_verifies_towers_and_logits(bundles, family):
    bundle = bundles[family]
    top = read_manifest(bundle)
    assert top.family == family and verify_files(bundle) == []
    meta = top.metadata
    assert meta["dual_encoder"]["model_class"] == MODEL_CLASS[family]
    assert meta["head"]["logit_scale"] > 0 and meta["preprocessing"]["source"] == "checkpoint"
    for name in ("vision", "text"):
        m = read_manifest(bundle / name)
        assert m.parity["passed"] and max(m.parity["batch_sizes"]) > 1
        assert all(v["max_abs"] < 1e-4 and v["cosine"] > 0.9999 for v in m.parity["outputs"].values())
    assert [t.name for t in read_manifest(bundle / "text").inputs] == list(meta["dual_encoder"]["text_inputs"])
    logits = top.parity["logits_per_image"]
    assert logits["passed"] and logits["max_cosine_error"] < 1e-4
    assert top.parity["task"]["top1_agreement"] == 1.0


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_compile_openvino_and_tflite(compiled, family):
    """Both towers compile; each target's parity and task agreement with PyTorch (the TFLite
    tower comes from the PyTorch module through litert-torch, the checkpoint re-read)."""
    bundle = compiled[family]
    for target in ("openvino", "tflite"):
        for name in ("vision", "text"):
            m = read_manifest(bundle / f"{name}-{target}")
            assert m.parity["passed"], (target, name)
            assert m.parity["task"]["agreement_with_pytorch"] >= 0.99


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_rebuilt_from_onnx_equal_model_forward(checkpoints, bundles, family):
    """logits_per_image from the ONNX towers and the recorded head, on real photos and
    captions, equal the transformers model's own forward (independently of convert's check)."""
    import torch
    import transformers

    from mmdeploy.backends import load_runner
    from mmdeploy.models import adapter_for_bundle
    from mmdeploy.models.dual_encoder import zero_shot_logits

    bundle = bundles[family]
    adapter = adapter_for_bundle(bundle)
    images, _, prompts = adapter.task_data(limit=3)
    pixel, text = adapter.image_feeds(images), adapter.text_feeds(prompts[:4])
    img = load_runner(bundle / "vision").run(pixel)["image_embeds"]
    txt = load_runner(bundle / "text").run(text)["text_embeds"]
    head = read_manifest(bundle).metadata["head"]
    got = zero_shot_logits(img, txt, head["logit_scale"], head["logit_bias"], scale_is_log=False)
    model = getattr(transformers, MODEL_CLASS[family]).from_pretrained(checkpoints[family]).eval()
    pv = torch.from_numpy(pixel["pixel_values"])
    feeds = {k: torch.from_numpy(v) for k, v in text.items()}
    with torch.no_grad():
        if family == "blip-itm":
            want = model(pixel_values=pv, use_itm_head=False, **feeds).itm_score
        elif family == "siglip2":  # the processor's patches for a square image at the native grid
            b, c, h, w = pv.shape
            patches = pv.reshape(b, c, h // 8, 8, w // 8, 8).permute(0, 2, 4, 3, 5, 1).reshape(b, -1, 8 * 8 * c)
            want = model(pixel_values=patches, pixel_attention_mask=torch.ones(b, patches.shape[1], dtype=torch.long),
                         spatial_shapes=torch.tensor([[h // 8, w // 8]] * b), **feeds).logits_per_image
        else:
            want = model(pixel_values=pv, **feeds).logits_per_image
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4 * max(1.0, head["logit_scale"]))


@pytest.mark.parametrize("family", FAMILIES)
def test_quantize_int8(bundles, family, tmp_path):
    """Static int8 QDQ, guarded by embedding cosine to fp32: random tiny weights make zero-shot
    top-1 chance-level, no ground for a task budget.  (The default, auto, may keep a tiny tower
    in bf16 where that measured fastest: tests/test_autoselect.py covers its choice.)"""
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    # budget 0.95: a random tiny tower has samples of no direction (ALIGN's worst: 0.957 at mean 0.99)
    m = quantize(bundles[family], tmp_path / "int8", QuantizeOptions(latency_runs=0, metric="cosine",
                                                                     method="ort-static", accuracy_budget=0.95),
                 log=lambda *a, **k: None)
    assert m.precision == "int8" and m.family == family
    assert [a.component for a in m.artifacts] == ["vision", "text"]
    for name in ("vision", "text"):
        assert read_manifest(tmp_path / "int8" / name).passes[-1].name == "quantize"


@pytest.mark.parametrize("family", ["clip", "siglip", "metaclip-2"])
def test_patch_embedding_exported_as_matmul(bundles, family):
    """The ViT patch embedding leaves as a MatMul (runtimes run it as one more GEMM), and the
    rewrite is exact: convert's parity against PyTorch passed on the rewritten graph."""
    import onnx

    graph = onnx.load(str(bundles[family] / "vision" / "model.onnx"), load_external_data=False).graph
    assert "Conv" not in {n.op_type for n in graph.node}
    parity = read_manifest(bundles[family] / "vision").parity
    assert parity["passed"] and parity["outputs"]["image_embeds"]["max_abs"] < 1e-4


def test_patch_rewrite_is_exact_and_keeps_a_partial_border_convolution():
    import torch

    from mmdeploy.models.patches import matmul_patch_embedding

    conv = torch.nn.Conv2d(3, 16, 8, 8)
    whole, ragged = torch.randn(2, 3, 32, 32), torch.randn(1, 3, 30, 30)
    expected = conv(whole), conv(ragged)
    with matmul_patch_embedding(conv) as n:
        got = conv(whole), conv(ragged)
    assert n == 1 and "forward" not in conv.__dict__  # restored
    assert torch.allclose(got[0], expected[0], atol=1e-5) and torch.equal(got[1], expected[1])


def test_siglip2_export_is_square_fixed_resolution(bundles):
    top = read_manifest(bundles["siglip2"])
    assert top.metadata["image_size"] == 32  # sqrt(16 patches) * 8 px
    assert "NaFlex" in " ".join(top.metadata["dual_encoder"]["notes"])
    assert read_manifest(bundles["siglip2"] / "vision").inputs[0].shape == ["batch", 3, 32, 32]


def test_align_head_is_one_over_temperature(bundles):
    head = read_manifest(bundles["align"]).metadata["head"]
    assert head["logit_scale"] == pytest.approx(1 / head["temperature"])


def test_family_flag_overrides_and_accepts_model_type_spelling(checkpoints):
    from mmdeploy.models import resolve

    assert resolve(checkpoints["metaclip-2"], family="metaclip_2").family == "metaclip-2"
    assert resolve(checkpoints["clip"], family="metaclip-2").family == "metaclip-2"


def test_blip_retrieval_does_not_clash_with_captioning(checkpoints, tmp_path):
    from mmdeploy.models import resolve

    folder = tmp_path / "caption"
    shutil.copytree(checkpoints["blip-itm"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BlipForConditionalGeneration"]
    (folder / "config.json").write_text(json.dumps(config))
    assert resolve(folder).family == "blip"


@pytest.mark.parametrize("model_type,words", [("owlvit", "detector"), ("owlv2", "detector"),
                                               ("clipseg", "segmenter")])
def test_other_shapes_refused_with_one_line(cli, tmp_path, model_type, words):
    folder = tmp_path / model_type
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    result = cli("convert", folder, "--output", tmp_path / "out")
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0] and "siglip2" in lines[0] and "blip-itm" in lines[0]
    with pytest.raises(UnsupportedError):
        from mmdeploy.models import resolve

        resolve(folder)
