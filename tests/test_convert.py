"""convert: export, simplify, verify against PyTorch, manifests; every family adapter."""

import json
import shutil
import textwrap

import numpy as np
import pytest

from mmdeploy.artifact import load_reference, read_manifest, verify_files
from mmdeploy.backends import load_runner
from mmdeploy.errors import InputError, VerificationError
from mmdeploy.stages.convert import convert


@pytest.mark.parametrize("bundle_fixture", ["clip_bundle", "siglip_bundle"])
def test_towers_reproduce_pytorch(bundle_fixture, request):
    bundle = request.getfixturevalue(bundle_fixture)
    top = read_manifest(bundle)
    assert top.kind == "model" and [a.component for a in top.artifacts] == ["vision", "text"]
    assert verify_files(bundle) == []
    assert (bundle / "preprocess" / "tokenizer.json").is_file()
    for name in ("vision", "text"):
        m = read_manifest(bundle / name)
        assert m.format == "onnx" and m.source["sha256"]
        assert m.parity["passed"] and 1 in m.parity["batch_sizes"] and max(m.parity["batch_sizes"]) > 1
        assert all(v["max_abs"] < 1e-4 and v["cosine"] > 0.9999 for v in m.parity["outputs"].values())
        assert m.inputs[0].shape[0] == "batch"  # dynamic batch
        assert {p.name for p in m.passes} >= {"export", "simplify"}
        assert {"torch", "onnx", "onnxruntime", "onnxsim"} <= set(m.tools)
    text = read_manifest(bundle / "text")
    assert text.inputs[0].shape == ["batch", "sequence"]
    task = top.parity["task"]
    assert task["top1_agreement"] == 1.0 and task["max_abs_logit_error"] < 1e-3


def test_exported_towers_reproduce_logits_per_image(tiny_clip_dir, clip_bundle):
    """logits_per_image from the ONNX towers and the recorded head equal CLIPModel's."""
    import torch
    from transformers import CLIPModel

    from mmdeploy.models import adapter_for_bundle
    from mmdeploy.models.dual_encoder import zero_shot_logits

    adapter = adapter_for_bundle(clip_bundle)
    images, _, prompts = adapter.task_data(limit=4)
    pixel, text = adapter.image_feeds(images), adapter.text_feeds(prompts)
    img = load_runner(clip_bundle / "vision").run(pixel)["image_embeds"]
    txt = load_runner(clip_bundle / "text").run(text)["text_embeds"]
    head = read_manifest(clip_bundle).metadata["head"]
    logits = zero_shot_logits(img, txt, head["logit_scale"], head["logit_bias"], scale_is_log=False)
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    with torch.no_grad():
        expected = model(pixel_values=torch.from_numpy(pixel["pixel_values"]),
                         input_ids=torch.from_numpy(text["input_ids"]),
                         attention_mask=torch.from_numpy(text["attention_mask"])).logits_per_image.numpy()
    np.testing.assert_allclose(logits, expected, atol=1e-4)


def test_siglip_head_has_a_bias(siglip_bundle):
    head = read_manifest(siglip_bundle).metadata["head"]
    assert head["logit_bias"] is not None
    assert [t.name for t in read_manifest(siglip_bundle / "text").inputs] == ["input_ids"]


def test_reference_cases_verify_later_stages(clip_bundle):
    cases = load_reference(clip_bundle / "vision")
    assert len(cases) >= 2
    feeds, outputs = cases[0]
    got = load_runner(clip_bundle / "vision").run(feeds)
    np.testing.assert_allclose(got["image_embeds"], outputs["image_embeds"], atol=1e-4)


