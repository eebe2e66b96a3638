"""Corpus: reports tell the truth (inspect on every component kind, own task numbers, model
sizes, modified artifacts refused, failed budgets exit 1 with a remedy that works)."""

import json
import shutil

import pytest

from mmdeploy.artifact import artifact_size, read_manifest


@pytest.fixture(scope="module")
def openvino_bundle(demo_bundle, tmp_path_factory):
    from mmdeploy.stages.compile import compile_artifact

    out = tmp_path_factory.mktemp("ov") / "bundle"
    compile_artifact(demo_bundle, "openvino:fp32", out)  # both towers: the task needs them
    return out


@pytest.fixture(scope="module")
def int8_bundle(demo_bundle, tmp_path_factory):
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    out = tmp_path_factory.mktemp("q") / "bundle"
    quantize(demo_bundle, out, QuantizeOptions(latency_runs=0, method="ort-static"), log=lambda msg: None)
    return out


def test_inspect_a_compiled_component(cli, openvino_bundle):
    result = cli("inspect", openvino_bundle / "vision-openvino")
    assert result.returncode == 0, result.stderr
    assert "openvino" in result.stdout and "(100%)" in result.stdout  # its own task agreement


def test_int8_bundle_shows_its_own_task_numbers(cli, int8_bundle, demo_bundle):
    task = read_manifest(int8_bundle).parity["task"]
    acc = read_manifest(int8_bundle).metadata["quantize"]["accuracy"]
    assert task["measured_on"] == "int8 components" and task["reference_label"] == "fp32 ONNX"
    assert task["value"] == pytest.approx(acc["value"] / 100)
    assert task != read_manifest(demo_bundle).parity["task"]
    result = cli("inspect", int8_bundle)
    assert result.returncode == 0 and "int8 components" in result.stdout and "fp32 ONNX" in result.stdout


def test_sizes_are_the_model_files(demo_bundle):
    vision = demo_bundle / "vision"
    assert artifact_size(vision) == (vision / "model.onnx").stat().st_size


@pytest.fixture
def modified(demo_bundle, tmp_path):
    copy = tmp_path / "modified"
    shutil.copytree(demo_bundle, copy)
    model = copy / "vision" / "model.onnx"
    data = bytearray(model.read_bytes())
    data[-8] ^= 1
    model.write_bytes(bytes(data))
    return copy


def test_modified_bundle(cli, modified, tmp_path):
    assert cli("inspect", modified).returncode == 1
    for args in (["bench", modified, "--iters", "2", "--warmup", "0"],
                 ["quantize", modified, "--int8", "-o", tmp_path / "q"],
                 ["compile", modified, "-t", "openvino", "-o", tmp_path / "c"]):
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert "vision/model.onnx" in result.stderr and "--force" in result.stderr
    forced = cli("bench", modified, "--iters", "2", "--warmup", "0", "--components", "text", "--force")
    assert forced.returncode == 0, forced.stderr


def test_failed_accuracy_budget_exits_1_with_a_remedy_that_works(cli, demo_bundle, tmp_path):
    common = ["--method", "ort-static", "--metric", "cosine", "--no-accuracy-aware", "--latency-runs", "0"]
    result = cli("quantize", demo_bundle / "vision", "-o", tmp_path / "q", "--accuracy-budget", "1.0", *common, "--json")
    assert result.returncode == 1, result.stderr
    hint = json.loads(result.stdout)["error"]["hint"]
    assert "--accuracy-budget" in hint and "drop --no-accuracy-aware" in hint
    budget = hint.split("pass --accuracy-budget ")[1].split()[0]
    again = cli("quantize", demo_bundle / "vision", "-o", tmp_path / "q2", "--accuracy-budget", budget, *common)
    assert again.returncode == 0, again.stderr


CORPUS_COMMANDS = [
    ["convert", "{bundle}/vision/model.onnx", "-t", "tflite", "-o", "{tmp}/a"],
    ["inspect", "{bundle}/vision"],
    ["inspect", "{tmp}/nothing"],
    ["quantize", "{bundle}", "--int8", "-o", "{tmp}/b", "--calib", "{tmp}/missing"],
    ["compile", "{bundle}", "-t", "nosuchtarget", "-o", "{tmp}/c"],
    ["bench", "{tmp}/nothing"],
    ["conver", "x"],
    ["convert", "x", "--ouput", "y"],
]


@pytest.mark.parametrize("args", CORPUS_COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_no_internal_error_on_corpus_inputs(cli, demo_bundle, tmp_path, args):
    result = cli(*[a.format(bundle=demo_bundle, tmp=tmp_path) for a in args])
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    assert result.returncode in (0, 1, 2)
