"""``mmdeploy split``: write a split directory from one component of a convert bundle.

Layout::

    DIR/manifest.json   kind model, format "split": cut tensors, shapes/dtypes, bytes per inference
    DIR/edge/           component artifact: inputs -> cut tensors
    DIR/cloud/          component artifact: cut tensors -> outputs
    DIR/full/           the unsplit component, for the edge's fallback
    DIR/triton/<name>/  Triton model repository entry for the cloud half
    DIR/kserve-triton.yaml, DIR/kserve-mmdeploy.yaml, DIR/Dockerfile  deployment files (split/deploy.py)

Chaining edge then cloud is checked against the unsplit graph on the reference cases before
anything is written; without compression it must agree within ``atol`` (1e-5).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.errors import VerificationError

SPLIT_FORMAT = "split"
EXACT_ATOL = 1e-5


def io_specs(model) -> tuple[list[dict], list[dict]]:
    """[{name, dtype, shape}] of a ModelProto's inputs and outputs (symbolic dims as strings)."""
    from mmdeploy.split.partition import _NP_TYPES

    def spec(v):
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tt.shape.dim]
        return {"name": v.name, "dtype": _NP_TYPES.get(tt.elem_type, str(tt.elem_type)), "shape": shape}

    inits = {t.name for t in model.graph.initializer}
    return ([spec(v) for v in model.graph.input if v.name not in inits],
            [spec(v) for v in model.graph.output])


def cloud_feeds(crossings: list[dict], edge_outputs: dict, feeds: dict) -> dict[str, np.ndarray]:
    """The cloud half's feeds: edge outputs plus the component inputs it needs forwarded."""
    out = {}
    for c in crossings:
        for w in c["wire"]:
            out[w["name"]] = feeds[w["name"]] if c["source"] == "input" else edge_outputs[w["name"]]
    return out


def _random_feeds(inputs: list[dict], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for spec in inputs:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in spec["shape"]]
        if spec["dtype"].startswith("float"):
            feeds[spec["name"]] = rng.standard_normal(shape).astype(spec["dtype"])
        else:
            feeds[spec["name"]] = rng.integers(0, 2, shape).astype(spec["dtype"])
    return feeds


class _Chain:
    """Edge then cloud runners as one Runner (for task metrics before the split dir exists)."""

    def __init__(self, edge, cloud, crossings: list[dict], input_names: list[str]):
        self.edge, self.cloud, self.crossings = edge, cloud, crossings
        self.name, self.input_names, self.output_names = "split", input_names, cloud.output_names

    def run(self, feeds):
        edge_out = self.edge.run({k: v for k, v in feeds.items() if k in self.edge.input_names})
        return self.cloud.run(cloud_feeds(self.crossings, edge_out, feeds))


