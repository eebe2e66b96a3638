"""mmdeploy.stages.quantize and `mmdeploy quantize`: every method for real on a tiny CLIP bundle."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from builders import quantize_bundle, write_images  # noqa: E402

from mmdeploy.artifact import load_reference, read_manifest, verify_files  # noqa: E402
from mmdeploy.errors import CalibrationError, InputError, UnsupportedError  # noqa: E402
from mmdeploy.stages.quantize import AccuracyBudgetError, QuantizeOptions, model_runner, quantize  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return quantize_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return write_images(tmp_path_factory.mktemp("calib") / "images")


def _opts(**kw):
    return QuantizeOptions(latency_runs=2, **kw)


def _cosine_to_reference(component_dir: Path) -> float:
    m = read_manifest(component_dir)
    runner = model_runner(component_dir / m.metadata["model_file"], m.format)
    worst = 1.0
    for feeds, ref in load_reference(component_dir):
        for name, value in ref.items():
            got = runner.run(feeds)[name]
            a, b = value.reshape(len(value), -1), got.reshape(len(got), -1)
            cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            worst = min(worst, float(cos.min()))
    return worst


def test_default_int8_bundle_layout(bundle, tmp_path):
    out = tmp_path / "int8"
    m = quantize(bundle, out, _opts(method="ort-static"))  # auto: tests/test_autoselect.py
    assert m.kind == "model" and m.precision == "int8"
    assert m.parent["path"] == str(bundle.resolve())
    assert (out / "preprocess" / "tokenizer.json").is_file()
    assert [a.component for a in m.artifacts] == ["vision", "text"]
    assert all(a.precision == "int8" and a.format == "onnx" for a in m.artifacts)
    summary = m.metadata["quantize"]
    assert summary["method"] == "ort-static" and summary["accuracy"]["ok"]
    for comp in ("vision", "text"):
        cm = read_manifest(out / comp)
        assert verify_files(out / comp) == []
        assert (out / comp / "reference.npz").is_file()
        assert cm.passes[-1].name == "quantize" and "optimize" not in [p.name for p in cm.passes]
        assert cm.passes[-1].report["calibration"]["sha256"]
        assert cm.passes[-1].report["quantized_ops"]["QuantizeLinear"] > 0
        assert cm.parity["outputs"]  # verified against the PyTorch reference
        assert _cosine_to_reference(out / comp) > 0.99
    row = summary["components"][0]
    assert row["size_quantized"] > 0 and row["latency_ms_quantized"] > 0


def test_ort_dynamic_on_fused_graph(bundle, tmp_path):
    out = tmp_path / "dyn"
    m = quantize(bundle, out, _opts(method="ort-dynamic"))
    vision = read_manifest(out / "vision")
    assert [p.name for p in vision.passes][-2:] == ["optimize", "quantize"]
    assert vision.passes[-2].report["fused"].get("Attention") == 2  # the vision attention was fused
    ops = vision.passes[-1].report["quantized_ops"]
    assert ops.get("QAttention") == 2 and ops.get("MatMulInteger", 0) > 0
    assert _cosine_to_reference(out / "vision") > 0.99 and m.metadata["quantize"]["accuracy"]["ok"]


def test_ort_dynamic_fuses_both_towers_of_a_converted_bundle(clip_bundle, tmp_path):
    """A `convert` output (onnxsim'd): every attention of both towers becomes QAttention, the text
    tower's keeping its causal padding mask (mask_index + unidirectional), within the budget."""
    import onnx

    out = tmp_path / "dyn"
    m = quantize(clip_bundle, out, _opts(method="ort-dynamic"))
    for tower in ("vision", "text"):
        manifest = read_manifest(out / tower)
        assert manifest.passes[-2].report["fused"].get("Attention") == 2
        assert manifest.passes[-1].report["quantized_ops"].get("QAttention") == 2
        assert _cosine_to_reference(out / tower) > 0.99
    text = onnx.load(str(out / "text" / read_manifest(out / "text").metadata["model_file"]))
    for node in (n for n in text.graph.node if n.op_type == "QAttention"):
        assert node.input[5] and any(a.name == "unidirectional" and a.i == 1 for a in node.attribute)
    assert m.metadata["quantize"]["accuracy"]["ok"]


@pytest.mark.parametrize("calibrate_method", ["minmax", "entropy", "percentile"])
def test_ort_static_qdq_with_image_calibration(bundle, images, tmp_path, calibrate_method):
    out = tmp_path / "qdq"
    m = quantize(bundle, out, _opts(method="ort-static", calibrate_method=calibrate_method, calib=images,
                                    accuracy_budget=0.95))
    vision = read_manifest(out / "vision")
    assert vision.passes[-1].params["calibrate_method"] == calibrate_method
    calib = vision.metadata["calibration"]
    assert calib["source"] == str(images) and calib["kind"] == "image" and calib["samples"] == 6
    ops = vision.passes[-1].report["quantized_ops"]
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    # the text tower had no captions: it calibrated on its bundled/reference set
    assert read_manifest(out / "text").metadata["calibration"]["kind"] == "text"
    assert "optimize" not in [p.name for p in vision.passes]  # QDQ stays portable (no contrib ops)
    assert m.metadata["quantize"]["accuracy"]["ok"]


def test_captions_calibration(bundle, tmp_path):
    captions = tmp_path / "captions.txt"
    captions.write_text("a photo of a red circle\n\nthe blue square\na green triangle\n")
    m = quantize(bundle, tmp_path / "out", _opts(method="ort-static", calib=captions, components=["text"]))
    text = read_manifest(tmp_path / "out" / "text")
    assert text.metadata["calibration"]["samples"] == 3
    # components not selected are copied unchanged
    assert read_manifest(tmp_path / "out" / "vision").precision == "fp32"
    assert [a.precision for a in m.artifacts] == ["fp32", "int8"]


def test_single_component_dir(bundle, tmp_path):
    m = quantize(bundle / "vision", tmp_path / "v8", _opts(method="ort-static"))
    assert m.kind == "component" and m.precision == "int8"
    assert (tmp_path / "v8" / "model.onnx").is_file() and (tmp_path / "v8" / "reference.npz").is_file()


def test_fp16(bundle, tmp_path):
    m = quantize(bundle, tmp_path / "fp16", _opts(precision="fp16"))
    assert m.precision == "fp16"
    vision = read_manifest(tmp_path / "fp16" / "vision")
    assert vision.precision == "fp16" and vision.passes[-1].name == "fp16"
    assert _cosine_to_reference(tmp_path / "fp16" / "vision") > 0.999


@pytest.mark.slow
def test_nncf_openvino_ir(bundle, images, tmp_path):
    m = quantize(bundle, tmp_path / "ov", _opts(method="nncf", calib=images, components=["vision"]))
    vision = read_manifest(tmp_path / "ov" / "vision")
    assert vision.format == "openvino" and vision.precision == "int8"
    assert (tmp_path / "ov" / "vision" / "model.xml").is_file()
    assert vision.passes[-1].report["fake_quantize_nodes"] > 0
    assert m.metadata["quantize"]["accuracy"]["ok"]


def test_accuracy_aware_keeps_sensitive_blocks_float(bundle, tmp_path):
    # a budget int8 cannot meet everywhere: the loop keeps the most sensitive blocks in float
    m = quantize(bundle / "vision", tmp_path / "aware", _opts(method="ort-static", accuracy_budget=0.99999,
                                                                 max_float_blocks=20))
    blocks = m.passes[-1].report["float_blocks"]
    assert blocks, "expected at least one block kept in float"
    assert all(b["nodes"] and "metric_after" in b for b in blocks)
    summary_cos = m.metadata["quantize_summary"]["components"][0]["cosine"]
    assert summary_cos >= 0.99999
    assert m.metadata["quantize"]["precision"] == f"int8, {len(blocks)} block(s) in float"  # what inspect shows


def test_inspect_names_weight_only_int8(bundle, tmp_path, cli):
    quantize(bundle / "vision", tmp_path / "w8", QuantizeOptions(method="nncf-weights", latency_runs=0))
    shown = cli("inspect", tmp_path / "w8")
    assert shown.returncode == 0 and "int8 weights, activations at run time" in shown.stdout, shown.stdout


def test_nncf_block_search_probes_by_bypassing_quantizers(bundle, images, tmp_path):
    """NNCF's block search measures blocks on the all-int8 IR with their activation quantizers
    bypassed (no re-calibration per block), then builds the real thing without the blocks kept
    and judges that: what is reported (and would be written) is the confirmed build, not a probe."""
    import openvino as ov

    from mmdeploy.passes.quantize import float_probe, quantizable_groups

    lines: list[str] = []
    with pytest.raises(AccuracyBudgetError, match="best reached"):  # random tiny weights: nncf is all but exact
        quantize(bundle / "vision", tmp_path / "aware", _opts(method="nncf", calib=images, accuracy_budget=0.999999,
                                                               max_float_blocks=3), log=lines.append)
    assert any("sensitivity vision: " in line for line in lines), lines
    assert any(re.search(r"quantized without the \d block\(s\) kept in float", line) for line in lines), lines
    assert not (tmp_path / "aware").exists()
    # the probe itself: the activation quantizers feeding the block's MatMuls are bypassed
    m = quantize(bundle / "vision", tmp_path / "ov", _opts(method="nncf", calib=images, accuracy_aware=False))
    ir = tmp_path / "ov" / m.metadata["model_file"]
    nodes = next(iter(quantizable_groups(bundle / "vision" / "model.onnx").values()))
    count = lambda model: sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())  # noqa: E731
    probe = float_probe(ir, "openvino", nodes, tmp_path / "probe")
    assert count(ov.Core().read_model(str(probe))) < count(ov.Core().read_model(str(ir)))
    assert float_probe(ir, "onnx", nodes, tmp_path / "none") is None


