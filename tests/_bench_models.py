"""Tiny real artifacts for the bench tests (no mocks: real ONNX graphs run by ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdeploy.artifact import ArtifactRef, Manifest, TensorSpec, save_reference, write_manifest


def matmul_chain(path: Path, layers: int, width: int = 256, seed: int = 0) -> None:
    """x[batch, 64, width] -> `layers` x (MatMul + Relu): time grows linearly with `layers`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Relu", [f"m{i}"], [f"r{i}"]))
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    graph = helper.make_graph(
        nodes, "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64, width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 64, width])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def component(directory: Path, layers: int = 4, name: str = "vision", reference: bool = True,
              width: int = 256, precision: str = "fp32") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    matmul_chain(directory / "model.onnx", layers, width)
    if reference:
        import onnxruntime as ort

        x = np.random.default_rng(1).standard_normal((1, 64, width)).astype(np.float32)
        y = ort.InferenceSession(str(directory / "model.onnx")).run(None, {"x": x})[0]
        save_reference(directory, [({"x": x}, {"y": y})])
    write_manifest(directory, Manifest(
        kind="component", name=name, format="onnx", precision=precision,
        inputs=[TensorSpec(name="x", dtype="float32", shape=["batch", 64, width])],
        outputs=[TensorSpec(name="y", dtype="float32", shape=["batch", 64, width])],
        metadata={"model_file": "model.onnx", "component": name}))
    return directory


def bundle(directory: Path, layers: dict[str, int], name: str = "chain", family: str | None = None,
           precision: str = "fp32") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    refs = []
    for comp, n in layers.items():
        component(directory / comp, n, name=comp, precision=precision)
        refs.append(ArtifactRef(path=comp, component=comp, format="onnx", precision=precision))
    write_manifest(directory, Manifest(kind="model", name=name, family=family, precision=precision, artifacts=refs))
    return directory
