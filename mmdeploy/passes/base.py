"""The pass protocol: one class + one pydantic config per pass.

``Pass.run(model_path, output_dir, config, context)`` reads one model file, writes its result
into ``output_dir`` and returns a :class:`PassResult`; ``record()`` turns that into the
manifest's :class:`~mmdeploy.artifact.PassRecord` (name, typed params, what changed).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from mmdeploy.artifact import PassRecord


class PassConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class PassContext:
    """What a pass may need besides the model: calibration feeds, the model family, a scratch dir."""

    calibration: list[dict[str, np.ndarray]] = field(default_factory=list)
    family: str | None = None
    work_dir: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class PassResult:
    model_file: str  # relative to the output dir (model.onnx, model.xml, model.tflite)
    format: str = "onnx"
    precision: str = "fp32"
    report: dict[str, Any] = field(default_factory=dict)


class Pass:
    name: ClassVar[str] = ""
    Config: ClassVar[type[PassConfig]] = PassConfig

    def config(self, **params) -> PassConfig:
        return self.Config(**params)

    def run(self, model_path: Path, output_dir: Path, config: PassConfig,
            context: PassContext) -> PassResult:
        raise NotImplementedError

    def record(self, config: PassConfig, result: PassResult) -> PassRecord:
        return PassRecord(name=self.name, params=config.model_dump(mode="json"), report=result.report)


def op_counts(model) -> dict[str, int]:
    """Node count per op type of an onnx ModelProto (sorted by name)."""
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def op_diff(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Per op type, how many nodes a pass added (>0) or removed (<0)."""
    keys = sorted(set(before) | set(after))
    return {k: after.get(k, 0) - before.get(k, 0) for k in keys if after.get(k, 0) != before.get(k, 0)}


def save_onnx(model, path: Path, external: bool | None = None) -> None:
    """Save an onnx model, with external data when asked or when it is too large for one protobuf."""
    from mmdeploy.onnx_files import save

    save(model, path, external)
