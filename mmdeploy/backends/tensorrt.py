"""TensorRT: a TensorRT-ready bundle everywhere, the engine where TensorRT and a GPU exist.

Engines are specific to a GPU and a TensorRT version, so they are built on the device.  Every
``compile`` writes the bundle: the ONNX, ``build_settings.json`` (optimization profiles derived
from the component's dynamic axes, precision flags, workspace), the equivalent ``trtexec.sh``,
and ``compat_report.json``/``.md``: each op checked against the TensorRT ONNX parser's
supported-operator list (``tensorrt_ops.json``, transcribed from onnx-tensorrt's
``docs/operators.md``) plus dynamic-shape and dtype hazards (int64 I/O, double).  Where
``import tensorrt`` works and a CUDA GPU is visible, the same call also builds the engine with the
TensorRT 10 Python API (ONNX parser, builder config, profiles, timing cache), records the
TensorRT version and GPU, and verifies it through :class:`TensorRTRunner`.
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.backends.base import Backend
from mmdeploy.errors import BackendUnavailable, InputError, UnsupportedError

PRECISIONS = ("fp32", "fp16", "int8")
OPS_FILE = Path(__file__).with_name("tensorrt_ops.json")
INSTALL_HINT = "pip install tensorrt on a machine with an NVIDIA GPU"
DEFAULT_MAX_BATCH = 32
DEFAULT_WORKSPACE_MB = 4096
ENGINE_FILE = "model.plan"
TIMING_CACHE = "timing.cache"

# ONNX TensorProto element types -> the names used in the support matrix
_ONNX_TYPES = {1: "FP32", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FP16",
               11: "DOUBLE", 16: "BF16"}


@lru_cache(maxsize=1)
def supported_ops() -> dict[str, Any]:
    return json.loads(OPS_FILE.read_text())


# --------------------------------------------------------------------------- profiles


def derive_profiles(inputs, cases: list[tuple[dict, dict]] | None = None,
                    overrides: dict[str, Any] | None = None,
                    max_batch: int = DEFAULT_MAX_BATCH,
                    max_length: int | None = None) -> dict[str, dict[str, list[int]]]:
    """min/opt/max shapes per input from its symbolic dims.

    Batch-like dims (named "batch*" or leading) get 1/1/``max_batch``; other symbolic dims
    (sequence length...) 1/L/M with L the largest value seen in the reference inputs and M the
    model's maximum text length (``max_length``) for a dim named "sequence", else L.
    ``overrides`` maps a dim name to ``[min, opt, max]`` (or an input name to
    ``{"min": shape, "opt": shape, "max": shape}``).
    """
    overrides = dict(overrides or {})
    seen: dict[str, int] = {}
    for feeds, _ in cases or []:
        for spec in inputs:
            if spec.name in feeds:
                for axis, dim in enumerate(spec.shape):
                    if isinstance(dim, str) and axis < np.ndim(feeds[spec.name]):
                        seen[dim] = max(seen.get(dim, 0), int(np.shape(feeds[spec.name])[axis]))
    profiles = {}
    for spec in inputs:
        if spec.name in overrides:
            given = overrides[spec.name]
            profiles[spec.name] = {k: [int(d) for d in given[k]] for k in ("min", "opt", "max")}
            continue
        shape = {"min": [], "opt": [], "max": []}
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, int) and dim > 0:
                triple = (dim, dim, dim)
            else:
                name = str(dim)
                if name in overrides:
                    triple = tuple(int(v) for v in overrides[name])
                elif axis == 0 or "batch" in name.lower():
                    triple = (1, 1, max_batch)
                else:
                    length = seen.get(name)
                    if length is None:
                        raise InputError(f"tensorrt: no size known for dynamic dim {name!r} of input {spec.name}",
                                         f"pass --trt-shape {name}=MIN,OPT,MAX")
                    top = max(length, int(max_length or 0)) if "sequence" in name.lower() else length
                    triple = (1, length, top)
            if len(triple) != 3 or not triple[0] <= triple[1] <= triple[2] or triple[0] < 1:
                raise InputError(f"tensorrt: bad profile {list(triple)} for dim {dim!r} of {spec.name}",
                                 "give MIN,OPT,MAX with 1 <= MIN <= OPT <= MAX")
            for key, value in zip(("min", "opt", "max"), triple):
                shape[key].append(int(value))
        profiles[spec.name] = shape
    return profiles


def trtexec_command(onnx_file: str, profiles: dict, precision: str, workspace_mb: int,
                    engine_file: str = ENGINE_FILE, cache_file: str = TIMING_CACHE) -> list[str]:
    """The trtexec invocation equivalent to :func:`build_engine`."""
    cmd = ["trtexec", f"--onnx={onnx_file}", f"--saveEngine={engine_file}",
           f"--timingCacheFile={cache_file}", f"--memPoolSize=workspace:{workspace_mb}M"]
    for key, flag in (("min", "--minShapes"), ("opt", "--optShapes"), ("max", "--maxShapes")):
        dims = ",".join(f"{name}:{'x'.join(str(d) for d in p[key])}" for name, p in profiles.items())
        if dims:
            cmd.append(f"{flag}={dims}")
    if precision in ("fp16", "int8"):
        cmd.append("--fp16")
    if precision == "int8":
        cmd.append("--int8")  # explicit quantization: scales come from the graph's Q/DQ nodes
    return cmd


# --------------------------------------------------------------------------- compatibility


def compat_report(onnx_path: Path, profiles: dict | None = None) -> dict[str, Any]:
    """Static check of an ONNX graph against the TensorRT ONNX parser's support matrix."""
    import onnx

    table = supported_ops()
    ops = table["operators"]
    model = onnx.load(str(onnx_path), load_external_data=False)  # shapes only: weights stay on disk
    try:
        model = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - the report still works without inferred types
        pass
    graph = model.graph
    types = {vi.name: vi.type.tensor_type.elem_type for vi in
             list(graph.input) + list(graph.output) + list(graph.value_info)}
    types.update({init.name: init.data_type for init in graph.initializer})

    errors: list[dict] = []
    warnings: list[dict] = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is not None and not table["opset_min"] <= opset <= table["opset_max"]:
        errors.append({"kind": "opset", "message": f"opset {opset} is outside TensorRT "
                       f"{table['tensorrt_version']}'s range {table['opset_min']}-{table['opset_max']}"})

    counts: dict[str, int] = {}
    restricted: dict[str, str] = {}
    for i, node in enumerate(graph.node):
        name = node.name or f"#{i}"
        key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
        entry = ops.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if node.domain not in ("", "ai.onnx"):
            errors.append({"kind": "unsupported-op", "op": key, "node": name,
                           "message": f"custom-domain op {key} (node {name}) needs a TensorRT plugin"})
            continue
        if entry is None or not entry["supported"]:
            errors.append({"kind": "unsupported-op", "op": key, "node": name,
                           "message": f"{key} (node {name}) is not supported by the TensorRT "
                           f"{table['tensorrt_version']} ONNX parser"})
            continue
        if entry.get("restrictions"):
            restricted[key] = entry["restrictions"]
        allowed = set(entry.get("types", []))
        for tensor in node.input:
            elem = types.get(tensor)
            tname = _ONNX_TYPES.get(elem) if elem else None
            if tname and allowed and tname not in allowed and tname != "DOUBLE" and node.op_type != "Cast":
                warnings.append({"kind": "dtype", "op": key, "node": name,
                                 "message": f"{key} (node {name}) gets {tname} input {tensor}; "
                                 f"TensorRT supports {', '.join(sorted(allowed))}"})
                break

    for kind, values in (("input", graph.input), ("output", graph.output)):
        initializers = {init.name for init in graph.initializer}
        for vi in values:
            if vi.name in initializers:
                continue
            elem = vi.type.tensor_type.elem_type
            if elem == 7:
                warnings.append({"kind": "int64-io", "tensor": vi.name, "message":
                                 f"{kind} {vi.name} is INT64: TensorRT 10 takes it, but older releases "
                                 "(8.x, JetPack 5) cast it to INT32; feed int32-range values"})
            elif elem == 11:
                warnings.append({"kind": "double-io", "tensor": vi.name, "message":
                                 f"{kind} {vi.name} is DOUBLE: TensorRT casts it to FP32, clamping to ±FLT_MAX"})
            dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
                    for d in vi.type.tensor_type.shape.dim]
            dynamic = [str(d) for d in dims if not isinstance(d, int)]
            if kind == "input" and dynamic:
                prof = (profiles or {}).get(vi.name)
                rng = f" (profile min {prof['min']} opt {prof['opt']} max {prof['max']})" if prof else ""
                warnings.append({"kind": "dynamic-shape", "tensor": vi.name, "message":
                                 f"input {vi.name} has dynamic dims {', '.join(dynamic)}: the engine serves "
                                 f"only shapes inside its optimization profile{rng}"})
    doubles = sorted({vi.name for vi in graph.value_info if vi.type.tensor_type.elem_type == 11}
                     | {i.name for i in graph.initializer if i.data_type == 11})
    if doubles:
        warnings.append({"kind": "double", "message": f"{len(doubles)} internal DOUBLE tensor(s) (e.g. "
                         f"{doubles[0]}): cast down to FP32 by TensorRT, clamping to ±FLT_MAX"})
    status = "incompatible" if errors else ("compatible-with-warnings" if warnings else "compatible")
    return {
        "tensorrt_version": table["tensorrt_version"], "source": table["source"], "opset": opset,
        "status": status, "errors": errors, "warnings": warnings,
        "restrictions_to_check": restricted, "op_counts": dict(sorted(counts.items())),
        "nodes": len(graph.node),
    }


