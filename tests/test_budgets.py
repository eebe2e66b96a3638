"""The budget gate, end to end through the CLI on real ONNX Runtime timings."""

import json
import subprocess
import sys
from xml.etree import ElementTree as ET

import numpy as np
import pytest

from _bench_models import component
from mmdeploy.bench import budgets as bd
from mmdeploy.cli import main
from mmdeploy.errors import InputError


def cli(*args) -> int:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    return exc.value.code


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("gate")
    return {
        "base": component(root / "base", 12),
        "same": component(root / "same", 12),  # an identical copy: no change
        "slow": component(root / "slow", 24),  # a real 2x slowdown: twice the layers
    }


def test_impossible_budget_fails_with_junit_failure(models, tmp_path, capsys):
    junit = tmp_path / "junit.xml"
    code = cli("bench", models["base"], "--iters", 30, "--warmup", 3, "--max-p50-ms", 0.0001,
               "--max-size-mb", 1000, "--junit", junit)
    assert code == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith("error: 1 of 2 budget(s) failed")
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    failures = suite.findall(".//failure")
    assert len(failures) == 1 and "limit 0.0001" in failures[0].text


def test_generous_budget_passes(models, tmp_path, capsys):
    junit = tmp_path / "junit.xml"
    code = cli("bench", models["base"], "--iters", 30, "--max-p50-ms", 10000, "--max-p99-ms", 10000,
               "--junit", junit, "--json")
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["passed"] and len(doc["budgets"]) == 2
    assert ET.parse(junit).getroot().findall(".//failure") == []


GATE = """
version: 1
defaults: {confidence: 0.95, alpha: 0.01}
budgets:
  - artifact: "same*"
    relative: {to: base*, statistic: p50, max_ratio: 1.25}
  - artifact: "slow*"
    relative: {to: base*, statistic: p50, max_ratio: 1.25}
"""


@pytest.mark.slow
def test_relative_gate_catches_2x_slowdown_and_not_a_rerun(models, tmp_path, capsys):
    """Interleaved blocks in one run: the identical copy passes, the 2x model fails."""
    budget = tmp_path / "gate.yaml"
    budget.write_text(GATE)
    code = cli("bench", models["base"], models["same"], models["slow"],
               "--threads", 1, "--iters", 300, "--blocks", 10, "--warmup", 20, "--budget", budget, "--json")
    doc = json.loads(capsys.readouterr().out)
    by = {c["artifact"]: c for c in doc["budgets"]}
    assert by["same"]["passed"], by["same"]["message"]
    assert not by["slow"]["passed"], by["slow"]["message"]
    assert by["slow"]["measured"] > 1.5  # a lower bound only: load on a shared runner inflates the ratio
    assert code == 1


@pytest.mark.slow
def test_baseline_catches_2x_slowdown_and_not_a_rerun(models, tmp_path, capsys):
    """--save-baseline then --baseline: the same artifact passes, a 2x slower one fails."""
    base = tmp_path / "baseline.json"
    budget = tmp_path / "b.yaml"
    budget.write_text("version: 1\nbaseline: {statistic: p50, max_ratio: 1.4}\n")
    assert cli("bench", models["base"], "--threads", 1, "--iters", 300, "--save-baseline", base, "--json") == 0
    capsys.readouterr()
    assert cli("bench", models["same"], "--threads", 1, "--iters", 300, "--baseline", base,
               "--budget", budget, "--json") == 0
    assert json.loads(capsys.readouterr().out)["budgets"][0]["check"] == "p50_ratio_to_baseline"
    assert cli("bench", models["slow"], "--threads", 1, "--iters", 300, "--baseline", base,
               "--budget", budget) == 1
    assert "p50_ratio_to_baseline" in capsys.readouterr().err


