import numpy as np
import pytest

from builders import shared_bundle
from mmdeploy.artifact import load_reference, read_manifest, verify_files
from mmdeploy.backends import get_backend, load_runner
from mmdeploy.errors import InputError


def test_compile_records_session_settings_and_parity(tmp_path):
    out = tmp_path / "vision-onnxruntime"
    out.mkdir()
    manifest = get_backend("onnxruntime").compile(shared_bundle() / "vision", out,
                                                  {"threads": 1, "optimization": "extended"})
    assert manifest.format == "onnx" and manifest.target == "onnxruntime"
    assert manifest.metadata["session"]["optimization"] == "extended"
    assert manifest.metadata["session"]["spinning"] is False
    assert manifest.parity["passed"] and manifest.parity["batch_sizes"] == [1, 3]
    assert manifest.parent["path"] == "vision"
    assert verify_files(out) == []
    runner = load_runner(out)
    feeds, ref = load_reference(out)[1]
    np.testing.assert_allclose(runner.run(feeds)["image_embeds"], ref["image_embeds"], atol=1e-4)


def test_optimized_model_is_saved_and_used(tmp_path):
    out = tmp_path / "text-onnxruntime"
    out.mkdir()
    manifest = get_backend("onnxruntime").compile(shared_bundle() / "text", out,
                                                  {"ort_save_optimized": True, "optimization": "extended"})
    assert (out / "model.optimized.onnx").is_file()
    assert read_manifest(out).metadata["model_file"] == "model.optimized.onnx"
    assert manifest.parity["passed"]


def test_unknown_optimization_level(tmp_path):
    with pytest.raises(InputError, match="optimization level"):
        get_backend("onnxruntime").compile(shared_bundle() / "text", tmp_path, {"optimization": "max"})
