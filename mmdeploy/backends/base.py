"""The backend protocol (after Polygraphy's runners).

A backend is one module with one class implementing:

* ``available() -> (bool, reason)``: import check and version, no side effects;
* ``compile(onnx_artifact, output_dir, options) -> Manifest``: build this backend's artifact from
  an ONNX component artifact, writing files and (last) the manifest into ``output_dir``;
* ``load(artifact_dir, **options) -> Runner``.

A Runner maps numpy feeds to numpy outputs by name.  Comparison lives apart, in
:mod:`mmdeploy.compare`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmdeploy.errors import BackendUnavailable


@runtime_checkable
class Runner(Protocol):
    name: str  # e.g. "onnxruntime", "openvino-fp16"
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend:
    name: str = ""
    format: str = ""  # the manifest "format" this backend writes
    extra: str | None = None  # pip extra that installs it, e.g. "openvino"
    packages: tuple[str, ...] = ()  # distributions recorded in manifests' tool versions

    def available(self) -> tuple[bool, str]:
        raise NotImplementedError

    def require(self) -> None:
        """Raise BackendUnavailable naming the extra to install when the backend is missing."""
        ok, reason = self.available()
        if not ok:
            hint = f'pip install "mmdeploy[{self.extra}]"' if self.extra else None
            raise BackendUnavailable(f"backend {self.name} is unavailable: {reason}", hint)

    def compile(self, onnx_artifact: Path, output_dir: Path, options: dict[str, Any]):
        raise NotImplementedError(f"{self.name} does not compile artifacts")

    def load(self, artifact_dir: Path, **options) -> Runner:
        raise NotImplementedError