def test_size_accuracy_and_unmatched_rules(tmp_path):
    doc = {"target": {"name": "cpu"}, "results": [
        {"artifact": "int8", "model": "m", "component": "vision", "size_mb": 5.0, "samples_ms": [1.0] * 10}],
        "accuracy": [{"artifact": "int8", "metric": "top1", "value": 0.80, "reference": 0.83, "drop_pts": 3.0}]}
    rules = bd.BudgetFile(budgets=[
        bd.BudgetRule(max_size_mb=4), bd.BudgetRule(max_accuracy_drop_pts=5),
        bd.BudgetRule(artifact="int8", max_accuracy_drop_pts=2), bd.BudgetRule(target="jetson*", max_p50_ms=1),
        bd.BudgetRule(artifact="fp16", target="cpu", max_p50_ms=1)])
    checks = bd.evaluate(doc, rules)
    assert [c["passed"] for c in checks] == [False, True, False, False]  # the jetson rule does not apply
    assert "no result matches" in checks[-1]["message"] and "fp16" in checks[-1]["message"]


BAD = {
    "bad.yaml": ("budgets:\n  - max_p50_ms: [1\n", r"bad.yaml:\d: malformed budgets file"),
    "unknown.yaml": ("budgets:\n  - artifact: a\n    max_p50: 3\n", r"unknown.yaml:3: invalid budgets file: .*unknown key 'max_p50'"),
    "neg.yaml": ("version: 1\nbudgets:\n  - max_p50_ms: -3\n", r"neg.yaml:3: .*greater than 0"),
    "ver.yaml": ("version: 7\n", r"ver.yaml:1: .*version"),
    "list.yaml": ("- 1\n- 2\n", r"list.yaml:1: a budgets file is a mapping"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_malformed_budgets_file_names_file_and_line(tmp_path, name):
    text, pattern = BAD[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=pattern):
        bd.load_budgets(tmp_path / name)


def test_malformed_budgets_file_cli_exit_2_one_line_no_traceback(models, tmp_path):
    (tmp_path / "b.yaml").write_text("budgets:\n  - {max_p50_ms: 3, oops: 1}\n")
    proc = subprocess.run([sys.executable, "-m", "mmdeploy", "bench", str(models["base"]), "--budget",
                           str(tmp_path / "b.yaml")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "b.yaml:2" in proc.stderr and "oops" in proc.stderr and "Traceback" not in proc.stderr


def test_shipped_budget_files_are_valid():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    for name in ("budgets.yaml", "budgets-jetson.yaml"):
        assert bd.load_budgets(repo / "benchmarks" / name).budgets


def test_cpu_scoped_rules_apply_only_on_their_class():
    """Issue 28: a latency budget states what is true on the CPU class it runs on; the other
    class's rule is noted, not checked (and cannot silently pass)."""
    from mmdeploy.bench.budgets import BudgetFile, evaluate

    rng = np.random.default_rng(0)
    fp32 = {"artifact": "fp32", "component": "vision", "model": "m", "samples_ms": list(rng.normal(10, 0.1, 200))}
    int8 = {"artifact": "int8", "component": "vision", "model": "m", "samples_ms": list(rng.normal(12, 0.1, 200))}
    for r in (fp32, int8):
        r["p50"] = float(np.median(r["samples_ms"]))
    budgets = BudgetFile.model_validate({"budgets": [
        {"name": "vnni", "artifact": "int8", "cpu": ["vnni"], "relative": {"to": "fp32", "max_ratio": 1.0}},
        {"name": "no-vnni", "artifact": "int8", "cpu": ["no-vnni"], "relative": {"to": "fp32", "max_ratio": 1.3}}]})
    for cls, failed in (("vnni", True), ("no-vnni", False)):
        doc = {"results": [dict(fp32), dict(int8)], "machine": {"cpu_class": cls, "cpu_tags": [cls]}}
        checks = evaluate(doc, budgets)
        assert [c["name"] for c in checks] == [cls]
        assert checks[0]["passed"] is (not failed)
        assert any("not checked" in n for n in doc["notes"])
