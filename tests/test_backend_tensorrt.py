import json

import numpy as np
import pytest
from onnx import TensorProto, helper

from builders import onnx_graph_artifact, shared_bundle
from mmdeploy.artifact import TensorSpec, read_manifest
from mmdeploy.backends import get_backend, load_runner
from mmdeploy.backends.tensorrt import compat_report, derive_profiles, supported_ops, trtexec_command
from mmdeploy.errors import BackendUnavailable, InputError, UnsupportedError

HAVE_TRT = get_backend("tensorrt").available()[0]


def test_supported_ops_table_is_the_tensorrt_10_parser_list():
    table = supported_ops()
    assert table["tensorrt_version"].startswith("10.")
    ops = table["operators"]
    assert ops["LayerNormalization"]["supported"] and ops["MatMul"]["supported"]
    assert not ops["Unique"]["supported"] and not ops["SequenceAt"]["supported"]
    assert len(ops) > 150


def test_bundle_for_the_vision_tower(tmp_path):
    out = tmp_path / "vision-tensorrt"
    out.mkdir()
    manifest = get_backend("tensorrt").compile(shared_bundle() / "vision", out,
                                               {"precision": "fp16", "trt_build": False})
    assert manifest.format == "tensorrt-bundle" and manifest.precision == "fp16"
    for name in ("model.onnx", "build_settings.json", "trtexec.sh", "compat_report.json", "compat_report.md",
                 "reference.npz"):
        assert (out / name).is_file(), name
    settings = json.loads((out / "build_settings.json").read_text())
    assert settings["profiles"]["pixel_values"] == {"min": [1, 3, 32, 32], "opt": [1, 3, 32, 32],
                                                    "max": [32, 3, 32, 32]}
    assert settings["builder_flags"] == {"fp16": True, "int8": False}
    script = (out / "trtexec.sh").read_text()
    assert "--minShapes=pixel_values:1x3x32x32" in script and "--maxShapes=pixel_values:32x3x32x32" in script
    assert "--fp16" in script
    report = json.loads((out / "compat_report.json").read_text())
    assert report["errors"] == [] and report["status"] == "compatible-with-warnings"
    assert any(w["kind"] == "dynamic-shape" for w in report["warnings"])
    assert manifest.parity["status"] == "engine not built here"


def test_text_tower_flags_int64_inputs_and_takes_profile_overrides(tmp_path):
    out = tmp_path / "text-tensorrt"
    out.mkdir()
    get_backend("tensorrt").compile(shared_bundle() / "text", out,
                                    {"trt_shapes": {"batch": [1, 4, 8]}, "trt_build": False})
    report = json.loads((out / "compat_report.json").read_text())
    int64 = [w for w in report["warnings"] if w["kind"] == "int64-io"]
    assert {w["tensor"] for w in int64} == {"input_ids", "attention_mask"}
    settings = json.loads((out / "build_settings.json").read_text())
    assert settings["profiles"]["input_ids"] == {"min": [1, 1], "opt": [4, 16], "max": [8, 16]}


def test_profiles_from_symbolic_dims():
    inputs = [TensorSpec(name="ids", dtype="int64", shape=["batch", "sequence"])]
    cases = [({"ids": np.zeros((2, 7))}, {}), ({"ids": np.zeros((1, 12))}, {})]
    prof = derive_profiles(inputs, cases, max_batch=16)
    assert prof["ids"] == {"min": [1, 1], "opt": [1, 12], "max": [16, 12]}
    with pytest.raises(InputError, match="sequence"):
        derive_profiles(inputs, [])
    with pytest.raises(InputError, match="bad profile"):
        derive_profiles(inputs, cases, overrides={"sequence": [8, 4, 2]})
    cmd = trtexec_command("m.onnx", prof, "int8", 1024)
    assert "--int8" in cmd and "--minShapes=ids:1x1" in cmd


def _hazard_graph(tmp_path, op="Unique", domain=""):
    x = helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["batch", 4])
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, ["batch", 4])
    z = helper.make_tensor_value_info("z", TensorProto.INT64, None)
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="relu0"),
             helper.make_node(op, ["ids"], ["z"], name="odd_node", domain=domain)]
    feeds = {"x": np.ones((1, 4)), "ids": np.ones((1, 4), np.int64)}
    return onnx_graph_artifact(tmp_path / "hazards", nodes, [x, ids], [y, z], [(feeds, {"y": feeds["x"]})],
                               extra_opsets=(domain,) if domain else ())


@pytest.mark.parametrize("op,domain", [("Unique", ""), ("MyPlugin", "com.example")])
def test_unsupported_op_is_named_with_its_node(tmp_path, op, domain):
    art = _hazard_graph(tmp_path, op, domain)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsupportedError) as info:
        get_backend("tensorrt").compile(art, out, {"component": "hazards"})
    assert op in info.value.message and "odd_node" in info.value.message
    assert "--trt-allow-unsupported" in info.value.hint


def test_report_flags_double_and_int64_and_unsupported(tmp_path):
    art = _hazard_graph(tmp_path)
    report = compat_report(art / "model.onnx")
    assert report["status"] == "incompatible"
    assert report["errors"][0]["op"] == "Unique" and report["errors"][0]["node"] == "odd_node"
    kinds = {w["kind"] for w in report["warnings"]}
    assert {"double-io", "int64-io", "dynamic-shape"} <= kinds
    out = tmp_path / "out"
    out.mkdir()
    manifest = get_backend("tensorrt").compile(art, out, {"trt_allow_unsupported": True, "trt_build": False})
    assert manifest.metadata["compat_status"] == "incompatible"
    assert "Unique (node odd_node)" in (out / "compat_report.md").read_text()


def test_int8_needs_a_qdq_graph(tmp_path):
    with pytest.raises(InputError, match="Q/DQ"):
        get_backend("tensorrt").compile(shared_bundle() / "vision", tmp_path, {"precision": "int8"})


@pytest.mark.skipif(HAVE_TRT, reason="checks the off-device path")
def test_loading_a_bundle_without_tensorrt_names_what_to_install(tmp_path):
    out = tmp_path / "vision-tensorrt"
    out.mkdir()
    get_backend("tensorrt").compile(shared_bundle() / "vision", out, {})
    with pytest.raises(BackendUnavailable) as info:
        load_runner(out)
    assert "pip install tensorrt" in info.value.hint


@pytest.mark.tensorrt
@pytest.mark.skipif(not HAVE_TRT, reason="needs TensorRT and an NVIDIA GPU (not installable here)")
def test_engine_build_and_parity_on_device(tmp_path):
    out = tmp_path / "vision-tensorrt"
    out.mkdir()
    manifest = get_backend("tensorrt").compile(shared_bundle() / "vision", out, {"precision": "fp16"})
    assert manifest.format == "tensorrt" and (out / "model.plan").is_file() and (out / "timing.cache").is_file()
    assert manifest.metadata["tensorrt_version"] and manifest.metadata["gpu"]
    assert manifest.parity["passed"]
    assert read_manifest(out).parity["outputs"]["image_embeds"]["cosine"] > 0.99
