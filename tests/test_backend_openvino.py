import numpy as np
import pytest
from onnx import TensorProto, helper

from builders import onnx_graph_artifact, shared_bundle
from mmdeploy.artifact import load_reference, read_manifest, save_reference, write_manifest
from mmdeploy.backends import get_backend, load_runner
from mmdeploy.backends.openvino import unconverted_ops
from mmdeploy.errors import UnsupportedError, VerificationError


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_ir_is_verified_against_pytorch(tmp_path, precision):
    out = tmp_path / f"vision-openvino-{precision}"
    out.mkdir()
    manifest = get_backend("openvino").compile(shared_bundle() / "vision", out, {"precision": precision})
    assert (out / "model.xml").is_file() and (out / "model.bin").is_file()
    assert manifest.format == "openvino" and manifest.precision == precision
    assert manifest.parity["passed"]
    cosine = manifest.parity["outputs"]["image_embeds"]["cosine"]
    assert cosine > (0.9999 if precision == "fp32" else 0.99)
    runner = load_runner(out, threads=1)
    assert runner.input_names == ["pixel_values"] and runner.output_names == ["image_embeds"]
    batch5 = np.random.default_rng(0).standard_normal((5, 3, 32, 32)).astype(np.float32)
    assert runner.run({"pixel_values": batch5})["image_embeds"].shape == (5, 16)  # dynamic batch kept


def test_fp16_weights_are_smaller(tmp_path):
    sizes = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path / precision
        out.mkdir()
        get_backend("openvino").compile(shared_bundle() / "text", out, {"precision": precision})
        sizes[precision] = (out / "model.bin").stat().st_size
    assert sizes["fp16"] < 0.6 * sizes["fp32"]


def test_text_tower_with_int64_inputs(tmp_path):
    out = tmp_path / "text-openvino"
    out.mkdir()
    manifest = get_backend("openvino").compile(shared_bundle() / "text", out, {})
    assert manifest.parity["passed"]
    assert [i.name for i in manifest.inputs] == ["input_ids", "attention_mask"]


def test_unconvertible_op_is_named_with_its_node(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    nodes = [helper.make_node("Relu", ["x"], ["h"], name="relu0"),
             helper.make_node("FancyOp", ["h"], ["y"], name="my_fancy_node", domain="com.example")]
    feeds = {"x": np.ones((1, 4), np.float32)}
    art = onnx_graph_artifact(tmp_path / "custom", nodes, [x], [y], [(feeds, {"y": feeds["x"]})],
                              extra_opsets=("com.example",))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(UnsupportedError) as info:
        get_backend("openvino").compile(art, out, {"component": "custom"})
    assert "com.example.FancyOp" in info.value.message and "my_fancy_node" in info.value.message


def test_parse_openvino_failure_message():
    text = ("Model wasn't fully converted.\nSummary:\n-- No conversion rule found for operations: "
            "com.example.FancyOp, Other\n")
    assert unconverted_ops(text) == ["com.example.FancyOp", "Other"]


def test_parity_failure_names_backend_component_and_output(tmp_path):
    bad = tmp_path / "vision"
    import shutil

    shutil.copytree(shared_bundle() / "vision", bad)
    cases = [(f, {"image_embeds": o["image_embeds"] + 0.5}) for f, o in load_reference(bad)]
    save_reference(bad, cases)
    write_manifest(bad, read_manifest(bad))
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(VerificationError) as info:
        get_backend("openvino").compile(bad, out, {"component": "vision"})
    assert "openvino/vision" in info.value.message and "image_embeds" in info.value.message
    assert "FAIL" in info.value.details


def test_runner_compiles_per_feed_shape_then_falls_back_to_dynamic(tmp_path):
    """Shape specialization: the first MAX_SHAPES shapes get their own static compilation, any
    further one runs on a single dynamic compilation; outputs equal the unspecialized runner's."""
    from mmdeploy.backends.openvino import OpenVINORunner

    out = tmp_path / "vision-openvino"
    out.mkdir()
    get_backend("openvino").compile(shared_bundle() / "vision", out, {"precision": "fp32"})
    special = OpenVINORunner(out / "model.xml", threads=1)
    plain = OpenVINORunner(out / "model.xml", threads=1, static_shapes=False)
    rng = np.random.default_rng(1)
    for batch in (1, 2, 1, 3, 4, 5):
        x = {"pixel_values": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)}
        np.testing.assert_allclose(special.run(x)["image_embeds"], plain.run(x)["image_embeds"], atol=1e-5)
    assert len(special._static) == OpenVINORunner.MAX_SHAPES and special._dynamic is not None
    assert plain._static == {} and plain._dynamic is not None
    assert special.request is special._dynamic  # batch 5: the dynamic compilation served it


def test_runner_keeps_one_compilation_of_a_large_model(tmp_path, monkeypatch):
    """Past LARGE_WEIGHTS (a model past 2 GB) each compilation would hold its own copy of the
    weights: only the latest shape's compilation is kept."""
    from mmdeploy.backends.openvino import OpenVINORunner

    out = tmp_path / "vision-openvino"
    out.mkdir()
    get_backend("openvino").compile(shared_bundle() / "vision", out, {"precision": "fp32"})
    monkeypatch.setattr(OpenVINORunner, "LARGE_WEIGHTS", 0)
    runner = OpenVINORunner(out / "model.xml", threads=1)
    plain = OpenVINORunner(out / "model.xml", threads=1, static_shapes=False)
    rng = np.random.default_rng(2)
    for batch in (1, 2, 1):
        x = {"pixel_values": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)}
        np.testing.assert_allclose(runner.run(x)["image_embeds"], plain.run(x)["image_embeds"], atol=1e-5)
        assert len(runner._static) == 1 and runner._dynamic is None


def test_missing_input_is_one_clear_error(tmp_path):
    """Found this stop: a feed without one of the model's inputs ran on whatever tensor the
    request held before (stale output); now one line naming the input and the expected ones."""
    from mmdeploy.errors import InputError

    out = tmp_path / "text-openvino"
    out.mkdir()
    get_backend("openvino").compile(shared_bundle() / "text", out, {"precision": "fp32"})
    runner = load_runner(out, threads=1)
    feeds = {n: np.ones((1, 5), np.int64) for n in runner.input_names}
    runner.run(feeds)
    missing = runner.input_names[-1]
    with pytest.raises(InputError, match=f"no value for input {missing}"):
        runner.run({k: v for k, v in feeds.items() if k != missing})