def test_ort_dynamic_block_search_requantizes_each_block(bundle, tmp_path):
    """ort-dynamic has no activation quantizer to bypass: each block is measured by quantizing
    again without it, in the route's own work dir (once `FileNotFoundError: .../encoder/probe`)."""
    lines: list[str] = []
    try:
        quantize(bundle / "vision", tmp_path / "dyn", _opts(method="ort-dynamic", accuracy_budget=0.999999,
                                                             max_float_blocks=2), log=lines.append)
    except AccuracyBudgetError as exc:
        assert "best reached" in str(exc)
    assert any("sensitivity vision: " in line and "blocks measured" in line for line in lines), lines


def test_impossible_budget_writes_nothing(bundle, tmp_path):
    out = tmp_path / "never"
    with pytest.raises(AccuracyBudgetError, match="best reached: cosine") as exc:
        quantize(bundle / "vision", out, _opts(method="ort-static", accuracy_budget=1.0, max_float_blocks=1))
    assert exc.value.exit_code == 1  # a check that ran and failed
    assert "raise --max-float-blocks above 1" in exc.value.hint and "--accuracy-budget 0.9" in exc.value.hint
    assert not out.exists()
    assert not list(tmp_path.glob(".never*"))


def test_bad_calibration_inputs(bundle, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="is empty"):
        quantize(bundle, tmp_path / "o1", _opts(calib=empty))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "a.png").write_bytes(b"not a png at all")
    with pytest.raises(CalibrationError, match="cannot be decoded"):
        quantize(bundle, tmp_path / "o2", _opts(calib=broken, components=["vision"]))
    captions = tmp_path / "c.txt"
    captions.write_text("a photo\n")
    with pytest.raises(CalibrationError, match="holds captions but component 'vision' takes images"):
        quantize(bundle, tmp_path / "o3", _opts(calib=captions, components=["vision"]))
    with pytest.raises(CalibrationError, match="does not exist"):
        quantize(bundle, tmp_path / "o4", _opts(calib=tmp_path / "nope"))
    for name in ("o1", "o2", "o3", "o4"):
        assert not (tmp_path / name).exists()