def task_parity(comp_dir: Path, component: str, split_runner, full_runner,
                processor: str | Path | None = None) -> dict | None:
    """The model's task metric (e.g. zero-shot top-1) with the split component vs the unsplit one,
    when the component lives in a convert bundle whose adapter has a task; None otherwise."""
    from mmdeploy.artifact import bundle_dir, read_manifest
    from mmdeploy.backends import load_runner
    from mmdeploy.models import adapter_for_bundle

    bundle = bundle_dir(comp_dir)
    if bundle is None:
        return None
    try:
        adapter = adapter_for_bundle(bundle, {"processor": str(processor) if processor else None})
        if adapter is None or component not in adapter.task_components():
            return None
        others = {ref.component: load_runner(bundle / ref.path) for ref in read_manifest(bundle).artifacts
                  if ref.component in adapter.task_components() and ref.component != component}
        unsplit = adapter.evaluate({**others, component: full_runner})
        split = adapter.evaluate({**others, component: split_runner})
    except Exception as exc:  # noqa: BLE001 - a task metric is a report, never a reason to fail the split
        return {"skipped": f"{exc.__class__.__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
    if unsplit is None or split is None:
        return None
    return {"metric": split.name, "n": split.n, "unsplit": unsplit.value, "split": split.value,
            "agreement": split.agreement(unsplit)}


def _component_manifest(name, role, component, model, parent, report, precision="fp32", extra=None):
    from mmdeploy.artifact import Manifest, PassRecord, TensorSpec, tool_versions

    inputs, outputs = io_specs(model)
    return Manifest(kind="component", name=name, family=parent[1].family, format="onnx",
                    precision=precision, source=parent[1].source,
                    parent={"path": str(parent[0]), "manifest_sha256": parent[2]},
                    passes=list(parent[1].passes) + [PassRecord(name="split", params={"role": role},
                                                                 report=report)],
                    tools=tool_versions("onnx", "onnxruntime"),
                    inputs=[TensorSpec(**s) for s in inputs], outputs=[TensorSpec(**s) for s in outputs],
                    metadata={"model_file": "model.onnx", "role": role, "component": component,
                              **(extra or {})})


def split_component(artifact: str | Path, output: str | Path, *, component: str | None = None,
                    at: str, compress: str = "none", name: str | None = None,
                    atol: float = EXACT_ATOL, plan: dict | None = None, processor: str | Path | None = None):
    """Cut ``component`` of ``artifact`` at ``at``; return the manifest.

    ``at``: ``block:K``, tensor names (comma-separated), or ``cloud`` (the whole component served,
    the edge half only forwarding its inputs).
    """
    from mmdeploy import onnx_files
    from mmdeploy.artifact import (ArtifactRef, Manifest, PassRecord, TensorSpec, atomic_output, check_output,
                                   load_reference, save_reference, sha256_file, tool_versions,
                                   write_manifest)
    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner
    from mmdeploy.compare import compare_outputs, merge_metrics, parity_table
    from mmdeploy.split import deploy, partition, triton

    if processor:
        from mmdeploy.models.preprocess import processor_dir_of

        processor_dir_of({"processor": str(processor)})  # a bad --processor fails before any work
    check_output(output)  # before any work
    comp_dir, comp = partition.load_component(artifact, component)
    comp_name = comp.metadata.get("component") or comp_dir.name
    model_path = comp_dir / comp.metadata.get("model_file", "model.onnx")
    graph = partition.Graph(onnx_files.load_graph(model_path))  # weights stay on disk
    cut, block = partition.cut_for(graph, at)
    edge_model, cloud_model, crossings = partition.extract_halves(graph, cut, compress)
    crossing_dicts = [c.as_dict() for c in crossings]
    name = triton.model_name(name or f"{comp_name}_cloud")
    parent = (comp_dir.resolve(), comp, sha256_file(comp_dir / "manifest.json"))

    with atomic_output(output) as tmp:
        for sub in ("edge", "cloud"):
            (tmp / sub).mkdir()
        # each half with its own weights (model.onnx.data where the component had external data)
        onnx_files.save_with_data(edge_model, comp_dir, tmp / "edge" / "model.onnx")
        onnx_files.save_with_data(cloud_model, comp_dir, tmp / "cloud" / "model.onnx")
        shutil.copytree(comp_dir, tmp / "full")

        # chain the halves on the reference cases and compare with the unsplit graph
        cases = load_reference(comp_dir) or [(_random_feeds([s.model_dump() for s in comp.inputs]), {})]
        edge = OnnxRuntimeRunner(tmp / "edge" / "model.onnx")
        cloud = OnnxRuntimeRunner(tmp / "cloud" / "model.onnx")
        full = OnnxRuntimeRunner(model_path)
        vs_full, vs_ref, edge_cases, cloud_cases = [], [], [], []
        bytes_wire = bytes_raw = 0
        for feeds, ref in cases:
            feeds = {k: v for k, v in feeds.items() if k in full.input_names}
            edge_out = edge.run({k: v for k, v in feeds.items() if k in edge.input_names})
            c_feeds = cloud_feeds(crossing_dicts, edge_out, feeds)
            got = cloud.run(c_feeds)
            want = full.run(feeds)
            vs_full.append(compare_outputs(want, got))
            if ref:
                vs_ref.append(compare_outputs(ref, got))
            edge_cases.append((feeds, edge_out))
            cloud_cases.append((c_feeds, ref or want))
            bytes_wire = max(bytes_wire, partition.crossing_bytes(crossings, edge_out, feeds))
            bytes_raw = max(bytes_raw, partition.crossing_bytes(crossings, edge_out, feeds, uncompressed=True))
        metrics_full = merge_metrics(vs_full)
        metrics_ref = merge_metrics(vs_ref) if vs_ref else {}
        if compress == "none":
            bad = [n for n, m in metrics_full.items() if not m["max_abs"] <= atol]
            if bad:
                raise VerificationError(
                    f"edge+cloud differ from the unsplit graph at {', '.join(bad)} beyond {atol:g}",
                    "report this cut; pick another block",
                    details=parity_table(metrics_full, atol, title="split vs unsplit"))
        save_reference(tmp / "edge", edge_cases)
        save_reference(tmp / "cloud", cloud_cases)
        report = {"crossing": [c.name for c in crossings], "bytes_per_inference": bytes_wire}
        edge_m = _component_manifest(f"{comp_name}-edge", "edge", comp_name, edge_model, parent, report)
        cloud_m = _component_manifest(f"{comp_name}-cloud", "cloud", comp_name, cloud_model, parent, report,
                                      extra={"model_name": name})
        write_manifest(tmp / "edge", edge_m)
        write_manifest(tmp / "cloud", cloud_m)
        triton.write_repository(tmp / "triton", name, tmp / "cloud" / "model.onnx",
                                [s.model_dump() for s in cloud_m.inputs],
                                [s.model_dump() for s in cloud_m.outputs])
        deploy.write_split_files(tmp, name)  # KServe manifests + Dockerfile next to triton/

        parity: dict[str, Any] = {"vs_unsplit": {"cases": len(cases), "atol": atol if compress == "none" else None,
                                                 "outputs": metrics_full}}
        if metrics_ref:
            parity["vs_reference"] = {"cases": len(vs_ref), "outputs": metrics_ref}
        task = task_parity(comp_dir, comp_name, _Chain(edge, cloud, crossing_dicts, full.input_names), full,
                           processor)
        if task:
            parity["task"] = task
        params = {"at": at, "compress": compress, "component": comp_name}
        metadata = {
            "component": comp_name,
            "at": at,
            "block": None if block is None else {"index": block.index, "scope": block.scope},
            "cut": {"tensors": cut.requested, "extra": cut.extra, "crossing": crossing_dicts,
                    "edge_nodes": cut.edge_nodes, "cloud_nodes": cut.cloud_nodes},
            "compression": compress,
            "bytes_per_inference": bytes_wire,
            "bytes_uncompressed": int(bytes_raw),
            "model_name": name,
            "triton": f"triton/{name}",
            "edge_inputs": list(edge.input_names),
            "plan": plan,
        }
        manifest = Manifest(
            kind="model", name=f"{comp_name}-split", family=comp.family, format=SPLIT_FORMAT,
            precision=comp.precision, source=comp.source,
            parent={"path": str(parent[0]), "manifest_sha256": parent[2]},
            passes=list(comp.passes) + [PassRecord(name="split", params=params, report={
                "bytes_per_inference": bytes_wire, "crossing": len(crossings), "extra_tensors": cut.extra})],
            tools=tool_versions("onnx", "onnxruntime"),
            inputs=[TensorSpec(**s.model_dump()) for s in comp.inputs],
            outputs=[TensorSpec(**s.model_dump()) for s in comp.outputs],
            parity=parity, metadata=metadata,
            artifacts=[ArtifactRef(path="edge", component=f"{comp_name}-edge", format="onnx", precision=comp.precision),
                       ArtifactRef(path="cloud", component=f"{comp_name}-cloud", format="onnx", precision=comp.precision),
                       ArtifactRef(path="full", component=comp_name, format="onnx", precision=comp.precision)],
        )
        write_manifest(tmp, manifest)
    return manifest


def read_split(directory: str | Path):
    """The manifest of a split directory; InputError if it is not one."""
    from mmdeploy.artifact import read_manifest
    from mmdeploy.errors import InputError

    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"split directory {directory} does not exist", "create it with `mmdeploy split`")
    manifest = read_manifest(directory)
    if manifest.format != SPLIT_FORMAT:
        raise InputError(f"{directory} is not a split directory (format {manifest.format!r})",
                         "pass a directory written by `mmdeploy split`")
    return manifest
