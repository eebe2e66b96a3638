"""``quantize --method auto --target PROFILE`` measured on the device through the device agent,
for real: OpenSSH's sshd on 127.0.0.1 and a device Python with only numpy + onnxruntime +
tflite-runtime (``_device.py``), the tiny CLIP bundle quantized here."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import numpy as np

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _device import bare_python, device_python, free_port, needs_ssh, sshd, workdir_empty  # noqa: E402,F401
from builders import quantize_bundle  # noqa: E402

from mmdeploy.stages.quantize import QuantizeOptions, quantize  # noqa: E402



def ssh(test):
    return functools.reduce(lambda t, mark: mark(t), needs_ssh, test)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return quantize_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


def _profile(sshd: dict, directory: Path, name: str, preference: list[str], **update) -> Path:
    """A user's profile for the loopback device (ONNX Runtime there) with a quantize preference."""
    directory.mkdir(parents=True, exist_ok=True)
    data = {"name": name, "backend": "onnxruntime", "threads": 1, "remote": True, **sshd["connection"],
            "quantize_preference": preference, **update}
    (directory / f"{name}.yaml").write_text(json.dumps(data))
    return directory


@ssh
def test_auto_measures_candidates_on_the_device_and_skips_a_runtime_it_lacks(sshd, bundle, tmp_path, monkeypatch):
    targets = _profile(sshd, tmp_path / "targets", "pi", ["ort-static", "ort-dynamic", "nncf"])
    monkeypatch.setenv("MMDEPLOY_TARGETS_PATH", str(targets))
    m = quantize(bundle, tmp_path / "out", QuantizeOptions(target="pi", latency_runs=0, calib_limit=4))
    auto = m.metadata["quantize"]["auto"]
    host = f"{sshd['user']}@127.0.0.1"
    assert auto["how"].startswith(f"measured on pi ({host}) through the device agent")
    device = auto["device"]
    assert device["host"] == host and device["identity"] and device["cpu_model"]
    assert device["cpu_model"] in auto["how"]  # the device's own CPU, as its worker read it
    assert "onnxruntime" in device["runtimes"] and "openvino" not in device["runtimes"]
    rows = {r["name"]: r for r in auto["candidates"]}
    # nncf was built and scored here, but the device has no OpenVINO: skipped there, with the reason
    nncf = rows["nncf"]
    assert "holds_budget" in nncf and "latency_ms" not in nncf
    assert "openvino runtime is not installed" in nncf["skipped_on_device"]
    assert "pip install openvino" in nncf["skipped_on_device"]
    timed = {n: r for n, r in rows.items() if n in ("ort-static", "ort-dynamic")}
    assert all(r["latency_ms"] > 0 and set(r["latency_ms_by_component"]) == {"vision", "text"} for r in timed.values())
    for comp, name in auto["chosen_by_component"].items():  # the fastest of those holding the budget there
        holding = {n: r["latency_ms_by_component"][comp] for n, r in timed.items()
                   if r["holds_budget"] or r["accuracy"]["cosine"][comp] >= 0.99}
        assert name == min(holding, key=holding.get)
    assert {c.format for c in m.artifacts} == {"onnx"}
    assert workdir_empty(sshd)


@ssh
def test_unreachable_device_falls_back_to_the_preference_with_the_reason(sshd, bundle, tmp_path, monkeypatch):
    port = free_port()
    targets = _profile(sshd, tmp_path / "targets", "gone", ["ort-dynamic", "ort-static"], port=port)
    monkeypatch.setenv("MMDEPLOY_TARGETS_PATH", str(targets))
    m = quantize(bundle, tmp_path / "out", QuantizeOptions(target="gone", latency_runs=0, calib_limit=4))
    auto = m.metadata["quantize"]["auto"]
    how = auto["how"]
    assert how.startswith("profile preference of gone (ort-dynamic, ort-static): not measured, the device agent "
                          "was not reachable: cannot reach target gone at ")
    assert f"port {port}" in how and len(how.splitlines()) == 1
    assert auto["chosen"] == "ort-dynamic" and "device" not in auto
    assert all("latency_ms" not in r for r in auto["candidates"])


@ssh
def test_the_hook_reports_a_device_that_fails_setup_as_not_measured(sshd, bare_python, tmp_path, monkeypatch):
    """Reachable, but the device's python has no numpy: the hook's one line says so (the stage
    then falls back to the preference); with the device's real python the same build is timed."""
    from types import SimpleNamespace

    from builders import shared_bundle
    from mmdeploy.artifact import load_reference, read_manifest
    from mmdeploy.passes.base import PassResult
    from mmdeploy.stages import autoselect
    from mmdeploy.targets import get_target

    vision = shared_bundle() / "vision"
    outcome = autoselect.Outcome(autoselect.CANDIDATES["ort-static"], state={
        "vision": {"result": PassResult("model.onnx", "onnx", "int8"), "out_dir": vision}})
    comps = [SimpleNamespace(name="vision", manifest=read_manifest(vision),
                             calib=SimpleNamespace(feeds=[load_reference(vision)[0][0]]))]
    logged = []
    measured, why = autoselect.measure_on_target(get_target("loopback", [sshd["targets"]]), [outcome], comps,
                                                 logged.append)
    assert why is None and measured.latency_ms["ort-static"]["vision"] > 0 and not measured.skipped
    assert any("through the device agent" in m for m in logged)
    bare = get_target("loopback", [sshd["targets"]], python=str(bare_python))
    measured, why = autoselect.measure_on_target(bare, [outcome], comps, logged.append)
    assert measured is None and why.startswith("the device agent failed on loopback: ")
    assert "numpy is not installed" in why and len(why.splitlines()) == 1
    assert workdir_empty(sshd)