def test_bad_artifacts(bundle, tmp_path):
    with pytest.raises(InputError, match="not an mmdeploy artifact"):
        quantize(tmp_path, tmp_path / "x", _opts())
    with pytest.raises(InputError, match="no component audio"):
        quantize(bundle, tmp_path / "x", _opts(components=["audio"]))
    int8 = tmp_path / "int8"
    quantize(bundle / "vision", int8, _opts(method="ort-dynamic", optimize=False))  # noqa: the input for the next
    with pytest.raises(UnsupportedError, match="quantize takes fp32 ONNX"):
        quantize(int8, tmp_path / "again", _opts())


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "mmdeploy", *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd)


@pytest.mark.slow
def test_cli(bundle, tmp_path):
    out = tmp_path / "cli"
    proc = _cli("quantize", bundle, "--int8", "--output", out, "--json", "--latency-runs", "1")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["summary"]["accuracy"]["ok"]
    # --int8 is method auto: per component the fastest route that holds the budget (on a tiny
    # model a reduced-precision float route may win: the label says so)
    assert set(data["summary"]["auto"]["chosen_by_component"]) == {"vision", "text"}
    assert set(data["precision"].split("+")) <= {"int8", "bf16", "fp16"}
    proc = _cli("quantize", bundle, "--int8", "--output", tmp_path / "bad", "--calib", tmp_path / "missing")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error:") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _cli("quantize", bundle / "vision", "--output", tmp_path / "bad2", "--method", "ort-static",
                "--accuracy-budget", "1.0", "--max-float-blocks", "1")
    assert proc.returncode == 1 and "best reached" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad2").exists()
    proc = _cli("quantize", bundle, "--int8", "--fp16", "--output", tmp_path / "bad3")
    assert proc.returncode == 2 and "exclusive" in proc.stderr


