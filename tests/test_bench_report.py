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


def _doc(tmp_path, **settings):
    a, b = component(tmp_path / "fp32", 2), component(tmp_path / "int8", 1)
    return bench([a, b], BenchSettings(warmup=1, iters=10, **settings), None)


def test_html_title_code_and_pass_fail_as_words(tmp_path):
    doc = _doc(tmp_path, isolated_memory=False)
    gate(doc, quick_rules(max_p50_ms=1e6, max_size_mb=1e-9))  # one budget holds, one fails
    md, page = report.markdown(doc), report.html_page(doc)
    assert "✅" not in md + page and "❌" not in md + page
    assert "| PASS | command line |" in md and "| FAIL | command line |" in md
    assert "<td class='pass'>PASS</td>" in page and "<td class='fail'>FAIL</td>" in page
    heading = page[page.index("<h2>"):page.index("</h2>")]
    assert "`" not in heading and "<code>local</code>" in heading


def test_speed_up_column_against_the_first_artifact(tmp_path):
    rows = [{"artifact": "fp32", "component": "vision", "p50_ms": 10.0},
            {"artifact": "fp32", "component": "text", "p50_ms": 4.0},
            {"artifact": "int8", "component": "vision", "p50_ms": 4.0},
            {"artifact": "int8", "component": "audio", "p50_ms": 1.0}]
    assert report.speedup_vs_first(rows) == [1.0, 1.0, 2.5, None]
    md = report.markdown(_doc(tmp_path, isolated_memory=False))
    assert "| speed-up vs fp32 |" in md and "| 1.00x |" in md


def test_peak_rss_is_each_artifacts_own_or_labelled_process_wide(tmp_path):
    big = component(tmp_path / "big", layers=16, width=1024)  # 64 MB of weights
    small = component(tmp_path / "small", layers=1, width=64)
    doc = bench([big, small], BenchSettings(warmup=1, iters=3), None)
    by_name = {r["artifact"]: r for r in doc["results"]}
    assert all(r["peak_rss_scope"] == "artifact" for r in doc["results"])
    # measured apart, the small artifact does not inherit the big one's peak (as a process-wide peak would)
    assert by_name["big"]["peak_rss_delta_mb"] > by_name["small"]["peak_rss_delta_mb"] + 40
    assert by_name["small"]["peak_rss_mb"] < by_name["small"]["process_peak_rss_mb"]
    assert "peak RSS MB (own process)" in report.markdown(doc)
    shared = report.markdown(_doc(tmp_path / "shared", isolated_memory=False))
    assert "peak RSS MB (whole bench process so far)" in shared and "not that artifact alone" in shared
