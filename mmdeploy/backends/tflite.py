"""TFLite / LiteRT: ``.tflite`` files (fp32, fp16 weights) run by the LiteRT interpreter with
XNNPACK and a thread count.

Route: litert-torch converts the component's PyTorch module directly (torch.export → StableHLO →
TFLite), with no TensorFlow and no download; onnx2tf would need TensorFlow (3.3 GB, its own venv
because it pins numpy 1.26/onnx 1.19) and fetches calibration data from GitHub at run time, which
fails offline.  So a TFLite artifact needs the torch component (from the adapter, or the
checkpoint named in the bundle's ``source``), not just the ONNX; the ONNX artifact is its parent
for lineage and for the reference outputs it is verified against.

litert-torch exports static shapes (its dynamic-batch lowering fails on CLIP's reshapes), so the
artifact is built for batch 1 and the runner feeds a larger batch one sample at a time.  It also
downcasts int64 inputs to int32 (most on-device runtimes lack int64); the manifest records the
int32 inputs and the runner casts feeds accordingly.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.backends.base import Backend
from mmdeploy.errors import InputError, UnsupportedError

PRECISIONS = ("fp32", "fp16")
MODEL_FILE = "model.tflite"


def interpreter_class():
    """LiteRT's interpreter, falling back to tflite-runtime's (same API)."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from tflite_runtime.interpreter import Interpreter
    return Interpreter


def _index(key: str) -> int:
    match = re.search(r"(\d+)$", key)
    return int(match.group(1)) if match else 0


def pad_feed(rules: dict[str, dict], name: str, value: np.ndarray) -> np.ndarray:
    """Zero-pad one input up to its static length (see :func:`padding_rules`)."""
    rule = rules.get(name)
    value = np.asarray(value)
    if not rule or value.shape[rule["axis"]] >= rule["length"]:
        return value
    widths = [(0, 0)] * value.ndim
    widths[rule["axis"]] = (0, rule["length"] - value.shape[rule["axis"]])
    return np.pad(value, widths, constant_values=rule.get("value", 0))


def _quantize(value: np.ndarray, dtype, scale: float, zero: int) -> np.ndarray:
    """A float feed for an int8/uint8 input, with the tensor's own scale and zero point."""
    if np.dtype(dtype).kind in "iu" and value.dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        value = np.clip(np.round(value / scale) + zero, info.min, info.max)
    return np.ascontiguousarray(value, dtype=dtype)


def _dequantize(value: np.ndarray, scale: float, zero: int) -> np.ndarray:
    if value.dtype in (np.int8, np.uint8) and scale:
        return (value.astype(np.float32) - zero) * np.float32(scale)
    return value


