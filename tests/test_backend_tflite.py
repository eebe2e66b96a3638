import numpy as np
import pytest

from helpers_backends import shared_adapter, shared_bundle
from mmdeploy.artifact import load_reference
from mmdeploy.backends import get_backend, load_runner
from mmdeploy.errors import InputError, UnsupportedError

pytestmark = pytest.mark.slow  # litert-torch conversion takes several seconds per tower


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_vision_tflite_is_verified_against_pytorch(tmp_path, precision):
    out = tmp_path / f"vision-tflite-{precision}"
    out.mkdir()
    component = shared_adapter().components()["vision"]
    manifest = get_backend("tflite").compile(shared_bundle() / "vision", out,
                                             {"precision": precision, "torch_component": component})
    assert (out / "model.tflite").is_file()
    assert manifest.format == "tflite" and manifest.parity["passed"]
    assert manifest.parity["batch_sizes"] == [1, 3]  # batch 3 fed one sample at a time
    assert manifest.metadata["static_batch"] == 1
    if precision == "fp32":
        assert manifest.parity["outputs"]["image_embeds"]["max_abs"] < 1e-4
    else:
        assert manifest.parity["outputs"]["image_embeds"]["cosine"] > 0.99


def test_text_tower_int64_inputs_become_int32(tmp_path):
    out = tmp_path / "text-tflite"
    out.mkdir()
    component = shared_adapter().components()["text"]
    manifest = get_backend("tflite").compile(shared_bundle() / "text", out, {"torch_component": component})
    assert {i.name: i.dtype for i in manifest.inputs} == {"input_ids": "int32", "attention_mask": "int32"}
    assert manifest.metadata["input_casts"]["input_ids"] == "int64->int32"
    runner = load_runner(out, threads=1)
    feeds, ref = load_reference(shared_bundle() / "text")[1]  # int64 feeds, batch 3
    np.testing.assert_allclose(runner.run(feeds)["text_embeds"], ref["text_embeds"], atol=1e-4)
    with pytest.raises(InputError, match="static shapes"):
        runner.run({k: v[:, :8] for k, v in feeds.items()})


def test_tflite_needs_the_torch_module(tmp_path):
    with pytest.raises(UnsupportedError, match="PyTorch module"):
        get_backend("tflite").compile(shared_bundle() / "vision", tmp_path, {})
