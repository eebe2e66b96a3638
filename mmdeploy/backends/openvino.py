"""OpenVINO: IR (``model.xml`` + ``model.bin``) through ``openvino.convert_model``, fp32 or with
fp16-compressed weights, run on the CPU device."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.backends.base import Backend
from mmdeploy.errors import InputError, UnsupportedError

PRECISIONS = ("fp32", "fp16")


_CORE = None


def core():
    """The process's one ``openvino.Core``, never destroyed.

    Each Core's CPU plugin sets an alternate signal stack on the thread that creates it and, when
    destroyed, restores the one it found and unmaps its own.  Two Cores destroyed in the order
    they were created leave the thread's signal stack pointing at unmapped memory: the next
    signal (Ctrl-C, SIGTERM) then kills the process with a segmentation fault (measured with
    openvino 2026.4; the setup is openvinotoolkit/openvino#11894).  One Core for the process
    keeps the stack valid."""
    global _CORE
    if _CORE is None:
        import openvino as ov

        _CORE = ov.Core()
    return _CORE


def _numpy_dtype(element_type) -> np.dtype:
    return np.dtype(element_type.to_dtype())


class OpenVINORunner:
    """Runs an IR on the CPU device.  fp32 inference precision unless told otherwise (a CPU with
    bf16 support would otherwise pick bf16 and drift from the reference); an artifact that
    ``quantize --method auto`` chose at bf16/f16 records its ``inference_precision``.

    Shape-specialized: a model with dynamic dimensions is compiled for the static shapes of the
    feeds it is given (the CPU plugin then fuses more and skips per-call shape inference:
    CLIP B/32 NNCF int8, batch 1, 2 threads on a Xeon with AMX: 13.0 ms against 17.2 ms
    dynamic), up to :attr:`MAX_SHAPES` shapes; any further shape runs on one dynamic
    compilation.  Threads are pinned (``ENABLE_CPU_PINNING``); denormals are not flushed:
    ``CPU_DENORMALS_OPTIMIZATION`` sets FTZ/DAZ on the calling thread for good (see
    :func:`mmdeploy.backends.onnxruntime.session_options`).  ``static_shapes=False`` compiles the
    model as it is."""

    MAX_SHAPES = 3
    LARGE_WEIGHTS = 1 << 30  # bytes of model.bin past which one compilation is kept at a time

    def __init__(self, xml_path: str | Path, threads: int | None = None, name: str = "openvino",
                 device: str = "CPU", inference_precision: str = "f32",
                 input_names: list[str] | None = None, output_names: list[str] | None = None,
                 static_shapes: bool = True, config: dict[str, Any] | None = None):

        self.name = name
        self.path, self.device = str(xml_path), device
        self.config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": inference_precision,
                                       "PERFORMANCE_HINT": "LATENCY"}
        if device == "CPU":  # CPU-plugin properties (another device would reject them)
            self.config.update(ENABLE_CPU_PINNING=True)
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.config.update(config or {})  # e.g. {"PERF_COUNT": True}: per-node times in request.profiling_info
        self.core = core()
        weights = Path(self.path).with_suffix(".bin")
        self._large = weights.is_file() and weights.stat().st_size > self.LARGE_WEIGHTS
        model = self.core.read_model(self.path)
        # a port may carry several tensor names (OpenVINO merges e.g. an input with a Cast's
        # output): pick the ONNX name the manifest knows
        in_names = [_port_name(p, input_names) for p in model.inputs]
        self._out_names = [_port_name(p, output_names) for p in model.outputs]
        self._dtypes = {n: _numpy_dtype(p.get_element_type()) for n, p in zip(in_names, model.inputs)}
        self.input_names, self.output_names = in_names, list(self._out_names)
        self._static: dict[tuple, Any] = {}  # feed shapes -> infer request of a compilation for them
        self._dynamic = None
        self.request = None  # the infer request of the last run
        self._specialize = static_shapes and any(p.get_partial_shape().is_dynamic for p in model.inputs)
        if not self._specialize:
            self._dynamic = self._compile(model)

    def _compile(self, model):
        return self.core.compile_model(model, self.device, self.config).create_infer_request()

    def _dynamic_request(self):
        if self._dynamic is None:
            self._dynamic = self._compile(self.core.read_model(self.path))
        return self._dynamic

    def _request(self, inputs: dict[str, np.ndarray]):
        if not self._specialize:
            return self._dynamic_request()
        key = tuple((n, inputs[n].shape) for n in self.input_names if n in inputs)
        request = self._static.get(key)
        if request is None and self._large and self._static:
            # each compilation holds its own copy of the weights: past LARGE_WEIGHTS only the
            # latest shape's is kept (a model past 2 GB would otherwise hold three or four)
            self._static.clear()
            self.request = None
        if request is None and len(self._static) < self.MAX_SHAPES and len(key) == len(self.input_names):
            model = self.core.read_model(self.path)  # re-read (mmap): the runner keeps no ov.Model
            try:
                model.reshape({i: list(inputs[n].shape) for i, n in enumerate(self.input_names)})
            except RuntimeError:  # a graph that cannot take these static shapes: the dynamic one serves
                self._specialize = False
                return self._request(inputs)
            request = self._static[key] = self._compile(model)
        return self._dynamic_request() if request is None else request

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"{self.name}: no value for input {', '.join(missing)}",
                             "inputs: " + ", ".join(self.input_names))
        inputs = {k: np.ascontiguousarray(v, dtype=self._dtypes[k]) for k, v in feeds.items() if k in self._dtypes}
        request = self.request = self._request(inputs)
        result = request.infer({i: inputs[n] for i, n in enumerate(self.input_names) if n in inputs})
        return {name: np.array(value) for name, value in zip(self._out_names, result.values())}


def _port_name(port, known: list[str] | None) -> str:
    names = port.get_names()
    for name in known or []:
        if name in names:
            return name
    # else the graph's own name (``pixel_values``) over an internal tensor's (``/x/Cast_output_0``)
    return min(names, key=lambda n: (n.startswith("/"), len(n))) if names else port.get_any_name()


def unconverted_ops(message: str) -> list[str]:
    """Op types named in an OpenVINO conversion failure ("No conversion rule found for ...")."""
    found: list[str] = []
    for pattern in (r"No conversion rule found for operations?:\s*(.+)",
                    r"Conversion failed for operations?:\s*(.+)"):
        for match in re.finditer(pattern, message):
            found += [op.strip() for op in match.group(1).split(",") if op.strip()]
    return found


def describe_nodes(onnx_path: Path, op_types: list[str], limit: int = 3) -> str:
    """'FancyOp (node my_node)' for the ONNX nodes whose (domain.)op_type is listed."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    parts = []
    for op in op_types:
        nodes = [n.name or f"#{i}" for i, n in enumerate(graph.node)
                 if op in (n.op_type, f"{n.domain}.{n.op_type}")]
        shown = ", ".join(nodes[:limit]) + (f" and {len(nodes) - limit} more" if len(nodes) > limit else "")
        parts.append(f"{op} (node {shown})" if nodes else op)
    return "; ".join(parts)


class OpenVINOBackend(Backend):
    name = "openvino"
    format = "openvino"
    extra = "openvino"
    packages = ("openvino",)
    precisions = PRECISIONS

    def available(self) -> tuple[bool, str]:
        try:
            import openvino
        except ImportError:
            return False, "package openvino is not installed"
        return True, f"openvino {openvino.get_version().split('-')[0]}"

    def compile(self, onnx_artifact: Path, output_dir: Path, options: dict[str, Any]):
        """``options``: precision (fp32 | fp16: weights compressed to fp16, computed in fp32 on
        CPU), threads, atol."""
        from mmdeploy.backends.compile_common import child_manifest, finalize, read_onnx_artifact

        self.require()
        import openvino as ov

        precision = options.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise InputError(f"openvino has no precision {precision!r}", "use fp32 or fp16")
        parent, model_path = read_onnx_artifact(onnx_artifact)
        start = time.perf_counter()
        try:
            model = ov.convert_model(str(model_path))
        except Exception as exc:  # OpConversionFailure / GeneralFailure from the frontend
            ops = unconverted_ops(str(exc))
            label = options.get("component") or parent.name
            if ops:
                raise UnsupportedError(
                    f"openvino cannot convert {label}: {describe_nodes(model_path, ops)}",
                    "remove or replace that op before export (or use another --target)") from None
            first = next((line for line in str(exc).splitlines() if line.strip()), exc.__class__.__name__)
            raise UnsupportedError(f"openvino cannot convert {label}: {first}",
                                   "rerun with --debug for OpenVINO's full message") from None
        ov.save_model(model, str(Path(output_dir) / "model.xml"), compress_to_fp16=precision == "fp16")
        del model  # the weights in memory: the runner that verifies reads the saved IR
        seconds = round(time.perf_counter() - start, 3)
        # an int8 (QDQ) parent stays int8 in OpenVINO: label the artifact with the parent's precision
        label_precision = precision if parent.precision == "fp32" else parent.precision
        manifest = child_manifest(
            self, onnx_artifact, parent, precision=label_precision,
            metadata={"model_file": "model.xml", "weights_file": "model.bin", "device": "CPU",
                      "inference_precision": "f32", "compressed_weights": precision == "fp16"},
            params={"compress_to_fp16": precision == "fp16"}, report={"convert_s": seconds})
        return finalize(self, onnx_artifact, output_dir, manifest, options)

    def load(self, artifact_dir: Path, threads: int | None = None, **options) -> OpenVINORunner:
        from mmdeploy.artifact import read_manifest

        self.require()
        manifest = read_manifest(artifact_dir)
        name = "openvino" + ("" if manifest.precision == "fp32" else f"-{manifest.precision}")
        return OpenVINORunner(Path(artifact_dir) / manifest.metadata.get("model_file", "model.xml"),
                              threads=threads, name=name, device=options.get("device", "CPU"),
                              inference_precision=manifest.metadata.get("inference_precision", "f32"),
                              input_names=[i.name for i in manifest.inputs],
                              output_names=[o.name for o in manifest.outputs])
