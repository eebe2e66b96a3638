"""PyTorch itself as a Runner: the reference every other backend is compared with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.backends.base import Backend
from mmdeploy.errors import InputError


class TorchRunner:
    """Runs a :class:`~mmdeploy.models.base.Component`'s module in eval mode, without grad.
    ``threads`` holds during :meth:`run` only: torch's thread count is process-wide, so the
    caller's setting is restored after each run."""

    def __init__(self, component, threads: int | None = None, name: str = "torch"):
        self.threads = int(threads) if threads else None
        self.name = name
        self.component = component
        self.module = component.module.eval()
        self.input_names = list(component.input_names)
        self.output_names = list(component.output_names)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        missing = [n for n in self.input_names if n not in feeds]
        if missing:
            raise InputError(f"{self.component.name}: missing input {', '.join(missing)}",
                             f"inputs are {', '.join(self.input_names)}")
        args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in self.input_names]
        previous = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                out = self.module(*args)
        finally:
            if self.threads:
                torch.set_num_threads(previous)
        if isinstance(out, torch.Tensor):
            out = (out,)
        elif isinstance(out, dict):
            out = tuple(out[n] for n in self.output_names)
        return {n: t.detach().cpu().numpy() for n, t in zip(self.output_names, out)}


class TorchBackend(Backend):
    name = "torch"
    format = "torch"
    extra = None
    packages = ("torch",)

    def available(self) -> tuple[bool, str]:
        try:
            import torch
        except ImportError:  # pragma: no cover - core dependency
            return False, "package torch is not installed"
        return True, f"torch {torch.__version__}"

    def compile(self, onnx_artifact: Path, output_dir: Path, options: dict[str, Any]):
        raise InputError("torch is the reference, not a compile target",
                         "choose one of onnxruntime, openvino, tflite, tensorrt")

    def load(self, artifact_dir: Path, **options) -> TorchRunner:
        """Needs the component (``component=``): artifacts hold no torch weights."""
        component = options.get("component")
        if component is None or isinstance(component, str):
            raise InputError("a torch runner needs the PyTorch component, not an artifact",
                             "build it with TorchRunner(adapter.components()[name])")
        return TorchRunner(component, threads=options.get("threads"))
