"""Benchmarks: the harness, accuracy through adapters, budgets and the statistical gate, reports.

Library entry points::

    doc = bench(paths, BenchSettings(iters=200), get_target("cpu"))   # JSON document (dict)
    checks = gate(doc, load_budgets("budgets.yaml"), baseline=None)   # records; doc["passed"]

``bench`` dispatches on the target: local (the harness in this process), remote (ssh to the
device, same harness there) or ``estimate=True`` (roofline, labelled ESTIMATE).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from mmdeploy.bench.harness import BenchSettings  # noqa: F401  (light: numpy only)


def bench(paths: list[str | Path], settings: "BenchSettings", target=None, *,
          components: list[str] | None = None, estimate: bool = False,
          progress: Callable[[str, int, int], None] | None = None, scorer=None) -> dict:
    """Bench every component of every ARTIFACT path on ``target``; returns the JSON document.

    ``scorer(adapter, runners)``: the accuracy metric on the user's ``--eval`` set (built by
    :func:`mmdeploy.stages.eval.scorer`), else the adapter's built-in task."""
    from mmdeploy.bench import harness

    settings.check()
    # an estimate counts each component once (from ONNX), whatever formats the target runs
    items = harness.collect(paths, components, target, every_format=False if estimate else None)
    if estimate:
        items = [onnx_sibling(item) for item in items]
    if estimate and target is not None and target.boards:  # generic target: a row per board
        from mmdeploy.targets.estimate import estimate_boards

        return _label_estimates(estimate_boards(items, settings, target), items)
    if estimate:
        from mmdeploy.targets.estimate import estimate_item

        if target is None:
            from mmdeploy.targets import get_target

            target = get_target("cpu")
        results = []
        for item in items:
            record = {"artifact": item.artifact, "path": str(item.path), "model": item.model,
                      "component": item.component, "format": item.manifest.format,
                      "precision": item.manifest.precision}
            record.update(estimate_item(item.path, item.manifest, target, settings.batch))
            results.append(record)
        return _label_estimates(harness.document(results, settings, target, estimate=True), items)
    if target is not None and target.remote:
        from mmdeploy.targets.remote import run_remote_hosts

        return run_remote_hosts(items, settings, target)
    items, warnings = harness.runnable(items, target)
    if not items:
        from mmdeploy.errors import BackendUnavailable

        raise BackendUnavailable("; ".join(warnings), "install the runtime, or pass an ONNX artifact")
    results = harness.run_items(items, settings, target, progress=progress)
    accuracy = None
    if settings.accuracy:
        from mmdeploy.bench.accuracy import measure

        accuracy = measure(items, _runner_loader(settings, target), limit=settings.accuracy_limit, scorer=scorer)
    doc = harness.document(results, settings, target, accuracy=accuracy)
    if warnings:
        doc["warnings"] = warnings
    return doc


def _manifest(path: Path):
    from mmdeploy.artifact import read_manifest

    return read_manifest(path)


def onnx_sibling(item):
    """For --estimate: a compiled item (``vision-tflite``, ``vision-openvino``) replaced by its
    bundle's ONNX of the same component (FLOPs are counted on ONNX graphs), labelled so."""
    if item.manifest.format == "onnx":
        return item
    from dataclasses import replace

    from mmdeploy.errors import InputError

    ref = None
    if item.bundle is not None:
        ref = next((r for r in _manifest(item.bundle).artifacts
                    if r.component == item.component and r.format == "onnx"), None)
    if ref is None:
        raise InputError(f"{item.path}: --estimate counts FLOPs of ONNX graphs; this {item.manifest.format} "
                         "artifact has no ONNX sibling in its bundle",
                         "pass the bundle written by `mmdeploy convert`/`compile` (it keeps the ONNX)")
    sibling = Path(item.bundle) / ref.path
    return replace(item, path=sibling, manifest=_manifest(sibling), estimated_for=item.path)


def _label_estimates(doc: dict, items) -> dict:
    """Say on each estimated row which artifact it stands for when the ONNX sibling was counted."""
    stands_for = {str(it.path): it.estimated_for for it in items if it.estimated_for is not None}
    for r in doc.get("results", []):
        original = stands_for.get(r.get("path"))
        if original is not None:
            r["estimated_for"] = str(original)
            r["estimated_from"] = r["path"]
            r["estimate_note"] = f"{original.name}: estimated from its ONNX sibling {Path(r['path']).name}"
    return doc


def _runner_loader(settings, target):
    import shutil
    import tempfile

    from mmdeploy.backends import load_runner
    from mmdeploy.bench import harness

    def load(item, path: Path | None = None):
        if item is None:
            from mmdeploy.artifact import read_manifest

            item = harness.Item("extra", Path(path), None, "", Path(path).name, read_manifest(path))
        workdir = Path(tempfile.mkdtemp(prefix="mmdeploy-acc-"))
        try:
            run_dir = harness.prepare(item, target, workdir)
            return load_runner(run_dir, threads=settings.threads or (target.threads if target else None))
        finally:  # runners hold their model in memory once loaded
            shutil.rmtree(workdir, ignore_errors=True)

    return load


def gate(doc: dict, budgets=None, baseline: dict | None = None) -> list[dict]:
    """Evaluate budgets (and a stored baseline) on ``doc``; fills doc["budgets"] and doc["passed"]."""
    from mmdeploy.bench.budgets import evaluate
    from mmdeploy.errors import InputError

    if doc.get("kind") == "estimate" and ((budgets and budgets.budgets) or baseline):
        raise InputError("budgets are checked against measurements, not ESTIMATES",
                         "drop --estimate, or drop the budgets")
    checks = evaluate(doc, budgets, baseline)
    doc["budgets"] = checks
    doc["passed"] = all(c["passed"] for c in checks)
    return checks