class TFLiteRunner:
    """Signature runner over a ``.tflite`` file; XNNPACK is LiteRT's default CPU delegate."""

    def __init__(self, model_path: str | Path, input_names: list[str], output_names: list[str],
                 threads: int | None = None, name: str = "tflite", pad: dict[str, dict] | None = None,
                 batched: list[str] | None = None):
        self.name = name
        self.batched = list(input_names if batched is None else batched)  # inputs with a batch axis
        self.pad = dict(pad or {})  # input -> {"axis", "length", "value"}: padded to the static length
        kwargs = {"num_threads": int(threads)} if threads else {}
        self.interpreter = interpreter_class()(model_path=str(model_path), **kwargs)
        signature = self.interpreter.get_signature_list()
        key = "serving_default" if "serving_default" in signature else next(iter(signature))
        self.runner = self.interpreter.get_signature_runner(key)
        # litert-torch names positional inputs args_0.. and outputs output_0..: map them to ours
        self._in_keys = dict(zip(input_names, sorted(signature[key]["inputs"], key=_index)))
        self._out_keys = dict(zip(sorted(signature[key]["outputs"], key=_index), output_names))
        details = self.runner.get_input_details()
        self._specs = {name: (details[k]["dtype"], tuple(int(d) for d in details[k]["shape"]))
                       for name, k in self._in_keys.items()}
        # an int8 .tflite (quantize --method tflite) has quantized inputs/outputs: (scale, zero point)
        self._in_quant = {name: details[k].get("quantization", (0.0, 0)) for name, k in self._in_keys.items()}
        self._out_quant = {k: v.get("quantization", (0.0, 0)) for k, v in self.runner.get_output_details().items()}
        self.input_names = list(input_names)
        self.output_names = list(output_names)

    def _run_one(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        args = {self._in_keys[n]: _quantize(np.asarray(feeds[n]), self._specs[n][0], *self._in_quant[n])
                for n in self.input_names}
        out = self.runner(**args)
        return {self._out_keys.get(k, k): _dequantize(np.array(v), *self._out_quant.get(k, (0.0, 0)))
                for k, v in out.items()}

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from mmdeploy.backends.base import run_static

        for name in self.input_names:
            if name not in feeds:
                raise InputError(f"{self.name}: missing input {name}", f"inputs are {', '.join(self.input_names)}")
            want, got = self._specs[name][1], np.shape(pad_feed(self.pad, name, feeds[name]))
            first = 1 if name in self.batched else 0
            if len(want) != len(got) or tuple(want[first:]) != tuple(got[first:]):
                raise InputError(f"{self.name}: input {name} has shape {list(got)}, the .tflite was built "
                                 f"for {list(want)} (static shapes)", "feed that shape, or re-compile")
        batched = [n for n in self.input_names if n in self.batched]
        model_batch = self._specs[batched[0]][1][0] if batched else None
        return run_static(self._run_one, {n: feeds[n] for n in self.input_names}, model_batch, batched, self.pad)


class TFLiteBackend(Backend):
    name = "tflite"
    format = "tflite"
    extra = "tflite"
    packages = ("litert-torch", "ai-edge-litert", "tflite-runtime")
    precisions = PRECISIONS
    needs_torch = True  # converts from the PyTorch component, not the ONNX

    def available(self) -> tuple[bool, str]:
        # find_spec, not import: importing litert-torch pulls jax and takes seconds
        have_interp = any(importlib.util.find_spec(m) for m in ("ai_edge_litert", "tflite_runtime"))
        if importlib.util.find_spec("litert_torch") is None:
            return False, "package litert-torch is not installed"
        if not have_interp:
            return False, "package ai-edge-litert (or tflite-runtime) is not installed"
        versions = []
        for dist in self.packages:
            try:
                versions.append(f"{dist} {metadata.version(dist)}")
            except metadata.PackageNotFoundError:
                pass
        return True, ", ".join(versions)

    def compile(self, onnx_artifact: Path, output_dir: Path, options: dict[str, Any]):
        """``options``: precision (fp32 | fp16), ``torch_component`` (the Component to convert;
        required), threads, atol."""
        from mmdeploy.artifact import TensorSpec, load_reference
        from mmdeploy.backends.compile_common import child_manifest, finalize, read_onnx_artifact

        self.require()
        precision = options.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise InputError(f"tflite has no precision {precision!r}", "use fp32 or fp16")
        parent, onnx_model = read_onnx_artifact(onnx_artifact)
        label = options.get("component") or parent.name
        check_flatbuffer_size(label, _weight_bytes(onnx_model), precision)
        component = options.get("torch_component")
        if component is None:
            raise UnsupportedError(
                f"tflite needs the PyTorch module of {label} (litert-torch converts from PyTorch)",
                "run `mmdeploy convert SOURCE --target tflite`, or keep the checkpoint named in the "
                "bundle's source.path so `mmdeploy compile` can reload it")
        cases = load_reference(onnx_artifact)
        sample = cases[0][0] if cases else component.make_inputs(1, 0)
        batched = batched_inputs(parent)
        sample = {n: np.asarray(sample[n])[:1] if n in batched else np.asarray(sample[n])
                  for n in component.input_names}
        pad = padding_rules(parent, [f for f, _ in cases] or [sample], options.get("sequence_length"))
        sample = {n: pad_feed(pad, n, v) for n, v in sample.items()}
        path = Path(output_dir) / MODEL_FILE
        start = time.perf_counter()
        convert_tflite(component, sample, path, precision)
        seconds = round(time.perf_counter() - start, 3)

        interp = TFLiteRunner(path, component.input_names, component.output_names, pad=pad, batched=batched)
        inputs = [TensorSpec(name=n, dtype=np.dtype(interp._specs[n][0]).name, shape=list(interp._specs[n][1]))
                  for n in component.input_names]
        casts = {n: f"{np.asarray(sample[n]).dtype.name}->{s.dtype}" for n, s in zip(component.input_names, inputs)
                 if np.asarray(sample[n]).dtype.name != s.dtype}
        built = interp.runner.get_output_details()
        shapes = {interp._out_keys.get(k, k): [int(d) for d in v["shape"]] for k, v in built.items()}
        outputs = [TensorSpec(name=o.name, dtype=o.dtype, shape=shapes.get(o.name, [1, *o.shape[1:]]))
                   for o in parent.outputs]
        manifest = child_manifest(
            self, onnx_artifact, parent, precision=precision, inputs=inputs, outputs=outputs,
            metadata={"model_file": MODEL_FILE, "static_batch": 1, "input_casts": casts, "pad_inputs": pad,
                      "batched_inputs": batched,
                      "input_names": list(component.input_names),
                      "output_names": list(component.output_names),
                      "route": "litert-torch (PyTorch module → .tflite, no TensorFlow)",
                      "delegate": "XNNPACK"},
            params={"precision": precision, "converter": "litert_torch.convert",
                    "quantization": "full_fp16_recipe" if precision == "fp16" else None},
            report={"convert_s": seconds})
        return finalize(self, onnx_artifact, output_dir, manifest, options)

    def load(self, artifact_dir: Path, threads: int | None = None, **options) -> TFLiteRunner:
        from mmdeploy.artifact import read_manifest

        manifest = read_manifest(artifact_dir)
        threads = threads or int(os.environ.get("MMDEPLOY_THREADS", 0)) or None
        meta = manifest.metadata
        name = "tflite" + ("" if manifest.precision == "fp32" else f"-{manifest.precision}")
        return TFLiteRunner(Path(artifact_dir) / meta.get("model_file", MODEL_FILE),
                            meta.get("input_names") or [i.name for i in manifest.inputs],
                            meta.get("output_names") or [o.name for o in manifest.outputs],
                            threads=threads, name=name, pad=meta.get("pad_inputs"),
                            batched=meta.get("batched_inputs"))


# a .tflite is one flatbuffer: 2 GiB at most (32-bit offsets)
FLATBUFFER_LIMIT = 2**31


def _weight_bytes(onnx_model: Path) -> int:
    """fp32 weight bytes of the parent ONNX (graph + external data)."""
    from mmdeploy.onnx_files import model_bytes

    return model_bytes(onnx_model)


def check_flatbuffer_size(label: str, fp32_bytes: int, precision: str) -> None:
    """One line, before a long conversion, when the model cannot fit TFLite's 2 GB flatbuffer."""
    size = fp32_bytes // 2 if precision == "fp16" else fp32_bytes
    if size >= FLATBUFFER_LIMIT:
        raise UnsupportedError(
            f"{label}: {size / 1e9:.1f} GB of {precision} weights do not fit TFLite's 2 GB flatbuffer",
            "build an int8 TFLite instead: mmdeploy quantize BUNDLE --method tflite"
            + ("" if precision == "fp16" else ", or compile tflite:fp16 if half the size fits"))


def batched_inputs(parent) -> list[str]:
    """Inputs whose first dim is the (symbolic) batch axis; a fixed ``scale [1, 1]`` is not one.
    With every dim static (``convert --batch N``) all inputs count as batched."""
    named = [t.name for t in parent.inputs if t.shape and isinstance(t.shape[0], str)]
    return named or [t.name for t in parent.inputs]


def padding_rules(parent, feeds: list[dict], length: int | None = None) -> dict[str, dict]:
    """Static-length rules for inputs with a symbolic non-batch dim (a text sequence).

    The .tflite is built at the longest length (the model's max, e.g. ``text_max_length``, when
    known) and shorter feeds are zero-padded; that leaves a causal text tower's pooled output
    unchanged (padding comes after the eos token and is masked), and a BERT-like encoder's
    outputs for the real tokens too (the mask hides the padding; positions are absolute).
    Outputs that carry the same dim (``last_hidden_state``) are cut back to the length fed
    (``trim``).
    """
    rules = {}
    for spec in parent.inputs:
        for axis, dim in enumerate(spec.shape):
            if axis == 0 or not isinstance(dim, str):
                continue
            seen = max((np.shape(f[spec.name])[axis] for f in feeds if spec.name in f), default=0)
            trim = {o.name: o.shape.index(dim) for o in parent.outputs if dim in o.shape}
            rules[spec.name] = {"axis": axis, "length": int(max(seen, int(length or 0))), "value": 0, "trim": trim}
    return rules


def convert_tflite(component, sample: dict[str, np.ndarray], path: Path, precision: str = "fp32") -> None:
    """litert-torch conversion of one component at the sample's (static) shapes."""
    import logging

    import torch

    logging.getLogger("absl").setLevel(logging.ERROR)
    import litert_torch

    quant_config = None
    if precision == "fp16":
        from litert_torch.generative.quantize import quant_recipes

        quant_config = quant_recipes.full_fp16_recipe()  # fp16 weights, fp32 compute
    args = tuple(torch.from_numpy(np.ascontiguousarray(sample[n])) for n in component.input_names)
    label = component.name
    try:
        with component.export_context():
            edge = litert_torch.convert(component.module.eval(), args, quant_config=quant_config)
    except Exception as exc:  # lowering failures: name the op when the message does
        text = str(exc)
        op = re.search(r"(aten\.[A-Za-z0-9_.]+)", text)
        where = f" at {op.group(1)}" if op else ""
        first = next((line for line in text.splitlines() if line.strip()), exc.__class__.__name__)
        raise UnsupportedError(f"litert-torch cannot convert {label}{where}: {first[:200]}",
                               "rerun with --debug for the full trace, or use another --target") from None
    edge.export(str(path))