def test_components_static_batch_and_no_simplify(tiny_clip_dir, tmp_path):
    m = convert(tiny_clip_dir, tmp_path / "out", components=["vision"], batch=1, simplify=False)
    assert [a.component for a in m.artifacts] == ["vision"]
    vision = read_manifest(tmp_path / "out" / "vision")
    assert vision.inputs[0].shape[0] == 1
    assert "simplify" not in {p.name for p in vision.passes}
    with pytest.raises(InputError) as err:
        convert(tiny_clip_dir, tmp_path / "bad", components=["audio"])
    assert "valid components: vision, text" in err.value.one_line()
    assert not (tmp_path / "bad").exists()


def test_simplifier_failure_falls_back(tiny_clip_dir, tmp_path, monkeypatch):
    import onnxsim

    def broken(*args, **kwargs):
        raise RuntimeError("simplifier exploded")

    monkeypatch.setattr(onnxsim, "simplify", broken)
    convert(tiny_clip_dir, tmp_path / "out", components=["vision"])
    simplify = [p for p in read_manifest(tmp_path / "out" / "vision").passes if p.name == "simplify"][0]
    assert simplify.report["applied"] is False and "exploded" in simplify.report["error"]


def test_parity_beyond_atol_is_a_hard_failure(tiny_clip_dir, tmp_path):
    with pytest.raises(VerificationError) as err:
        convert(tiny_clip_dir, tmp_path / "out", components=["vision"], atol=1e-12)
    assert "image_embeds" in err.value.details and "FAIL" in err.value.details
    assert not (tmp_path / "out").exists()


def test_onnx_file_source_is_checked_and_gets_a_manifest(clip_bundle, tmp_path):
    src = tmp_path / "vision.onnx"
    shutil.copy(clip_bundle / "vision" / "model.onnx", src)
    m = convert(src, tmp_path / "out")
    comp = read_manifest(tmp_path / "out" / "model")
    assert comp.passes[0].name == "import" and comp.source["sha256"]
    assert [t.name for t in comp.inputs] == ["pixel_values"]
    assert len(load_reference(tmp_path / "out" / "model")) == 2
    assert m.artifacts[0].format == "onnx"


def test_custom_module_source(tmp_path):
    (tmp_path / "net.py").write_text(textwrap.dedent("""
        import torch

        class Net(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = torch.nn.Linear(6, 3)

            def forward(self, x, scale):
                return self.fc(x) * scale, x.sum(dim=1)

        def build():
            torch.manual_seed(0)
            return {"module": Net(), "inputs": {"x": torch.randn(2, 6), "scale": torch.ones(2, 1)},
                    "output_names": ["y", "total"]}
    """))
    m = convert(f"{tmp_path / 'net.py'}:build", tmp_path / "out")
    comp = read_manifest(tmp_path / "out" / "model")
    assert m.family == "custom" and [t.name for t in comp.outputs] == ["y", "total"]
    assert comp.parity["passed"]
    with pytest.raises(InputError, match="no function 'nope'"):
        convert(f"{tmp_path / 'net.py'}:nope", tmp_path / "out2")


@pytest.mark.parametrize("kind", ["bert", "vit"])
def test_generic_hf_encoder(kind, tmp_path):
    import torch
    from transformers import BertConfig, BertModel, ViTConfig, ViTModel

    from mmdeploy.demo.tokenizer import build_tokenizer

    torch.manual_seed(0)
    folder = tmp_path / kind
    if kind == "bert":
        tok = build_tokenizer()
        BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=32)).save_pretrained(folder)
        tok.save_pretrained(folder)
    else:
        ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8)).save_pretrained(folder)
    m = convert(folder, tmp_path / "out")
    comp = read_manifest(tmp_path / "out" / "encoder")
    assert m.family == "hf-encoder"
    assert [t.name for t in comp.outputs] == ["last_hidden_state", "pooler_output"]
    assert comp.parity["passed"]


def test_bundle_manifest_is_json_with_schema_version(clip_bundle):
    data = json.loads((clip_bundle / "manifest.json").read_text())
    assert data["schema_version"] == 1 and data["family"] == "clip"
    assert data["metadata"]["head"]["logit_scale"] > 0
