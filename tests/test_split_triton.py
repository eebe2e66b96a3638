"""Triton model repository for the cloud half."""

from __future__ import annotations

from builders import cached_split

from mmdeploy.split import triton


def test_config_has_dims_types_and_backend(tmp_path_factory):
    d = cached_split(tmp_path_factory, "vision", "block:0")
    text = (d / "triton" / "vision_cloud" / "config.pbtxt").read_text()
    assert 'name: "vision_cloud"' in text
    assert 'platform: "onnxruntime_onnx"' in text and 'backend: "onnxruntime"' in text
    assert "max_batch_size: 0" in text
    assert 'name: "cut_0"\n    data_type: TYPE_FP32\n    dims: [ -1, 17, 32 ]' in text
    assert 'name: "image_embeds"\n    data_type: TYPE_FP32\n    dims: [ -1, 16 ]' in text
    assert (d / "triton" / "vision_cloud" / "1" / "model.onnx").read_bytes() == (d / "cloud" / "model.onnx").read_bytes()


def test_scalars_and_int_types(tmp_path):
    text = triton.config_pbtxt("m", [{"name": "s", "dtype": "float32", "shape": []},
                                     {"name": "ids", "dtype": "int64", "shape": ["batch", "seq"]},
                                     {"name": "q", "dtype": "uint8", "shape": ["b", 4]}],
                              [{"name": "y", "dtype": "float16", "shape": [2]}])
    assert "dims: [ 1 ]\n    reshape: { shape: [ ] }" in text
    assert "TYPE_INT64\n    dims: [ -1, -1 ]" in text and "TYPE_UINT8\n    dims: [ -1, 4 ]" in text
    assert "TYPE_FP16\n    dims: [ 2 ]" in text


def test_model_names_are_safe():
    assert triton.model_name("vision cloud/v1") == "vision_cloud_v1"
    assert triton.model_name("../..") == "model"
