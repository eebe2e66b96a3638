import json

import pytest

from _bench_models import bundle
from mmdeploy.bench import BenchSettings, bench
from mmdeploy.cli import main


def test_family_without_task_degrades_with_a_message(tmp_path):
    b = bundle(tmp_path / "m", {"vision": 1})
    doc = bench([b], BenchSettings(iters=3, accuracy=True), None)
    (acc,) = doc["accuracy"]
    assert acc["value"] is None and "has no task metric" in acc["message"]


@pytest.mark.slow
def test_zero_shot_accuracy_against_pytorch_reference_and_budget(clip_bundle, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(clip_bundle), "--iters", "5", "--accuracy", "--max-accuracy-drop", "0.5", "--json",
              "--report", str(tmp_path / "rep")])
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    (acc,) = doc["accuracy"]
    assert acc["metric"] == "zero-shot-top1" and acc["n"] > 0 and acc["reference_source"] == "pytorch"
    assert abs(acc["drop_pts"]) < 1e-9  # ONNX fp32 agrees with PyTorch
    assert doc["budgets"][0]["check"] == "max_accuracy_drop_pts" and doc["passed"]
    assert "Accuracy vs latency" in (tmp_path / "rep" / "report.html").read_text()


def test_accuracy_budget_needs_accuracy_flag(tmp_path, capsys):
    b = bundle(tmp_path / "m", {"vision": 1})
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(b), "--max-accuracy-drop", "1"])
    assert exc.value.code == 2 and "--accuracy" in capsys.readouterr().err
