"""The device agent: ``quantize --method auto --target PROFILE`` times its built candidates on
the profile's device.

It is the ``bench --target`` path (:func:`mmdeploy.targets.remote.run_remote`: one tar over
SSH, the stdlib-only worker, the device's own python and runtime), fed with the candidates
before they are artifacts: each built component gets a minimal component manifest (format,
precision, inputs/outputs, model file, OpenVINO inference precision) in a scratch folder, its
model files linked there, and the calibration feed as its input.  A candidate whose runtime the
device lacks is skipped with a reason; TensorRT candidates (Q/DQ int8 or fp16 ONNX) have their
engine built on the device, as ``bench`` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmdeploy.errors import MMDeployError

WARMUP = 5
ITERS = 20
# the runtime that runs each format as shipped (TensorRT candidates are ONNX built into an engine there)
FORMAT_RUNTIME = {"onnx": "onnxruntime", "openvino": "openvino", "tflite": "tflite"}


class Unreachable(MMDeployError):
    """The profile's device cannot be reached over SSH (no host, no ssh, refused, timed out)."""


@dataclass
class Build:
    """One built candidate component, before it is an artifact."""

    directory: Path  # the quantize pass's output folder
    model_file: str
    format: str  # onnx | openvino | tflite
    precision: str  # int8 | fp16 | bf16 ...
    runtime: str  # the candidate's runtime (tensorrt: the ONNX is built into an engine on the device)
    inference_precision: str | None = None  # OpenVINO INFERENCE_PRECISION_HINT
    pad: dict | None = None  # TFLite: padded inputs


@dataclass
class Measurement:
    """What the device measured: median latency per candidate and component, who skipped why."""

    profile: str
    host: str
    board: dict  # :func:`mmdeploy.targets.boards.identify` of the device's probe
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # candidate -> component -> p50
    skipped: dict[str, str] = field(default_factory=dict)  # candidate -> one line
    runtimes: dict[str, str] = field(default_factory=dict)  # what the device has (name -> version)
    iters: int = ITERS

    @property
    def identity(self) -> str:
        """The board (``Raspberry Pi 5 Model B``) or, on a machine that is no known board, its CPU."""
        b = self.board
        if not b.get("model"):  # identify() already named it by its CPU and architecture
            return b.get("identity") or f"{b.get('cpu_model') or 'unknown device'} ({b.get('arch') or '?'})"
        cpu = b.get("cpu_model")
        return f"{b['model']}, {cpu} ({b.get('arch') or '?'})" if cpu and cpu not in b["model"] else b["model"]

    def record(self) -> dict[str, Any]:
        return {"profile": self.profile, "host": self.host, "identity": self.identity,
                "board": self.board.get("profile"), "cpu_model": self.board.get("cpu_model"),
                "arch": self.board.get("arch"), "os": self.board.get("os"), "runtimes": self.runtimes,
                "timing": f"median of {self.iters} runs after {WARMUP} warm-up, one candidate at a time"}


def check_reachable(profile) -> None:
    """Unreachable (one line, naming the host and what to fix) when ssh cannot log in."""
    from mmdeploy.targets.remote import SSH

    try:
        SSH(profile).check()
    except MMDeployError as exc:
        raise Unreachable(exc.message, exc.hint) from None


def _component_dir(build: Build, signature, component: str, feeds: dict, dest: Path):
    """A minimal component artifact over the build's files (linked) with ``feeds`` as its input."""
    from mmdeploy.artifact import MANIFEST_NAME, REFERENCE_NAME, save_reference, write_manifest

    dest.mkdir(parents=True)
    for f in Path(build.directory).iterdir():
        if f.is_file() and f.name not in (MANIFEST_NAME, REFERENCE_NAME):
            (dest / f.name).symlink_to(f.resolve())
    m = signature.model_copy(deep=True)
    m.kind, m.name, m.format, m.precision = "component", component, build.format, build.precision
    m.passes, m.parity, m.files, m.parent, m.source = [], {}, {}, None, None
    m.metadata = {"model_file": build.model_file, "component": component}
    if build.format == "openvino":
        m.metadata["inference_precision"] = build.inference_precision or "f32"
    if build.format == "tflite":
        m.metadata.update(io_quantized=True, static_batch=1, pad_inputs=build.pad or {})
    save_reference(dest, [({k: np.asarray(v) for k, v in feeds.items()}, {})])
    return write_manifest(dest, m)


def measure_candidates(profile, builds: dict[str, dict[str, Build]], signatures: dict, feeds: dict[str, dict],
                       log: Callable[[str], None] = lambda m: None, iters: int = ITERS) -> Measurement:
    """Time every candidate (``builds``: candidate -> component -> Build) on ``profile``'s device.

    ``signatures``: each component's fp32 manifest (inputs/outputs); ``feeds``: one input per
    component (the calibration feed the host timed with).  Raises :class:`Unreachable` when
    the device cannot be reached, another MMDeployError when it was and the run failed there."""
    from mmdeploy.bench.harness import BenchSettings, Item
    from mmdeploy.targets.remote import run_remote

    check_reachable(profile)
    from mmdeploy.artifact import scratch_dir

    with scratch_dir("mmdeploy-agent-") as scratch:  # removed on every exit path, SIGTERM included
        items = []
        for cand, comps in builds.items():
            for comp, build in comps.items():
                m = _component_dir(build, signatures[comp], comp, feeds[comp], scratch / cand / comp)
                items.append(Item(artifact=cand, path=scratch / cand / comp, bundle=None, model=cand,
                                  component=comp, manifest=m))
        also = tuple(sorted({FORMAT_RUNTIME[b.format] for c in builds.values() for b in c.values()
                             if b.runtime != "tensorrt" and b.format in FORMAT_RUNTIME}))
        first = next(iter(feeds.values()))
        batch = int(np.asarray(next(iter(first.values()))).shape[0]) if first else 1
        settings = BenchSettings(warmup=WARMUP, iters=iters, batch=max(batch, 1))
        log(f"auto: timing {len(builds)} candidate(s) on {profile.name} ({profile.host}) through the device agent")
        doc = run_remote(items, settings, profile, skip_missing=True, also_runs=also)
    board = doc["device"]["board"]
    out = Measurement(profile.name, doc["remote"]["host"], board, iters=iters,
                      runtimes=dict((doc["device"].get("probe") or {}).get("runtimes") or {}))
    for r in doc["results"]:
        out.latency_ms.setdefault(r["artifact"], {})[r["component"]] = float(r["p50_ms"])
    for label, why in doc.get("skipped", {}).items():
        out.skipped.setdefault(label.split("/", 1)[0], why)
        out.latency_ms.pop(cand, None)  # a candidate runs on the device whole or not at all
    return out
