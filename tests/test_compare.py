import numpy as np
import pytest

from mmdeploy.compare import compare_outputs, verify_runner
from mmdeploy.errors import VerificationError


class Scaled:
    """A runner returning the reference scaled: a controllable error."""

    name = "scaled"
    input_names = ["x"]
    output_names = ["y"]

    def __init__(self, factor):
        self.factor = factor

    def run(self, feeds):
        return {"y": feeds["x"] * self.factor}


def test_metrics():
    ref = {"y": np.array([[1.0, 2.0], [3.0, 4.0]])}
    m = compare_outputs(ref, {"y": ref["y"] * 1.01})["y"]
    assert m["max_abs"] == pytest.approx(0.04)
    assert m["max_rel"] == pytest.approx(0.01)
    assert m["cosine"] == pytest.approx(1.0)
    flipped = compare_outputs(ref, {"y": -ref["y"]})["y"]
    assert flipped["cosine"] == pytest.approx(-1.0)
    assert compare_outputs(ref, {})["y"]["missing"]
    assert "shape_mismatch" in compare_outputs(ref, {"y": np.zeros((3, 2))})["y"]


def test_verify_runner_passes_and_fails_with_a_table():
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    cases = [({"x": x[:1]}, {"y": x[:1]}), ({"x": x}, {"y": x})]
    record = verify_runner(Scaled(1.0), cases, atol=1e-6)
    assert record["passed"] and record["batch_sizes"] == [1, 3]
    with pytest.raises(VerificationError) as err:
        verify_runner(Scaled(1.5), cases, atol=1e-3, label="openvino/vision")
    assert "openvino/vision" in err.value.message and "y" in err.value.message
    assert "FAIL" in err.value.details
    assert err.value.exit_code == 1