def report_markdown(report: dict[str, Any], label: str) -> str:
    lines = [f"# TensorRT compatibility: {label}", "",
             f"- checked against: TensorRT {report['tensorrt_version']} ONNX parser ({report['source']})",
             f"- opset: {report['opset']}; nodes: {report['nodes']}",
             f"- **status: {report['status']}**", ""]
    for title, items in (("Errors", report["errors"]), ("Warnings", report["warnings"])):
        lines.append(f"## {title} ({len(items)})")
        lines += [f"- {item['message']}" for item in items] or ["- none"]
        lines.append("")
    if report["restrictions_to_check"]:
        lines.append("## Parser restrictions for ops in this graph")
        lines += [f"- {op}: {text}" for op, text in report["restrictions_to_check"].items()]
        lines.append("")
    lines += ["## Ops", "", "| op | count |", "|---|---|"]
    lines += [f"| {op} | {n} |" for op, n in report["op_counts"].items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- engine (device)


def _trt_logger():
    import tensorrt as trt

    return trt.Logger(trt.Logger.WARNING)


def build_engine(onnx_path: Path, profiles: dict, precision: str = "fp32",
                 workspace_mb: int = DEFAULT_WORKSPACE_MB, cache_path: Path | None = None) -> bytes:
    """Build a serialized engine with the TensorRT 10 Python API (on a machine with a GPU)."""
    import tensorrt as trt

    logger = _trt_logger()
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        messages = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise UnsupportedError(f"TensorRT's ONNX parser rejected {onnx_path.name}: {messages[0] if messages else '?'}",
                               "see compat_report.md")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)  # explicit quantization from the graph's Q/DQ
    profile = builder.create_optimization_profile()
    for name, shapes in profiles.items():
        profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    cache_bytes = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise UnsupportedError(f"TensorRT failed to build an engine from {onnx_path.name}",
                               "see the TensorRT log above and compat_report.md")
    if cache_path:
        cache_path.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return bytes(memoryview(engine))


