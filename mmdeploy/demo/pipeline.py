"""`mmdeploy demo`: the whole available pipeline on the bundled demo model, narrated.

Each step calls the same library functions the commands use and records what it did; a step
whose backend is not installed is reported as skipped with the reason, not hidden.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

DEMO = "demo:tiny-clip"


@dataclass
class StepResult:
    step: str
    status: str  # ok | skipped | failed
    summary: str
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def _zero_shot(bundle: Path, component_dirs: dict[str, Path] | None = None) -> float:
    """Zero-shot top-1 of the demo eval set through the given artifacts (default: the ONNX towers)."""
    from mmdeploy.backends import load_runner
    from mmdeploy.models import adapter_for_bundle

    adapter = adapter_for_bundle(bundle)
    dirs = component_dirs or {c: bundle / c for c in adapter.task_components()}
    return adapter.evaluate({c: load_runner(d) for c, d in dirs.items()}).value


def step_convert(output: Path, say) -> StepResult:
    from mmdeploy.artifact import read_manifest
    from mmdeploy.export.convert import convert

    bundle = output / "convert"
    convert(DEMO, bundle, progress=say)
    task = read_manifest(bundle).parity["task"]
    return StepResult("convert", "ok",
                      f"vision+text → ONNX; zero-shot top-1 PyTorch {task['reference_value']:.1%}, "
                      f"ONNX {task['value']:.1%} (agreement {task['top1_agreement']:.1%})",
                      details={"bundle": str(bundle), "task": task})


STEPS: list[Callable[[Path, Callable[[str], None]], StepResult]] = [step_convert]


def run_demo(output: Path, progress: Callable[[str], None] | None = None) -> list[StepResult]:
    say = progress or (lambda msg: None)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for step in STEPS:
        start = time.perf_counter()
        result = step(output, say)
        result.seconds = round(time.perf_counter() - start, 1)
        results.append(result)
    return results
