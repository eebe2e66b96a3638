"""mmdeploy.onnx_files and the external-data form through every stage.

A model past 2 GB is too big for unit tests (benchmarks/past_2gb_vit_h14.py builds one); here the
same form is forced on tiny models (``convert(..., external_data=True)``): the weights live in
``model.onnx.data`` and every stage must read, copy, hash and rewrite them.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from mmdeploy import onnx_files
from mmdeploy.artifact import read_manifest, verify_files
from mmdeploy.errors import CheckpointError, UnsupportedError


def _mlp(path: Path, *, one_file: bool = True, external: bool = True) -> Path:
    """A two-layer MLP whose weights are external data (one file, or torch-style one per tensor)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((16, 32)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((32, 8)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.arange(8, dtype=np.float32), "b2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("MatMul", ["r", "w2"], ["m"], name="mm2"),
             helper.make_node("Add", ["m", "b2"], ["y"], name="add")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=one_file,
                        location=path.name + ".data" if one_file else None, size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


def _run(path: Path) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)})[0]


def test_data_files_copy_and_size(tmp_path):
    model = _mlp(tmp_path / "a" / "model.onnx")
    assert [f.name for f in onnx_files.data_files(model)] == ["model.onnx.data"]
    assert onnx_files.model_bytes(model) > model.stat().st_size + 16 * 32 * 4
    copied = onnx_files.copy_model(model, (tmp_path / "b").mkdir() or tmp_path / "b")
    assert sorted(p.name for p in copied.parent.iterdir()) == ["model.onnx", "model.onnx.data"]
    np.testing.assert_array_equal(_run(copied), _run(model))
    inline = _mlp(tmp_path / "c" / "model.onnx", external=False)
    assert onnx_files.data_files(inline) == [] and not onnx_files.has_external_data(inline)


