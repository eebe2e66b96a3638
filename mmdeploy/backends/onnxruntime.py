"""ONNX Runtime: the runner for every ``onnx`` artifact (fp32, fp16, QDQ int8)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.backends.base import Backend

# onnxruntime type strings -> numpy dtypes
_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def session_options(threads: int | None = None, spinning: bool = False,
                    optimization: str = "all", optimized_path: str | None = None,
                    denormals_as_zero: bool = True):
    """SessionOptions with intra-op spinning off by default.

    Spinning threads of an idle session steal cores from any other runtime in the process
    (measured: a 34 ms model read 67 ms), which would distort side-by-side comparisons.
    Denormals are flushed to zero (a denormal operand costs ~100 cycles on x86; no effect on
    the outputs at these models' tolerances).  That sets FTZ/DAZ on the calling thread for good,
    so the runtime in a user's app (:mod:`mmdeploy.runtime`) turns it off (``denormals_as_zero``).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if denormals_as_zero:
        opts.add_session_config_entry("session.set_denormal_as_zero", "1")  # as OpenVINO's runner does
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    opts.graph_optimization_level = levels[optimization]
    if optimized_path:
        opts.optimized_model_filepath = str(optimized_path)
    opts.log_severity_level = 3
    return opts


class OnnxRuntimeRunner:
    def __init__(self, model_path: str | Path, threads: int | None = None, spinning: bool = False,
                 optimization: str = "all", name: str = "onnxruntime", denormals_as_zero: bool = True):
        import onnxruntime as ort

        self.name = name
        self.session = ort.InferenceSession(
            str(model_path), sess_options=session_options(threads, spinning, optimization,
                                                          denormals_as_zero=denormals_as_zero),
            providers=["CPUExecutionProvider"],
        )
        self._inputs = {i.name: _ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.input_names = list(self._inputs)
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feeds = {k: np.asarray(v, dtype=self._inputs[k]) for k, v in feeds.items() if k in self._inputs}
        values = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, values))


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"
    format = "onnx"
    extra = None  # core dependency
    packages = ("onnxruntime", "onnx")

    def available(self) -> tuple[bool, str]:
        try:
            import onnxruntime
        except ImportError as exc:  # pragma: no cover - core dependency
            return False, f"onnxruntime is not installed ({exc})"
        return True, f"onnxruntime {onnxruntime.__version__}"

    def compile(self, onnx_artifact: Path, output_dir: Path, options: dict[str, Any]):
        """An ORT artifact is the ONNX plus session settings; optionally the optimized model.

        Options: ``threads`` (recorded as the session default), ``optimization`` (disable,
        basic, extended, all), ``ort_save_optimized`` (save the graph ORT optimizes at that level
        as ``model.optimized.onnx`` and run that one; "extended" keeps it portable across CPUs).
        """
        from mmdeploy.backends.compile_common import (child_manifest, copy_onnx_files, finalize,
                                                      read_onnx_artifact)

        parent, model = read_onnx_artifact(onnx_artifact)
        optimization = options.get("optimization", "all")
        if optimization not in ("disable", "basic", "extended", "all"):
            from mmdeploy.errors import InputError

            raise InputError(f"unknown ONNX Runtime optimization level {optimization!r}",
                             "use one of disable, basic, extended, all")
        copy_onnx_files(onnx_artifact, output_dir)
        model_file = model.name
        if options.get("ort_save_optimized"):
            import onnxruntime as ort

            model_file = "model.optimized.onnx"
            opts = session_options(optimization=optimization,
                                   optimized_path=str(Path(output_dir) / model_file))
            ort.InferenceSession(str(Path(output_dir) / model.name), sess_options=opts,
                                 providers=["CPUExecutionProvider"])
        session = {"threads": options.get("threads"), "optimization": optimization,
                   "spinning": False, "providers": ["CPUExecutionProvider"]}
        manifest = child_manifest(self, onnx_artifact, parent, precision=parent.precision,
                                  metadata={"model_file": model_file, "session": session},
                                  params={"optimization": optimization,
                                          "save_optimized": bool(options.get("ort_save_optimized"))})
        return finalize(self, onnx_artifact, output_dir, manifest, options)

    def load(self, artifact_dir: Path, threads: int | None = None, **options) -> OnnxRuntimeRunner:
        from mmdeploy.artifact import read_manifest

        manifest = read_manifest(artifact_dir)
        settings = dict(manifest.metadata.get("session", {}))
        threads = threads or settings.get("threads") or int(os.environ.get("MMDEPLOY_THREADS", 0)) or None
        model = manifest.metadata.get("model_file", "model.onnx")
        return OnnxRuntimeRunner(Path(artifact_dir) / model, threads=threads,
                                 spinning=options.get("spinning", False),
                                 denormals_as_zero=options.get("denormals_as_zero", True),
                                 optimization=settings.get("optimization", options.get("optimization", "all")),
                                 name="onnxruntime" + ("" if manifest.precision == "fp32" else f"-{manifest.precision}"))