class TensorRTRunner:
    """Execution context over a deserialized engine; I/O through torch CUDA tensors."""

    def __init__(self, engine: bytes | str | Path, name: str = "tensorrt"):
        import tensorrt as trt

        data = Path(engine).read_bytes() if isinstance(engine, (str, Path)) else engine
        self.name = name
        self._trt = trt
        self.runtime = trt.Runtime(_trt_logger())
        self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise InputError("TensorRT could not deserialize the engine (built for another GPU or "
                             "TensorRT version?)", "rebuild it on this device with `mmdeploy compile`")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        mode = trt.TensorIOMode.INPUT
        self.input_names = [n for n in names if self.engine.get_tensor_mode(n) == mode]
        self.output_names = [n for n in names if self.engine.get_tensor_mode(n) != mode]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        trt = self._trt
        stream = torch.cuda.current_stream()
        keep = []
        for name in self.input_names:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            tensor = torch.from_numpy(np.ascontiguousarray(feeds[name], dtype=dtype)).cuda()
            keep.append(tensor)
            self.context.set_input_shape(name, tuple(tensor.shape))
            self.context.set_tensor_address(name, tensor.data_ptr())
        outputs = {}
        for name in self.output_names:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            shape = tuple(self.context.get_tensor_shape(name))
            tensor = torch.empty(shape, dtype=torch.from_numpy(np.empty(0, dtype)).dtype, device="cuda")
            self.context.set_tensor_address(name, tensor.data_ptr())
            outputs[name] = tensor
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise InputError(f"{self.name}: TensorRT execution failed", "check input shapes against the profile")
        stream.synchronize()
        return {name: t.cpu().numpy() for name, t in outputs.items()}


