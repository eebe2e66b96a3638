import json

import pytest

from builders import copy_bundle, shared_adapter, shared_bundle
from mmdeploy.artifact import read_manifest, verify_files
from mmdeploy.backends.openvino import OpenVINOBackend
from mmdeploy.stages.compile import TargetSpec, compile_artifact, compile_bundle, list_targets, parse_targets
from mmdeploy.errors import BackendUnavailable, InputError, UnsupportedError


def run_cli(args, capsys):
    from mmdeploy.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


def test_parse_targets():
    assert parse_targets("onnxruntime") == [TargetSpec("onnxruntime", "fp32")]
    assert parse_targets("ov,tflite:fp16") == [TargetSpec("openvino", "fp32"), TargetSpec("openvino", "fp16"),
                                               TargetSpec("tflite", "fp16")]
    assert parse_targets(["openvino-fp16", "trt:int8"]) == [TargetSpec("openvino", "fp16"),
                                                             TargetSpec("tensorrt", "int8")]
    assert [s.suffix for s in parse_targets("tensorrt,openvino")] == ["tensorrt", "openvino", "openvino-fp16"]
    with pytest.raises(InputError) as info:
        parse_targets("onnxruntime,coreml")
    assert "coreml" in info.value.message
    assert all(n in info.value.hint for n in ("onnxruntime", "openvino", "tflite", "tensorrt"))
    with pytest.raises(InputError, match="precision"):
        parse_targets("tflite:int4")
    with pytest.raises(InputError):
        parse_targets(" , ")


def test_compile_bundle_writes_one_verified_artifact_per_component_and_target(tmp_path):
    bundle = copy_bundle(tmp_path / "bundle")
    refs = compile_bundle(bundle, "onnxruntime,openvino:fp16", {"threads": 1}, adapter=shared_adapter())
    assert sorted(r.path for r in refs) == ["text-onnxruntime", "text-openvino-fp16",
                                            "vision-onnxruntime", "vision-openvino-fp16"]
    for ref in refs:
        manifest = read_manifest(bundle / ref.path)
        assert manifest.parity["passed"] and manifest.target == ref.target
        assert manifest.parent["path"] == ref.component
        task = manifest.parity["task"]  # zero-shot agreement with PyTorch through the adapter
        assert task["agreement_with_pytorch"] >= 0.99 and task["n"] == 24


def test_compile_cli_copies_the_bundle_and_adds_artifacts(tmp_path, capsys):
    out = tmp_path / "compiled"
    before = sorted(p.name for p in shared_bundle().iterdir())
    code, stdout, _ = run_cli(["compile", str(shared_bundle()), "--target", "onnxruntime,tensorrt",
                               "--output", str(out), "--trt-shape", "batch=1,2,4", "--json"], capsys)
    assert code == 0
    rows = json.loads(stdout)["artifacts"]
    assert {r["path"] for r in rows} == {"vision-onnxruntime", "text-onnxruntime", "vision-tensorrt", "text-tensorrt"}
    bundle = read_manifest(out)
    assert {a.path for a in bundle.artifacts} >= {"vision", "text", "vision-tensorrt"}
    assert verify_files(out) == []
    assert sorted(p.name for p in shared_bundle().iterdir()) == before  # input untouched
    settings = json.loads((out / "vision-tensorrt" / "build_settings.json").read_text())
    assert settings["profiles"]["pixel_values"]["max"][0] == 4


def test_compile_one_onnx_component(tmp_path):
    bundle = compile_artifact(shared_bundle() / "vision", "onnxruntime", tmp_path / "out")
    assert [a.path for a in bundle.artifacts] == ["vision", "vision-onnxruntime"]
    assert read_manifest(tmp_path / "out" / "vision-onnxruntime").parity["passed"]