def test_consolidate_gathers_one_file_per_tensor(tmp_path):
    """torch.onnx.export past 2 GB writes one file per weight: gathered into model.onnx.data."""
    model = _mlp(tmp_path / "model.onnx", one_file=False)
    before = _run(model)
    assert len(onnx_files.data_files(model)) == 3
    assert onnx_files.consolidate(model) == ["model.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    np.testing.assert_array_equal(_run(model), before)
    onnx_files.check(model)


def test_externalize_and_save_with_data(tmp_path):
    model = _mlp(tmp_path / "m" / "model.onnx", external=False)
    before = _run(model)
    assert onnx_files.externalize(model) == ["model.onnx.data"]
    np.testing.assert_array_equal(_run(model), before)
    graph = onnx_files.load_graph(model)  # weights left on disk
    out = tmp_path / "n" / "model.onnx"
    out.parent.mkdir()
    onnx_files.save_with_data(graph, model.parent, out)
    assert (out.parent / "model.onnx.data").is_file()
    np.testing.assert_array_equal(_run(out), before)


def test_missing_data_file_is_one_clear_error(tmp_path):
    from mmdeploy.export.onnx import load_onnx

    model = _mlp(tmp_path / "model.onnx")
    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(CheckpointError, match="external data file model.onnx.data is missing") as info:
        load_onnx(model)
    assert "data files beside it" in info.value.hint


def test_tflite_flatbuffer_limit_is_one_line():
    from mmdeploy.backends.tflite import check_flatbuffer_size

    check_flatbuffer_size("vision", 3_000_000_000, "fp16")  # 1.5 GB: fits
    with pytest.raises(UnsupportedError, match="2.5 GB of fp32 weights do not fit TFLite's 2 GB flatbuffer"):
        check_flatbuffer_size("vision", 2_530_000_000, "fp32")


def test_stage_lines_heartbeat_off_a_terminal():
    from mmdeploy.logs import StageLines

    stream = io.StringIO()
    lines = StageLines(stream)
    lines.heartbeat_s = 0.05
    lines("a short stage")
    time.sleep(0.02)
    lines("exporting a big tower")
    time.sleep(0.3)
    lines.close()
    text = stream.getvalue()
    assert "exporting a big tower: still running" in text
    assert "a short stage: still" not in text  # shorter than the beat: no line
    assert text.rstrip().splitlines()[-1].startswith("· exporting a big tower")


def test_auto_builds_openvino_int8_only_past_2gb(monkeypatch):
    from types import SimpleNamespace

    from mmdeploy import cpu as cpu_module
    from mmdeploy.stages import autoselect
    from mmdeploy.stages.autoselect import Outcome

    built = []

    def build(cand, log, aware):
        built.append(cand.name)
        result = SimpleNamespace(model_file="model.xml", format="openvino", precision=cand.precision, report={})
        state = {"vision": {"result": result, "out_dir": Path("/nonexistent"), "excluded": [], "passes": [],
                            "base_model": None}}
        return Outcome(cand, state=state, score={"value": 0.999, "ok": True}, ok=True)

    monkeypatch.setattr(autoselect, "_fp32_bytes", lambda comp: 2_530_000_000)
    monkeypatch.setattr(cpu_module, "cpu_features", lambda: {
        "model": "test", "machine": "x86_64", "flags": [], "openvino_capabilities": ["FP32", "BF16", "INT8"],
        "features": {"avx2": True, "avx512": True, "vnni": True, "avx512_bf16": True, "avx512_fp16": False,
                     "amx": False}})
    comps = [SimpleNamespace(name="vision", calib=SimpleNamespace(feeds=[{"x": np.zeros(1)}]), result=None,
                             manifest=None, out_dir=None, excluded=[], passes=[], base_model=None)]
    evaluator = SimpleNamespace(metric="cosine", budget=0.99, describe=lambda: "cosine")
    said = []
    options = SimpleNamespace(target=None, accuracy_aware=True, auto_blocks=1)
    autoselect.select(comps, evaluator, options, said.append, build=build, runner_for=lambda *a: None,
                      timer=lambda runners, feeds, blocks: {n: 1.0 for n in runners})
    assert built == ["nncf", "nncf+bf16", "nncf-w8"]
    assert any("past 2 GB" in line for line in said)


# ---------------------------------------------------------------- the stages on a forced external form


@pytest.fixture(scope="module")
def external_bundle(tiny_clip_dir, tmp_path_factory) -> Path:
    from mmdeploy.stages.convert import convert

    out = tmp_path_factory.mktemp("external") / "clip"
    convert(tiny_clip_dir, out, external_data=True)
    return out


def test_convert_writes_and_hashes_external_data(external_bundle):
    for comp in ("vision", "text"):
        m = read_manifest(external_bundle / comp)
        assert {"model.onnx", "model.onnx.data"} <= set(m.files)
        assert m.passes[0].report["external_data"] == ["model.onnx.data"]
    assert "vision/model.onnx.data" in read_manifest(external_bundle).files
    assert verify_files(external_bundle) == []


def test_copied_bundle_verifies_and_runs(external_bundle, tmp_path, cli):
    moved = tmp_path / "elsewhere" / "clip"
    shutil.copytree(external_bundle, moved)  # as `cp -r` does
    assert cli("inspect", moved).returncode == 0
    result = cli("bench", moved, "--iters", "2", "--warmup", "1", "--json")
    assert result.returncode == 0, result.stderr
    (moved / "vision" / "model.onnx.data").write_bytes(b"\0")  # a truncated copy is named
    result = cli("inspect", moved)
    assert result.returncode == 1 and "model.onnx.data" in result.stderr


def test_quantize_and_compile_external_form(external_bundle, tmp_path):
    from mmdeploy.stages.compile import compile_bundle
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    for method in ("ort-static", "ort-dynamic", "nncf"):
        out = tmp_path / method
        quantize(external_bundle / "vision", out, QuantizeOptions(method=method, latency_runs=0, calib_limit=4),
                 log=lambda m: None)
        m = read_manifest(out)
        assert m.precision == "int8"
        assert verify_files(out) == []
    work = tmp_path / "compiled"
    shutil.copytree(external_bundle, work)
    refs = compile_bundle(work, ["openvino:fp32", "tensorrt"], {}, adapter=None, progress=lambda m: None)
    assert {r.format for r in refs} >= {"openvino", "tensorrt-bundle"}
    trt = next(r for r in refs if r.format == "tensorrt-bundle" and r.component == "vision")
    assert (work / trt.path / "model.onnx.data").is_file()


def test_fp16_weights_keep_the_external_form(tiny_clip_dir, tmp_path):
    from mmdeploy.stages.convert import convert

    convert(tiny_clip_dir, tmp_path / "fp16", components=["vision"], external_data=True, dtype="fp16")
    m = read_manifest(tmp_path / "fp16" / "vision")
    assert m.precision == "fp16" and "model.onnx.data" in m.files
    fp32 = onnx_files.model_bytes(tmp_path / "fp16" / "vision" / "model.onnx")
    assert m.passes[-1].report["bytes_after"] * 2 == m.passes[-1].report["bytes_before"]
    assert fp32 > 0


def test_split_and_bake_external_form(external_bundle, tmp_path):
    from mmdeploy.split.build import split_component
    from mmdeploy.stages.zeroshot import bake_bundle

    split_component(external_bundle, tmp_path / "split", component="vision", at="block:0")
    for half in ("edge", "cloud"):
        assert verify_files(tmp_path / "split" / half) == []
    assert (tmp_path / "split" / "cloud" / "model.onnx.data").is_file()
    bake_bundle(external_bundle, tmp_path / "baked", log=lambda m: None)
    assert (tmp_path / "baked" / "vision" / "model.onnx.data").is_file()
