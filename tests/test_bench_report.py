from xml.etree import ElementTree as ET

from _bench_models import component
from mmdeploy.bench import BenchSettings, bench, gate, report
from mmdeploy.bench.budgets import quick_rules


def test_markdown_junit_html_and_json(tmp_path):
    a, b = component(tmp_path / "fp32", 2), component(tmp_path / "int8", 1)
    doc = bench([a, b], BenchSettings(warmup=1, iters=15), None)
    doc["accuracy"] = [{"artifact": "fp32", "metric": "zero-shot-top1", "value": 0.9, "n": 10, "reference": 0.9,
                        "drop_pts": 0.0},
                       {"artifact": "int8", "metric": "zero-shot-top1", "value": 0.8, "n": 10, "reference": 0.9,
                        "drop_pts": 10.0}]
    gate(doc, quick_rules(max_p50_ms=1e-6))
    md = report.markdown(doc)
    assert "| fp32 | vision | onnx/fp32 |" in md and "FAIL" in md and "p50 ms" in md
    suite = ET.fromstring(report.junit(doc))
    assert suite.get("tests") == "2" and len(suite.findall(".//failure")) == 2
    out = report.write_report(doc, tmp_path / "rep")
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2  # latency distributions, accuracy vs latency
    assert "<table>" in html and (out / "results.json").is_file() and (out / "junit.xml").is_file()
