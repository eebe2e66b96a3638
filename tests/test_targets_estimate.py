import json

import pytest

from _bench_models import component
from mmdeploy.bench import BenchSettings, bench
from mmdeploy.errors import InputError
from mmdeploy.targets import get_target
from mmdeploy.targets.estimate import count


def test_flops_counted_from_shapes(tmp_path):
    c = component(tmp_path / "c", 3, width=128)
    got = count(c / "model.onnx", batch=2)
    assert got["flops"] == 3 * 2 * (2 * 64) * 128 * 128  # layers x 2 x M x K x N
    assert got["weight_bytes"] == 3 * 128 * 128 * 4 and got["uncounted_nodes"] == 0


def test_conv_flops(tmp_path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    assert count(tmp_path / "m.onnx", batch=1)["flops"] == 2 * 8 * 16 * 16 * 27


def test_estimate_is_labelled_everywhere(tmp_path):
    from mmdeploy.bench import report

    c = component(tmp_path / "c", 2)
    doc = bench([c], BenchSettings(), get_target("jetson-orin-nano"), estimate=True)  # no host needed
    assert doc["kind"] == "estimate"
    r = doc["results"][0]
    assert r["estimate"] is True and r["label"] == "ESTIMATE" and r["p50_ms"] > 0 and "samples_ms" not in r
    assert "ESTIMATE" in report.markdown(doc) and "ESTIMATE" in report.html_page(doc)


def test_estimate_cli_and_budget_refused(tmp_path, capsys):
    from mmdeploy.cli import main

    c = component(tmp_path / "c", 2)
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(c), "--target", "rpi5", "--estimate", "--json"])
    assert exc.value.code == 0
    assert json.loads(capsys.readouterr().out)["kind"] == "estimate"
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(c), "--target", "rpi5", "--estimate", "--max-p50-ms", "3"])
    assert exc.value.code == 2
    assert "not ESTIMATES" in capsys.readouterr().err


def test_integer_ops_use_the_int8_peak(tmp_path):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from mmdeploy.artifact import read_manifest
    from mmdeploy.targets.estimate import estimate_item

    c = component(tmp_path / "c", 2, width=128)
    q = tmp_path / "q"
    q.mkdir()
    quantize_dynamic(str(c / "model.onnx"), str(q / "model.onnx"), weight_type=QuantType.QInt8)
    assert count(q / "model.onnx")["flops"] == count(c / "model.onnx")["flops"]
    # an ORT-only int8 graph: estimated for a board that runs ONNX Runtime, refused for TensorRT
    profile = get_target("jetson-orin-nano").model_copy(update={"backend": "onnxruntime"})
    fp = estimate_item(c, read_manifest(c), profile)
    manifest = read_manifest(c)
    int8 = estimate_item(q, manifest, profile)
    assert int8["int8_gops"] == fp["gflops"] and fp["int8_gops"] == 0
    assert int8["compute_ms"] < fp["compute_ms"]
    assert int8["runtime"] == "onnxruntime" and "assumes onnxruntime" in int8["estimate_note"]
    with pytest.raises(InputError, match="assumes tensorrt, which cannot run .*MatMulInteger.*ONNX Runtime-only"):
        estimate_item(q, manifest, get_target("jetson-orin-nano"))
    assert estimate_item(c, manifest, get_target("jetson-orin-nano"))["runtime"] == "tensorrt"