@pytest.mark.slow
def test_inc_tuning(bundle, tmp_path):
    m = quantize(bundle / "vision", tmp_path / "inc", _opts(method="inc", accuracy_budget=0.99999, max_float_blocks=20))
    report = m.passes[-1].report
    assert m.precision == "int8" and report["quantized_ops"]["QuantizeLinear"] > 0
    steps = m.metadata["quantize_summary"]["steps"]
    assert steps[0]["calibrate_method"] == "minmax" and "trial" in steps[0]
    assert m.metadata["quantize_summary"]["accuracy"]["ok"]


@pytest.mark.slow
def test_tflite_int8_from_torch_module(bundle, images, tmp_path):
    from builders import tower_classes
    from builders import build_clip

    Vision, _ = tower_classes(build_clip(0))  # the same weights the bundle was exported from

    m = quantize(bundle / "vision", tmp_path / "tfl", _opts(method="tflite", calib=images, calib_limit=4),
                 torch_modules={"vision": Vision()})
    assert m.format == "tflite" and m.precision == "int8" and m.metadata["io_quantized"]
    assert (tmp_path / "tfl" / "model.tflite").is_file()
    assert m.metadata["quantize_summary"]["accuracy"]["ok"]  # cosine >= 0.99 on the calibration images
    assert m.parity["outputs"]["image_embeds"]["cosine"] > 0.95  # reference inputs are random noise
    # the artifact runs through the shared backend too (bench, compile): int8 I/O (de)quantized
    from mmdeploy.backends import load_runner
    from mmdeploy.compare import compare_outputs

    feeds, expected = load_reference(bundle / "vision")[0]
    got = load_runner(tmp_path / "tfl").run(feeds)
    assert compare_outputs(expected, got)["image_embeds"]["cosine"] > 0.95


def test_tflite_without_torch_module(bundle, tmp_path):
    with pytest.raises(UnsupportedError, match="PyTorch module"):
        quantize(bundle / "vision", tmp_path / "tfl", _opts(method="tflite"))
    assert not (tmp_path / "tfl").exists()


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    from mmdeploy.stages.convert import convert

    fp32 = tmp_path_factory.mktemp("demo") / "fp32"
    convert("demo:tiny-clip", fp32)
    return fp32


@pytest.mark.slow
@pytest.mark.parametrize("method", ["auto", "tflite"])
def test_demo_int8_zero_shot_within_budget(demo_bundle, tmp_path, method):
    """The trained demo model: int8 (both towers) keeps zero-shot top-1 within 0.5 pp."""
    m = quantize(demo_bundle, tmp_path / "int8", QuantizeOptions(method=method, latency_runs=0))
    acc = m.metadata["quantize"]["accuracy"]
    assert acc["metric"] == "task" and acc["task"] == "zero-shot-top1"
    assert acc["fp32"] >= 80.0
    assert acc["drop"] <= 0.5 and acc["ok"]
    rows = m.metadata["quantize"]["components"]
    # auto may keep a component in float on a reduced-precision runtime (openvino-bf16) when
    # that measured fastest: only int8 components must be smaller
    from mmdeploy.stages.autoselect import CANDIDATES

    int8 = [r for r in rows if "method" not in r or CANDIDATES[r["method"]].precision == "int8"]
    assert all(r["size_quantized"] < r["size_fp32"] for r in int8)
    if method == "tflite":  # built from the checkpoint named in the bundle (demo:tiny-clip)
        assert {a.format for a in m.artifacts} == {"tflite"}
