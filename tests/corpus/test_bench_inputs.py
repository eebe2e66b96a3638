"""Corpus: `bench` on the artifacts users bring -- a bundle compiled for several backends, several
bundles in one run, a baseline from another run, `--estimate` on TFLite components.

Real runtimes throughout (ONNX Runtime, OpenVINO, TFLite); tiny models and a few iterations; no
timing asserts (a baseline limit of 1000x keeps the gate about matching, not speed).
"""

import json
import shutil

import pytest

from mmdeploy.bench import BenchSettings, bench, gate
from mmdeploy.bench.budgets import BaselineLimit, BudgetFile, match_baseline
from mmdeploy.targets import get_target

FAST = dict(warmup=1, iters=3, isolated_memory=False)


@pytest.fixture(scope="module")
def bundles(tiny_clip_dir, tmp_path_factory):
    """`convert` (vision only) and `compile --target openvino,tflite` of the same tiny CLIP."""
    from mmdeploy.stages.compile import compile_artifact
    from mmdeploy.stages.convert import convert

    root = tmp_path_factory.mktemp("bench-inputs")
    convert(tiny_clip_dir, root / "onnx", components=["vision"])
    compile_artifact(root / "onnx", "openvino:fp32,tflite:fp32", root / "multi")
    return {"onnx": root / "onnx", "multi": root / "multi"}


def _rows(doc):
    return [(r["artifact"], r["component"], r["format"]) for r in doc["results"]]


def test_cpu_target_runs_every_cpu_backend_in_one_table(cli, bundles):
    result = cli("bench", bundles["multi"], bundles["onnx"], "--iters", 3, "--warmup", 1, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert _rows(doc) == [("multi", "vision", "onnx"), ("multi", "vision", "openvino"),
                          ("multi", "vision", "tflite"), ("onnx", "vision", "onnx")]
    assert [r["backend"] for r in doc["results"]] == ["onnxruntime", "openvino", "tflite", "onnxruntime"]
    assert {r["path"].rsplit("/", 1)[-1] for r in doc["results"]} == {"vision", "vision-openvino", "vision-tflite"}
    assert all(r["p50_ms"] > 0 for r in doc["results"])
    from mmdeploy.bench.report import markdown

    table = markdown(doc)
    assert "| multi | vision | tflite/fp32 |" in table and "| multi | vision | openvino/fp32 |" in table
    assert "speed-up vs multi onnx" in table  # the reference row is named with its format


def test_a_runtime_not_installed_is_skipped_with_a_warning(bundles, monkeypatch):
    """Stand-in: every runtime is installed here, so TFLite's availability check is made to say no."""
    from mmdeploy.backends import get_backend

    monkeypatch.setattr(type(get_backend("tflite")), "available",
                        lambda self: (False, "package ai-edge-litert is not installed"))
    doc = bench([bundles["multi"]], BenchSettings(**FAST), get_target("cpu"))
    assert _rows(doc) == [("multi", "vision", "onnx"), ("multi", "vision", "openvino")]
    assert doc["warnings"] == ["multi/vision-tflite: skipped, tflite is not available here "
                               "(package ai-edge-litert is not installed)"]


def test_other_targets_keep_one_row_per_component(bundles):
    doc = bench([bundles["multi"]], BenchSettings(**FAST), get_target("openvino-cpu"))
    assert _rows(doc) == [("multi", "vision", "openvino")]
    doc = bench([bundles["multi"]], BenchSettings(**FAST), get_target("tflite"))
    assert _rows(doc) == [("multi", "vision", "tflite")]


def test_baseline_matches_by_bundle_and_backend_not_position_or_path(bundles, tmp_path, cli):
    settings = BenchSettings(**FAST)
    cpu = get_target("cpu")
    first = bench([bundles["onnx"], bundles["multi"]], settings, cpu)
    moved = shutil.copytree(bundles["multi"], tmp_path / "elsewhere" / "multi")  # same bundle, another path
    second = bench([moved, bundles["onnx"]], settings, cpu)  # and the other order
    # both bundles hold the same checkpoint's vision ONNX: told apart by label, backends by format
    for r in second["results"]:
        ref = match_baseline(r, first["results"])
        assert (ref["artifact"], ref["format"], ref["source_sha256"]) == (r["artifact"], r["format"], r["source_sha256"])
        assert ref["path"] != r["path"] or r["artifact"] == "onnx"

    # a baseline without the TFLite row: that row is a warning, not a failed budget
    first["results"] = [r for r in first["results"] if r["format"] != "tflite"]
    checks = gate(second, BudgetFile(baseline=BaselineLimit(max_ratio=1000)), baseline=first)
    assert len(checks) == 3 and second["passed"], checks
    assert len(second["warnings"]) == 1 and "tflite" in second["warnings"][0]
    assert "no counterpart in the baseline" in second["warnings"][0]

    base = tmp_path / "base.json"
    base.write_text(json.dumps(first))
    budget = tmp_path / "budget.yaml"
    budget.write_text("version: 1\nbaseline: {statistic: p50, max_ratio: 1000}\n")
    result = cli("bench", moved, "--iters", 3, "--warmup", 1, "--baseline", base, "--budget", budget, "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert [w for w in doc["warnings"] if "tflite" in w] and "warning:" in result.stderr
    assert all(c["passed"] for c in doc["budgets"]) and len(doc["budgets"]) == 2


def test_estimate_on_tflite_components_counts_their_onnx_sibling(bundles, tmp_path, cli):
    result = cli("bench", bundles["multi"] / "vision-tflite", "--estimate", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = json.loads(result.stdout)["results"]
    assert row["estimated_for"].endswith("vision-tflite") and row["estimated_from"].endswith("vision")
    assert row["estimate_note"] == "vision-tflite: estimated from its ONNX sibling vision" and row["gflops"] > 0
    doc = bench([bundles["multi"]], BenchSettings(), get_target("tflite"), estimate=True)  # picks vision-tflite
    assert [r["estimate_note"] for r in doc["results"]] == ["vision-tflite: estimated from its ONNX sibling vision"]
    from mmdeploy.bench.report import markdown

    assert "- vision-tflite: estimated from its ONNX sibling vision" in markdown(doc)

    lone = shutil.copytree(bundles["multi"] / "vision-tflite", tmp_path / "lone-tflite")  # no bundle around it
    result = cli("bench", lone, "--estimate")
    assert result.returncode == 2 and "no ONNX sibling" in result.stderr
    assert "internal error" not in result.stderr


def test_failed_budget_with_json_is_one_document_with_its_error(cli, bundles):
    """--json keeps one JSON object on stdout: the results, the failed checks and the error."""
    result = cli("bench", bundles["onnx"], "--iters", 3, "--warmup", 1, "--max-size-mb", 1e-6, "--json")
    assert result.returncode == 1 and "error: 1 of 1 budget(s) failed" in result.stderr
    doc = json.loads(result.stdout)
    assert doc["error"]["type"] == "BudgetExceeded" and doc["error"]["exit_code"] == 1
    assert doc["results"] and doc["passed"] is False
