"""What every backend's ``compile`` shares: reading the ONNX parent, the child manifest, and
verification of the new artifact against the PyTorch reference stored with the parent.

A backend writes its files into ``output_dir``, builds a manifest with :func:`child_manifest`
and calls :func:`finalize`, which copies ``reference.npz``, writes the manifest, loads the
artifact through the backend's own runner and records parity (raising VerificationError, naming
backend, component and output, when it is off).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from mmdeploy.artifact import (MANIFEST_NAME, REFERENCE_NAME, Manifest, TensorSpec, load_reference,
                               read_manifest, sha256_file, tool_versions, write_manifest)
from mmdeploy.errors import InputError

# fp32 artifacts are held to max-abs error; reduced precision to cosine (abs error scales with
# the output's magnitude and says little for fp16 weights).
FP32_ATOL = 1e-4
FP32_MIN_COSINE = 0.9999
REDUCED_MIN_COSINE = 0.99


def read_onnx_artifact(onnx_dir: Path) -> tuple[Manifest, Path]:
    """The ONNX component manifest and its model file; InputError if it is not one."""
    onnx_dir = Path(onnx_dir)
    manifest = read_manifest(onnx_dir)
    if manifest.kind != "component" or manifest.format != "onnx":
        raise InputError(f"{onnx_dir} is not an ONNX component artifact (format {manifest.format!r})",
                         "pass a component written by `mmdeploy convert`")
    model = onnx_dir / manifest.metadata.get("model_file", "model.onnx")
    if not model.is_file():
        raise InputError(f"{onnx_dir}: model file {model.name} is missing", "re-run `mmdeploy convert`")
    return manifest, model


def copy_onnx_files(onnx_dir: Path, output_dir: Path) -> Path:
    """Copy the component's ONNX graph with its external-data files; returns the copied graph."""
    from mmdeploy.onnx_files import copy_model

    _, model = read_onnx_artifact(onnx_dir)
    return copy_model(model, Path(output_dir))


def tolerance(precision: str, options: dict[str, Any]) -> tuple[float | None, float | None]:
    """(atol, min_cosine) used to verify an artifact of this precision."""
    if precision == "fp32":
        return float(options.get("atol") or FP32_ATOL), float(options.get("min_cosine") or FP32_MIN_COSINE)
    return None, float(options.get("reduced_min_cosine") or options.get("min_cosine") or REDUCED_MIN_COSINE)


def child_manifest(backend, onnx_dir: Path, parent: Manifest, *, precision: str, fmt: str | None = None,
                   metadata: dict[str, Any] | None = None, inputs: list[TensorSpec] | None = None,
                   outputs: list[TensorSpec] | None = None, params: dict[str, Any] | None = None,
                   report: dict[str, Any] | None = None, extra_tools: tuple[str, ...] = ()) -> Manifest:
    """Manifest of a backend artifact derived from an ONNX component artifact."""
    meta = {k: v for k, v in parent.metadata.items() if k != "model_file"}
    meta.update(metadata or {})
    return Manifest(
        kind="component", name=parent.name, family=parent.family, format=fmt or backend.format,
        precision=precision, target=backend.name, source=parent.source,
        parent={"path": Path(onnx_dir).name, "manifest_sha256": sha256_file(Path(onnx_dir) / MANIFEST_NAME)},
        passes=list(parent.passes) + [{"name": f"compile-{backend.name}", "params": params or {},
                                       "report": report or {}}],
        tools={**parent.tools, **tool_versions(*backend.packages, *extra_tools)},
        inputs=inputs if inputs is not None else parent.inputs,
        outputs=outputs if outputs is not None else parent.outputs,
        metadata=meta,
    )


def runner_label(manifest: Manifest, component: str | None = None) -> str:
    name = manifest.target or manifest.format or "?"
    if manifest.precision != "fp32":
        name += f"-{manifest.precision}"
    return f"{name}/{component or manifest.name}"


def finalize(backend, onnx_dir: Path, output_dir: Path, manifest: Manifest,
             options: dict[str, Any], verify: bool = True) -> Manifest:
    """Write the manifest, then verify the artifact through its own runner and record parity."""
    output_dir = Path(output_dir)
    reference = Path(onnx_dir) / REFERENCE_NAME
    if reference.is_file():
        shutil.copy2(reference, output_dir / REFERENCE_NAME)
    write_manifest(output_dir, manifest)
    cases = load_reference(onnx_dir)
    if not verify or not cases:
        manifest.parity = {"status": "not verified" if cases else "no reference.npz in the parent"}
        return write_manifest(output_dir, manifest)
    from mmdeploy.compare import verify_runner

    atol, min_cosine = tolerance(manifest.precision, options)
    runner = backend.load(output_dir, threads=options.get("threads"))
    label = runner_label(manifest, options.get("component"))
    record = verify_runner(runner, cases, atol=atol, label=label, min_cosine=min_cosine)
    record.update({"reference": "pytorch", "runner": runner.name, "min_cosine": min_cosine})
    manifest.parity = record
    return write_manifest(output_dir, manifest)