# --------------------------------------------------------------------------- backend


class TensorRTBackend(Backend):
    name = "tensorrt"
    format = "tensorrt"
    extra = None
    packages = ("tensorrt", "onnx")
    precisions = PRECISIONS

    def available(self) -> tuple[bool, str]:
        if importlib.util.find_spec("tensorrt") is None:
            return False, "package tensorrt is not installed (--target tensorrt still writes a TensorRT-ready bundle)"
        try:
            import tensorrt
            import torch

            if not torch.cuda.is_available():
                return False, f"tensorrt {tensorrt.__version__} is installed but no CUDA GPU is visible"
            return True, f"tensorrt {tensorrt.__version__} on {torch.cuda.get_device_name(0)}"
        except Exception as exc:  # noqa: BLE001 - a broken install is "unavailable", not a crash
            return False, f"tensorrt does not load: {exc}"

    def require(self) -> None:
        ok, reason = self.available()
        if not ok:
            raise BackendUnavailable(f"backend tensorrt is unavailable: {reason}", INSTALL_HINT)

    def compile(self, onnx_artifact: Path, output_dir: Path, options: dict[str, Any]):
        """Bundle (+ engine when TensorRT is usable).  ``options``: precision (fp32 | fp16 |
        int8: needs a Q/DQ graph from `mmdeploy quantize`), trt_shapes (dim or input ->
        min/opt/max), trt_max_batch, trt_workspace_mb, trt_allow_unsupported, trt_build
        (False: never build, even where TensorRT works)."""
        from mmdeploy.artifact import load_reference
        from mmdeploy.backends.compile_common import (child_manifest, copy_onnx_files, finalize,
                                                      read_onnx_artifact)

        precision = options.get("precision", "fp32")
        if precision not in PRECISIONS:
            raise InputError(f"tensorrt has no precision {precision!r}", "use fp32, fp16 or int8")
        parent, model_path = read_onnx_artifact(onnx_artifact)
        label = options.get("component") or parent.name
        profiles = derive_profiles(parent.inputs, load_reference(onnx_artifact), options.get("trt_shapes"),
                                   int(options.get("trt_max_batch") or DEFAULT_MAX_BATCH),
                                   options.get("sequence_length"))
        report = compat_report(model_path, profiles)
        if report["errors"] and not options.get("trt_allow_unsupported"):
            first = report["errors"][0]
            more = f" (and {len(report['errors']) - 1} more)" if len(report["errors"]) > 1 else ""
            raise UnsupportedError(f"tensorrt cannot convert {label}: {first['message']}{more}",
                                   "replace the op, or pass --trt-allow-unsupported to write the bundle "
                                   "and report anyway")
        if precision == "int8":
            import onnx

            graph = onnx.load(str(model_path), load_external_data=False).graph
            if not any(n.op_type == "QuantizeLinear" for n in graph.node):
                raise InputError(f"tensorrt int8 needs a Q/DQ graph; {label} has no QuantizeLinear",
                                 "make one with `mmdeploy quantize BUNDLE --int8 --method ort-static -o DIR` "
                                 "(calibrated Q/DQ) and compile that, or use tensorrt:fp16")

        out = Path(output_dir)
        copy_onnx_files(onnx_artifact, out)
        workspace = int(options.get("trt_workspace_mb") or DEFAULT_WORKSPACE_MB)
        settings = {"onnx": model_path.name, "precision": precision, "profiles": profiles,
                    "workspace_mb": workspace, "engine": ENGINE_FILE, "timing_cache": TIMING_CACHE,
                    "builder_flags": {"fp16": precision in ("fp16", "int8"), "int8": precision == "int8"}}
        (out / "build_settings.json").write_text(json.dumps(settings, indent=2) + "\n")
        cmd = trtexec_command(model_path.name, profiles, precision, workspace)
        (out / "trtexec.sh").write_text("#!/bin/sh\n# Build the engine on the target device (TensorRT 10.x).\n"
                                        'cd "$(dirname "$0")"\nexec ' + " \\\n  ".join(shlex.quote(c) for c in cmd)
                                        + ' "$@"\n')
        (out / "trtexec.sh").chmod(0o755)
        (out / "compat_report.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "compat_report.md").write_text(report_markdown(report, label))

        ok, reason = self.available()
        build = ok and options.get("trt_build", True)
        meta = {"model_file": model_path.name, "build_settings": "build_settings.json",
                "trtexec": "trtexec.sh", "compat_report": "compat_report.json",
                "compat_status": report["status"], "profiles": profiles}
        if build:
            import tensorrt
            import torch

            start = time.perf_counter()
            engine = build_engine(out / model_path.name, profiles, precision, workspace, out / TIMING_CACHE)
            build_s = round(time.perf_counter() - start, 3)
            (out / ENGINE_FILE).write_bytes(engine)
            meta.update({"model_file": ENGINE_FILE, "onnx_file": model_path.name,
                         "tensorrt_version": tensorrt.__version__, "gpu": torch.cuda.get_device_name(0),
                         "compute_capability": ".".join(map(str, torch.cuda.get_device_capability(0)))})
        manifest = child_manifest(self, onnx_artifact, parent, precision=precision,
                                  fmt="tensorrt" if build else "tensorrt-bundle", metadata=meta,
                                  params={"precision": precision, "workspace_mb": workspace,
                                          "profiles": profiles},
                                  report={"compat_status": report["status"], "errors": len(report["errors"]),
                                          "warnings": len(report["warnings"]),
                                          **({"build_s": build_s} if build else {})})
        if not build:
            manifest = finalize(self, onnx_artifact, out, manifest, options, verify=False)
            manifest.parity = {"status": "engine not built here", "reason": reason,
                               "next": "run trtexec.sh, or `mmdeploy compile` on the device"}
            from mmdeploy.artifact import write_manifest

            return write_manifest(out, manifest)
        return finalize(self, onnx_artifact, out, manifest, options)

    def load(self, artifact_dir: Path, **options) -> TensorRTRunner:
        """A runner over the engine; for a bundle, builds the engine in memory first."""
        from mmdeploy.artifact import read_manifest

        self.require()
        artifact_dir = Path(artifact_dir)
        manifest = read_manifest(artifact_dir)
        name = "tensorrt" + ("" if manifest.precision == "fp32" else f"-{manifest.precision}")
        if manifest.format == "tensorrt":
            return TensorRTRunner(artifact_dir / manifest.metadata.get("model_file", ENGINE_FILE), name=name)
        settings = json.loads((artifact_dir / "build_settings.json").read_text())
        engine = build_engine(artifact_dir / settings["onnx"], settings["profiles"], settings["precision"],
                              settings["workspace_mb"])
        return TensorRTRunner(engine, name=name)
