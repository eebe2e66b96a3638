"""Corpus: shapes and methods that used to crash (static shapes, ragged calibration captions,
BERT-like encoders, a custom module with an un-batched input, TFLite without the checkpoint)."""

import json

import numpy as np
import pytest

from mmdeploy.artifact import read_manifest


@pytest.mark.parametrize("static", [{"sequence": 16}, {"batch": 4}])
def test_convert_static_shapes_verifies_and_checks_the_task(static, tmp_path):
    from mmdeploy.stages.convert import convert

    m = convert("demo:tiny-clip", tmp_path / "out", **static)
    assert m.parity["task"]["top1_agreement"] >= 0.99
    text = read_manifest(tmp_path / "out" / "text")
    assert text.parity["passed"]
    if "sequence" in static:
        assert text.inputs[0].shape[1] == 16
    else:
        assert text.inputs[0].shape[0] == 4


@pytest.mark.parametrize("options", [{"calibrate_method": "entropy"}, {"calibrate_method": "percentile"},
                                     {"method": "inc"}])
def test_quantize_text_tower_on_captions_of_different_lengths(demo_bundle, captions_txt, tmp_path, options):
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    opts = QuantizeOptions(components=["text"], calib=captions_txt, latency_runs=0, **options)
    m = quantize(demo_bundle, tmp_path / "q", opts, log=lambda msg: None)
    calib = read_manifest(tmp_path / "q" / "text").metadata["calibration"]
    assert calib["samples"] == 5 and calib["padded_to"]["input_ids"]
    assert m.metadata["quantize"]["accuracy"]["ok"]


@pytest.fixture(scope="module")
def bert_bundle(bert_dir, tmp_path_factory):
    from mmdeploy.stages.convert import convert

    out = tmp_path_factory.mktemp("bert") / "bundle"
    convert(bert_dir, out)
    return out


def test_quantize_bert_like_encoder_with_ragged_calibration(bert_bundle, captions_txt, tmp_path):
    """Outputs of different lengths (last_hidden_state) are compared sample by sample."""
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    m = quantize(bert_bundle, tmp_path / "q", QuantizeOptions(calib=captions_txt, latency_runs=0),
                 log=lambda msg: None)
    assert m.precision == "int8" and m.metadata["quantize"]["accuracy"]["metric"] == "cosine"


def test_tflite_bert_like_encoder_builds_at_max_length_and_pads(bert_bundle, tmp_path):
    from mmdeploy.backends import load_runner
    from mmdeploy.stages.compile import compile_artifact

    compile_artifact(bert_bundle, "tflite:fp32", tmp_path / "t")
    comp = read_manifest(tmp_path / "t" / "encoder-tflite")
    assert comp.parity["passed"]
    assert comp.inputs[0].shape == [1, 32]  # max_position_embeddings, not the caption's length
    runner = load_runner(tmp_path / "t" / "encoder-tflite")
    ids = np.array([[2, 5, 6, 7, 3], [2, 8, 9, 3, 0]], dtype=np.int64)
    out = runner.run({"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64),
                      "token_type_ids": np.zeros_like(ids)} if "token_type_ids" in runner.input_names else
                     {"input_ids": ids, "attention_mask": (ids > 0).astype(np.int64)})
    assert out["last_hidden_state"].shape == (2, 5, 32)


@pytest.fixture(scope="module")
def scaled_bundle(multi_input_py, tmp_path_factory):
    from mmdeploy.stages.convert import convert

    out = tmp_path_factory.mktemp("scaled") / "bundle"
    convert(f"{multi_input_py}:build", out)
    return out


def test_multi_input_module_with_unbatched_input_quantizes(scaled_bundle, tmp_path):
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    m = quantize(scaled_bundle, tmp_path / "q", QuantizeOptions(latency_runs=0), log=lambda msg: None)
    assert m.metadata["quantize"]["components"][0]["cosine"] > 0.99


def test_multi_input_module_tflite_from_file_py_source(scaled_bundle, tmp_path):
    """compile --target tflite reloads the `file.py:function` source; `scale` is not sliced."""
    from mmdeploy.stages.compile import compile_artifact

    compile_artifact(scaled_bundle, "tflite:fp32", tmp_path / "t")
    comp = read_manifest(tmp_path / "t" / "model-tflite")
    assert comp.parity["passed"] and comp.metadata["batched_inputs"] == ["x"]
    assert all(np.isfinite(v["max_abs"]) for v in comp.parity["outputs"].values())


def test_onnx_file_to_tflite_says_why(cli, scaled_bundle, tmp_path):
    result = cli("convert", scaled_bundle / "model" / "model.onnx", "--target", "tflite", "-o", tmp_path / "o")
    assert result.returncode == 2 and "internal error" not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert "TFLite needs the PyTorch module" in line and "ONNX file" in line
    assert "mmdeploy convert SOURCE --target tflite" not in line  # no "rerun the same command"
    assert not (tmp_path / "o").exists()


def test_tensorrt_profile_max_sequence_is_the_models_max_length(demo_bundle, tmp_path):
    from mmdeploy.stages.compile import compile_artifact

    compile_artifact(demo_bundle, "tensorrt", tmp_path / "trt", {"components": ["text"], "trt_build": False})
    settings = json.loads((tmp_path / "trt" / "text-tensorrt" / "build_settings.json").read_text())
    max_length = read_manifest(demo_bundle).metadata["text_max_length"]
    assert settings["profiles"]["input_ids"]["max"][1] == max_length
