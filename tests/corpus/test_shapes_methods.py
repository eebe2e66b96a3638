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

    m = quantize(bert_bundle, tmp_path / "q", QuantizeOptions(calib=captions_txt, latency_runs=0, method="ort-static"),
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


# --------------------------------------------------------------------------- static-shape bundles


@pytest.fixture(scope="module")
def static_bundles(tmp_path_factory):
    """`convert demo:tiny-clip --batch 4` and `--sequence 16` (read-only)."""
    from mmdeploy.stages.convert import convert

    root = tmp_path_factory.mktemp("static")
    out = {}
    for key, static in {"batch": {"batch": 4}, "sequence": {"sequence": 16}}.items():
        convert("demo:tiny-clip", root / key, **static)
        out[key] = root / key
    return out


def test_fit_static_batches_groups_ragged_samples_into_the_static_signature():
    from mmdeploy.artifact import TensorSpec
    from mmdeploy.backends.base import fit_static_batches

    inputs = [TensorSpec(name="input_ids", dtype="int64", shape=[4, 6]),
              TensorSpec(name="scale", dtype="float32", shape=[1, 1])]
    feeds = [{"input_ids": np.full((1, n), n, np.int64), "scale": np.ones((1, 1), np.float32)} for n in (3, 5, 8, 2, 4)]
    out = fit_static_batches(feeds, inputs)
    assert len(out) == 2 and all(f["input_ids"].shape == (4, 6) and f["scale"].shape == (1, 1) for f in out)
    assert out[0]["input_ids"][:, 0].tolist() == [3, 5, 8, 2] and out[1]["input_ids"][:, 0].tolist() == [4, 4, 4, 4]
    assert out[0]["input_ids"][0].tolist() == [3, 3, 3, 0, 0, 0]  # padded
    assert out[0]["input_ids"][2].tolist() == [8] * 6  # cut
    dynamic = [TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])]
    assert fit_static_batches(feeds, dynamic) is feeds


@pytest.mark.parametrize("method", ["ort-static", "ort-dynamic", "nncf"])
@pytest.mark.parametrize("shape", ["batch", "sequence"])
def test_quantize_static_shape_bundle(static_bundles, tmp_path, method, shape):
    """Calibration feeds are regrouped to the static signature; scoring, the task check and
    verification of the written components run through the static-shape wrapper."""
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    m = quantize(static_bundles[shape], tmp_path / "q", QuantizeOptions(method=method, latency_runs=0),
                 log=lambda msg: None)
    assert m.precision == "int8" and m.metadata["quantize"]["accuracy"]["ok"]
    for name in ("vision", "text"):
        comp = read_manifest(tmp_path / "q" / name)
        parent = read_manifest(static_bundles[shape] / name)
        assert comp.parity["passed"], comp.parity
        assert [t.shape for t in comp.inputs] == [t.shape for t in parent.inputs]
        if name == "text" or shape == "batch":  # --sequence leaves the vision tower dynamic
            assert comp.metadata["calibration"]["static_shape"]
    text = read_manifest(tmp_path / "q" / "text").inputs[0].shape
    assert text[0] == 4 if shape == "batch" else text[1] == 16
    # the written artifact runs on feeds of another batch / length (bench, compile's task check)
    from mmdeploy.backends import load_runner

    ids = np.array([[2, 5, 6, 7, 3]], dtype=np.int64)
    out = load_runner(tmp_path / "q" / "text").run({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    assert all(np.shape(v)[0] == 1 for v in out.values())


def test_quantize_static_batch_bundle_with_auto(static_bundles, tmp_path):
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    m = quantize(static_bundles["batch"], tmp_path / "q", QuantizeOptions(latency_runs=0), log=lambda msg: None)
    auto = m.metadata["quantize"]["auto"]
    built = [c for c in auto["candidates"] if "skipped" not in c]
    assert built and not any(c.get("error") for c in built), built
    assert all("latency_ms" in c for c in built)
    assert set(auto["chosen_by_component"].values()) <= {c["name"] for c in built}  # per component
    assert read_manifest(tmp_path / "q" / "vision").parity["passed"]


def test_auto_without_a_candidate_in_budget_hints_a_budget_that_passes(cli, demo_bundle, tmp_path):
    """`--method auto` (the default): one line naming each candidate's best, exit 1, nothing
    written; the hint is the accuracy guard's remedy for the closest candidate."""
    common = ["--target", "cpu", "--metric", "cosine", "--no-accuracy-aware", "--latency-runs", "0"]
    result = cli("quantize", demo_bundle / "vision", "-o", tmp_path / "q", "--accuracy-budget", "1.0", *common, "--json")
    assert result.returncode == 1, result.stderr
    error = json.loads(result.stdout)["error"]
    assert "\n" not in error["message"] and "nothing written" in error["message"]
    assert "ort-static cosine" in error["message"] and "ort-dynamic cosine" in error["message"]
    assert not (tmp_path / "q").exists()
    hint = error["hint"]
    assert "drop --no-accuracy-aware" in hint and "reached)" in hint
    budget = hint.split("pass --accuracy-budget ")[1].split()[0]
    assert float(budget) < 1.0
    again = cli("quantize", demo_bundle / "vision", "-o", tmp_path / "q2", "--accuracy-budget", budget, *common)
    assert again.returncode == 0, again.stderr
    assert (tmp_path / "q2" / "manifest.json").is_file()