@ssh
def test_a_candidate_that_fails_on_the_device_is_skipped_and_the_others_timed(sshd, tmp_path):
    """A graph the device's ONNX Runtime cannot load (an op of an unknown domain): that candidate
    is skipped with the device's one line; the good one is still timed in the same run."""
    from onnx import TensorProto, helper

    from builders import onnx_graph_artifact, shared_bundle
    from mmdeploy.artifact import load_reference, read_manifest
    from mmdeploy.targets import get_target
    from mmdeploy.targets.agent import Build, measure_candidates

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    feeds = {"x": np.ones((1, 4), np.float32)}
    odd = onnx_graph_artifact(tmp_path / "odd", [helper.make_node("MyPlugin", ["x"], ["y"], domain="com.example")],
                              [x], [y], [(feeds, {"y": feeds["x"]})], extra_opsets=("com.example",))
    vision = shared_bundle() / "vision"
    builds = {"good": {"vision": Build(vision, "model.onnx", "onnx", "fp32", "onnxruntime")},
              "bad": {"odd": Build(odd, "model.onnx", "onnx", "int8", "onnxruntime")}}
    measured = measure_candidates(get_target("loopback", [sshd["targets"]]), builds,
                                  {"vision": read_manifest(vision), "odd": read_manifest(odd)},
                                  {"vision": load_reference(vision)[0][0], "odd": feeds}, iters=5)
    assert set(measured.latency_ms) == {"good"} and measured.latency_ms["good"]["vision"] > 0
    assert measured.skipped["bad"].startswith(f"failed on {sshd['user']}@127.0.0.1: ")
    assert "MyPlugin" in measured.skipped["bad"] or "com.example" in measured.skipped["bad"]
    assert workdir_empty(sshd)


def test_tensorrt_candidates_ship_as_bundles_built_on_the_device_at_their_own_precision(tmp_path):
    """No GPU here: up to what goes to the device, the engine build being the device's (its
    TensorRT / trtexec). A Q/DQ candidate builds int8, whatever the profile's precision (fp16)."""
    from onnx import TensorProto, helper

    from builders import onnx_graph_artifact
    from mmdeploy.artifact import read_manifest
    from mmdeploy.bench.harness import BenchSettings, Item
    from mmdeploy.targets import get_target
    from mmdeploy.targets.agent import Build, _component_dir
    from mmdeploy.targets.remote import stage

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["d"]), helper.make_node("Relu", ["d"], ["y"])]
    inits = [helper.make_tensor("s", TensorProto.FLOAT, [], [0.05]), helper.make_tensor("z", TensorProto.INT8, [], [0])]
    feeds = {"x": np.ones((1, 8), np.float32)}
    qdq = onnx_graph_artifact(tmp_path / "qdq", nodes, [x], [y], [(feeds, {"y": feeds["x"]})], initializers=inits)
    profile = get_target("jetson-orin-nano")
    assert profile.precision == "fp16"
    items = []
    for cand, precision in (("tensorrt-int8", "int8"), ("tensorrt-fp16", "fp16")):
        build = Build(qdq, "model.onnx", "onnx", precision, "tensorrt")
        m = _component_dir(build, read_manifest(qdq), "vision", feeds, tmp_path / "c" / cand / "vision")
        items.append(Item(artifact=cand, path=tmp_path / "c" / cand / "vision", bundle=None, model=cand,
                          component="vision", manifest=m))
    (tmp_path / "payload").mkdir()
    entries = stage(items, BenchSettings(batch=1), profile, tmp_path / "payload", tmp_path / "build")
    assert [e["runtime"] for e in entries] == ["tensorrt", "tensorrt"]
    assert [e["tensorrt"]["settings"]["precision"] for e in entries] == ["int8", "fp16"]
    assert "--int8" in entries[0]["tensorrt"]["trtexec_args"] and "--int8" not in entries[1]["tensorrt"]["trtexec_args"]
    with np.load(tmp_path / "payload" / entries[0]["inputs"]) as z:  # the calibration feed is the input
        assert np.array_equal(z["x"], feeds["x"])


@ssh
def test_cli_prints_where_it_measured_and_what_the_device_skipped(sshd, bundle, tmp_path, monkeypatch, capsys):
    from mmdeploy.cli import main

    targets = _profile(sshd, tmp_path / "targets", "pi", ["ort-dynamic", "nncf"])
    monkeypatch.setenv("MMDEPLOY_TARGETS_PATH", str(targets))
    with pytest.raises(SystemExit) as exc:
        main(["quantize", str(bundle), "--method", "auto", "--target", "pi", "--calib-limit", "4",
              "--latency-runs", "0", "--output", str(tmp_path / "out")])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "auto: ort-dynamic" in text and "measured on pi (" in text and "through the device agent" in text
    assert "nncf: not timed on the device (the openvino runtime is not installed" in " ".join(text.split())
