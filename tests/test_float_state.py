"""No global side effects on the process's floating-point state.

ORT's ``session.set_denormal_as_zero`` and OpenVINO's ``CPU_DENORMALS_OPTIMIZATION`` set
flush-to-zero / denormals-are-zero on the calling thread for the rest of the process: the user's
numpy and torch then flush too, and on an AVX2-only CPU OpenVINO's CPU plugin computed dynamic
shapes wrong afterwards (``Broadcast ... Value -1``, a ``(0, 16)`` output for a batch of 1).
These tests run on any CPU: the flags flush denormals everywhere, whatever breaks after.
"""

from __future__ import annotations

import numpy as np
import pytest

from builders import shared_bundle
from mmdeploy.backends import get_backend, load_runner

TINY = np.float32(1e-40)  # a float32 denormal


def keeps_denormals() -> bool:
    import torch

    return bool(TINY * np.float32(1) != 0) and float(torch.tensor([1e-40]) * 1.0) != 0.0


def test_no_runner_flushes_denormals_in_the_calling_process(tmp_path):
    assert keeps_denormals(), "the test process already flushes denormals: an earlier test leaked it"
    vision = shared_bundle() / "vision"
    feeds = {"pixel_values": np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)}
    ran = []
    load_runner(vision, threads=1).run(feeds)
    ran.append("onnxruntime")
    assert keeps_denormals(), "onnxruntime's session flushed denormals"

    out = tmp_path / "openvino"
    out.mkdir()
    get_backend("openvino").compile(vision, out, {"precision": "fp32"})
    load_runner(out, threads=1).run(feeds)
    ran.append("openvino")
    assert keeps_denormals(), "the OpenVINO runner flushed denormals"

    from mmdeploy.targets import device_worker

    item = {"model": str(out / "model.xml"), "input_names": ["pixel_values"], "output_names": ["image_embeds"]}
    device_worker.OpenVINORunner(item, 1).run(feeds)
    item = {"model": str(vision / "model.onnx"), "input_names": ["pixel_values"], "output_names": ["image_embeds"]}
    device_worker.OrtRunner(item, 1).run(feeds)
    ran.append("device worker")
    assert keeps_denormals(), "the device worker's runners flushed denormals"

    from builders import shared_adapter

    from mmdeploy.backends.torch import TorchRunner

    import torch

    threads = torch.get_num_threads()
    TorchRunner(shared_adapter().components()["vision"], threads=1).run(feeds)
    assert torch.get_num_threads() == threads, "the torch runner left its thread setting behind"
    ran.append("torch")
    assert keeps_denormals() and ran == ["onnxruntime", "openvino", "device worker", "torch"]


def test_openvino_after_onnxruntime_in_one_process_equals_onnxruntime(tmp_path):
    """The sequence that broke on AVX2-only CPUs: an ORT session first, then OpenVINO on a
    dynamic-batch model, at batches 1, 2, 1, 3 (static compilations and the dynamic fallback)."""
    vision = shared_bundle() / "vision"
    ort = load_runner(vision, threads=1)
    out = tmp_path / "openvino"
    out.mkdir()
    get_backend("openvino").compile(vision, out, {"precision": "fp32"})
    ov = load_runner(out, threads=1)
    rng = np.random.default_rng(1)
    for batch in (1, 2, 1, 3, 4, 5):
        x = {"pixel_values": rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)}
        want = ort.run(x)["image_embeds"]
        got = ov.run(x)["image_embeds"]
        assert got.shape == want.shape == (batch, 16)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_a_wrong_output_shape_is_an_error_naming_the_runtime():
    """A batch-0 output for a batch-1 feed is never passed on as a result."""
    from mmdeploy.backends.base import CheckedRunner
    from mmdeploy.artifact import read_manifest
    from mmdeploy.errors import OutputShapeError

    class Broken:
        name, input_names, output_names = "openvino", ["pixel_values"], ["image_embeds"]

        def run(self, feeds):
            return {"image_embeds": np.zeros((0, 16), np.float32)}

    m = read_manifest(shared_bundle() / "vision")
    runner = CheckedRunner(Broken(), m.inputs, m.outputs)
    with pytest.raises(OutputShapeError, match=r"openvino returned image_embeds of shape \(0, 16\)"):
        runner.run({"pixel_values": np.zeros((1, 3, 32, 32), np.float32)})
    assert runner.input_names == ["pixel_values"]


SIGNAL_AFTER_RUNNERS = r"""
import gc, signal, sys
import numpy as np
from mmdeploy.artifact import sigterm_raises
from mmdeploy.errors import Terminated

xml, kind = sys.argv[1], sys.argv[2]
feeds = {"pixel_values": np.zeros((1, 3, 32, 32), np.float32)}
if kind == "runner":
    from mmdeploy.backends.openvino import OpenVINORunner
    runners = [OpenVINORunner(xml, 1), OpenVINORunner(xml, 1)]
else:
    from mmdeploy.targets import device_worker
    item = {"model": xml, "input_names": ["pixel_values"], "output_names": ["image_embeds"]}
    runners = [device_worker.OpenVINORunner(item, 1), device_worker.OpenVINORunner(item, 1)]
for runner in runners:
    runner.run(feeds)
del runner
runners.pop(0); gc.collect()  # destroyed in the order they were made (not last-in first-out)
runners.pop(0); gc.collect()
try:
    with sigterm_raises():
        signal.raise_signal(signal.SIGTERM)
except Terminated:
    print("handled")
"""


@pytest.mark.parametrize("kind", ["runner", "device worker"])
def test_a_signal_after_openvino_runners_is_handled_not_a_crash(tmp_path, kind):
    """OpenVINO's CPU plugin gives the thread an alternate signal stack per Core and unmaps it when
    that Core goes; Cores destroyed first-in first-out left the stack unmapped and the next
    Ctrl-C / SIGTERM was a segmentation fault (found as CI's exit 139).  The project keeps one Core."""
    import subprocess
    import sys

    out = tmp_path / "openvino"
    out.mkdir()
    get_backend("openvino").compile(shared_bundle() / "vision", out, {"precision": "fp32"})
    proc = subprocess.run([sys.executable, "-c", SIGNAL_AFTER_RUNNERS, str(out / "model.xml"), kind],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "handled" in proc.stdout, (proc.returncode, proc.stderr[-2000:])