def test_unknown_target_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = run_cli(["compile", str(shared_bundle()), "--target", "coreml", "--output", str(out)], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and err.startswith("error: unknown target 'coreml'")
    assert "openvino" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_missing_package_names_the_extra(tmp_path, monkeypatch, capsys):
    # openvino installs here; simulate its absence to check the message and that nothing is written
    monkeypatch.setattr(OpenVINOBackend, "available", lambda self: (False, "package openvino is not installed"))
    with pytest.raises(BackendUnavailable) as info:
        compile_artifact(shared_bundle(), "onnxruntime,openvino", tmp_path / "out")
    assert 'mmdeploy[openvino]' in info.value.hint
    assert not (tmp_path / "out").exists()
    code, _, err = run_cli(["compile", str(shared_bundle()), "-t", "openvino", "-o", str(tmp_path / "o2")], capsys)
    assert code == 2 and "mmdeploy[openvino]" in err and not (tmp_path / "o2").exists()


def test_tflite_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(UnsupportedError, match="PyTorch module"):
        compile_artifact(shared_bundle(), "tflite", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unconvertible_op_leaves_nothing(tmp_path, capsys):
    from test_backend_tensorrt import _hazard_graph

    art = _hazard_graph(tmp_path)
    code, _, err = run_cli(["compile", str(art), "-t", "tensorrt", "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "Unique (node odd_node)" in err
    assert not (tmp_path / "out").exists()


def test_targets_command(capsys):
    rows = {r["target"]: r for r in list_targets()}
    assert set(rows) == {"onnxruntime", "openvino", "tflite", "tensorrt"}
    assert rows["onnxruntime"]["available"] and rows["openvino"]["available"] and rows["tflite"]["available"]
    if not rows["tensorrt"]["available"]:
        assert "tensorrt" in rows["tensorrt"]["reason"]
        assert "NVIDIA GPU" in rows["tensorrt"]["install"]
    code, stdout, _ = run_cli(["targets", "--json"], capsys)
    assert code == 0 and {r["target"] for r in json.loads(stdout)} == set(rows)
    code, stdout, _ = run_cli(["targets"], capsys)
    assert code == 0 and "tensorrt" in stdout


@pytest.mark.slow
def test_compile_reloads_the_checkpoint_named_in_the_bundle_for_tflite(tmp_path):
    """convert (ONNX only), then `compile --target tflite` finds the torch module via source.path."""
    from builders import tiny_clip_checkpoint
    from mmdeploy.stages.convert import convert

    checkpoint = tiny_clip_checkpoint(tmp_path / "ckpt")
    convert(checkpoint, tmp_path / "onnx", components=["text"])
    bundle = compile_artifact(tmp_path / "onnx", "tflite:fp32", tmp_path / "out")
    assert [a.path for a in bundle.artifacts if a.target] == ["text-tflite"]
    manifest = read_manifest(tmp_path / "out" / "text-tflite")
    assert manifest.parity["passed"] and manifest.metadata["pad_inputs"]["input_ids"]["length"] == 16
    import shutil

    shutil.rmtree(checkpoint)  # checkpoint gone: a clear error, nothing written
    with pytest.raises(UnsupportedError, match="no longer exists"):
        compile_artifact(tmp_path / "onnx", "tflite", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


@pytest.mark.slow
def test_demo_model_fp32_backends_agree_with_pytorch_on_zero_shot(demo_bundle, tmp_path):
    """The trained demo model: OpenVINO and TFLite (re-converted from demo:tiny-clip) keep its
    zero-shot top-1 and agree with PyTorch on >= 99 % of the held-out images."""
    bundle = compile_artifact(demo_bundle, "openvino:fp32,tflite:fp32", tmp_path / "out")
    compiled = [a for a in bundle.artifacts if a.target]
    assert {a.path for a in compiled} == {"vision-openvino", "text-openvino", "vision-tflite", "text-tflite"}
    for ref in compiled:
        task = read_manifest(tmp_path / "out" / ref.path).parity["task"]
        assert task["name"] == "zero-shot-top1" and task["n"] >= 100
        assert task["agreement_with_pytorch"] >= 0.99, ref.path
        assert task["value"] >= 0.8  # the demo model's own accuracy survives conversion


@pytest.mark.slow
def test_siglip_bundle_compiles_for_openvino_and_tflite(siglip_bundle, tmp_path):
    """A real `convert` bundle of a tiny SigLIP; tflite reloads the checkpoint from source.path."""
    bundle = compile_artifact(siglip_bundle, "openvino:fp16,tflite:fp32", tmp_path / "out",
                              {"components": ["text", "vision"]})
    compiled = {a.path: a for a in bundle.artifacts if a.target}
    assert set(compiled) == {"vision-openvino-fp16", "text-openvino-fp16", "vision-tflite", "text-tflite"}
    for path in compiled:
        manifest = read_manifest(tmp_path / "out" / path)
        assert manifest.family == "siglip" and manifest.parity["passed"], path
    text = read_manifest(tmp_path / "out" / "text-tflite")
    assert all(i.dtype == "int32" for i in text.inputs)  # int64 ids downcast for LiteRT, recorded


def test_compile_measures_task_agreement_without_weights(clip_bundle, tmp_path, capsys):
    """`mmdeploy compile` on a converted bundle: zero-shot agreement from preprocess/ and the
    bundle's fp32 ONNX towers as the reference (no checkpoint needed)."""
    code, stdout, _ = run_cli(["compile", str(clip_bundle), "-t", "openvino:fp16", "-o", str(tmp_path / "out"),
                               "--json"], capsys)
    assert code == 0
    rows = {r["path"]: r for r in json.loads(stdout)["artifacts"]}
    assert set(rows) == {"vision-openvino-fp16", "text-openvino-fp16"}
    task = rows["vision-openvino-fp16"]["task"]
    assert task["reference"].startswith("fp32 onnx") and task["n"] > 0
    assert 0.0 <= task["agreement_with_pytorch"] <= 1.0
