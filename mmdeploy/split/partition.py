"""Cutting one component's ONNX graph into an edge half and a cloud half.

A cut is a set of tensors.  The edge half computes them from the component's inputs; the cloud
half computes the outputs from them.  A tensor chosen by the user may not separate the graph on
its own (a residual stream, an attention mask built early and used in every layer): the analysis
adds every other tensor the cloud half would need from the edge side, so the two halves always
chain exactly.  Tensors that depend on no input (constants, weights) never cross: they are
duplicated into whichever half needs them.

The extraction itself is :class:`onnx.utils.Extractor`.  Crossing tensors get short transport
names (``cut_0``, ``cut_1``...) so that the HTTP/Triton signature stays readable; optional
compression adds a Cast (fp16) or a DynamicQuantizeLinear/DequantizeLinear pair (int8) at the cut.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.errors import InputError, UnsupportedError

# encoder layers in torch.onnx.export (dynamo=False) scope names: /vision_model/encoder/layers.3/...
_LAYER_RE = re.compile(r"^(.*?/(?:layers|layer|blocks|block|h|resblocks))\.(\d+)/")

COMPRESSIONS = ("none", "fp16", "int8")

_NP_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 9: "bool", 10: "float16",
             11: "float64"}


@dataclass
class Block:
    index: int
    scope: str  # e.g. "/vision_model/encoder/layers.3"
    tensor: str  # the block's last output (the residual stream after the layer)


@dataclass
class CutAnalysis:
    """What crosses a cut: ``crossing`` in graph order; ``from_inputs`` are component inputs
    the cloud half also needs (the edge forwards them unchanged)."""

    requested: list[str]
    crossing: list[str]
    from_inputs: list[str]
    edge_nodes: int
    cloud_nodes: int
    extra: list[str] = field(default_factory=list)  # crossing tensors the user did not name


def infer_shapes(model):
    """Shapes of every tensor, symbolic dims named after the inputs' (``batch``, ``sequence``).

    ONNX Runtime's symbolic inference keeps the input dim names through Reshape/Expand; ONNX's own
    inference is the fallback (it invents ``unk__N`` names there).
    """
    import onnx

    try:
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        return SymbolicShapeInference.infer_shapes(model, auto_merge=True)
    except Exception:  # noqa: BLE001 - any failure of the optional tool: use ONNX's inference
        return onnx.shape_inference.infer_shapes(model)


class Graph:
    """Read-only index of an ONNX graph: producers, dynamic tensors, shapes."""

    def __init__(self, model):
        self.model = infer_shapes(model)
        g = self.model.graph
        self.initializers = {t.name for t in g.initializer}
        self.inputs = [i.name for i in g.input if i.name not in self.initializers]
        self.outputs = [o.name for o in g.output]
        self.nodes = list(g.node)
        self.producer: dict[str, int] = {}
        for i, node in enumerate(self.nodes):
            for out in node.output:
                if out:
                    self.producer[out] = i
        # a tensor is dynamic when it depends on a component input
        self.dynamic: set[str] = set(self.inputs)
        for node in self.nodes:
            if any(name in self.dynamic for name in node.input if name):
                self.dynamic.update(o for o in node.output if o)
        self.value_info = {v.name: v for v in list(g.value_info) + list(g.input) + list(g.output)}

    def spec(self, name: str) -> dict[str, Any]:
        """dtype and shape (symbolic dims as strings) of a tensor, as far as inference knows."""
        info = self.value_info.get(name)
        if info is None or not info.type.HasField("tensor_type"):
            return {"dtype": "float32", "shape": []}
        tt = info.type.tensor_type
        shape: list[int | str] = []
        for d in tt.shape.dim:
            shape.append(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?"))
        return {"dtype": _NP_TYPES.get(tt.elem_type, str(tt.elem_type)), "shape": shape}

    def ancestors(self, tensors: list[str]) -> set[int]:
        """Indices of the nodes (computing dynamic tensors) needed to produce ``tensors``."""
        seen: set[int] = set()
        stack = [t for t in tensors if t in self.dynamic]
        while stack:
            name = stack.pop()
            index = self.producer.get(name)
            if index is None or index in seen:
                continue
            seen.add(index)
            stack.extend(n for n in self.nodes[index].input if n and n in self.dynamic)
        return seen


def blocks(graph: Graph, tries: int = 8) -> list[Block]:
    """Block boundaries: for each encoder layer scope, the last tensor it produces.

    A layer's scope comes from tensor names (``/vision_model/encoder/layers.3/Add_1_output_0``)
    or node names, so graphs whose fused nodes lost their scope (ORT transformer fusions,
    quantizers) still have blocks.  The last tensor of a layer is the residual Add feeding the
    next one in a plain export; when it does not separate the graph on its own (a fused
    SkipLayerNormalization also emits the next layer's LayerNorm), up to ``tries`` earlier
    tensors of the layer are tried for a single-tensor cut, else the last one is kept (its cut
    then carries the extra tensors, recorded by :func:`analyse_cut`).
    """
    per_scope: dict[str, list[tuple[int, str]]] = {}
    for i, node in enumerate(graph.nodes):
        node_match = _LAYER_RE.match(node.name)
        for out in node.output:
            if not out or out not in graph.dynamic:
                continue
            match = _LAYER_RE.match(out) or node_match
            if match:
                per_scope.setdefault(f"{match.group(1)}.{match.group(2)}", []).append((i, out))
    found = []
    for scope, tensors in sorted(per_scope.items(), key=lambda kv: kv[1][-1][0]):
        chosen = tensors[-1][1]
        for _, tensor in reversed(tensors[-tries:]):
            try:
                if analyse_cut(graph, [tensor]).crossing == [tensor]:
                    chosen = tensor
                    break
            except InputError:
                continue
        found.append(Block(len(found), scope, chosen))
    return found


def analyse_cut(graph: Graph, tensors: list[str]) -> CutAnalysis:
    """Everything the cloud half needs from the edge side when the edge computes ``tensors``."""
    unknown = [t for t in tensors if t not in graph.value_info and t not in graph.producer
               and t not in graph.initializers]
    if unknown:
        found = blocks(graph)
        valid = (f"valid blocks: block:0 .. block:{len(found) - 1}; " if found else "") + \
            "list the cuts and their tensors with `mmdeploy split ARTIFACT --list`"
        raise InputError(f"tensor {unknown[0]!r} is not in the graph", valid)
    static = [t for t in tensors if t not in graph.dynamic]
    if static:
        raise InputError(f"tensor {static[0]!r} does not depend on the inputs (a constant)",
                         "cut at a tensor computed from the inputs")
    edge = graph.ancestors(tensors)
    available = {o for i in edge for o in graph.nodes[i].output if o} | set(graph.inputs)
    crossing: set[str] = set()
    cloud: set[int] = set()
    stack = list(graph.outputs)
    while stack:
        name = stack.pop()
        if name not in graph.dynamic:
            continue
        if name in available:
            crossing.add(name)
            continue
        index = graph.producer[name]
        if index in cloud:
            continue
        cloud.add(index)
        stack.extend(n for n in graph.nodes[index].input if n)
    if crossing <= set(graph.inputs) or not cloud:
        where = "before any computation" if crossing <= set(graph.inputs) else "after the outputs"
        raise InputError(f"the cut at {', '.join(tensors)} is {where}: nothing to split",
                         "pick an inner block or tensor (edge-only and cloud-only need no split)")
    missing = [t for t in tensors if t not in crossing]
    if missing:
        raise InputError(f"tensor {missing[0]!r} does not lead to the outputs (the cloud half would not use it)",
                         "pick a tensor on the path to the outputs, e.g. --at block:K")
    order = {name: i for i, name in enumerate(graph.inputs)}
    for i, node in enumerate(graph.nodes):
        for out in node.output:
            order.setdefault(out, len(graph.inputs) + i)
    ordered = sorted(crossing, key=lambda n: order.get(n, 0))
    from_inputs = [t for t in ordered if t in graph.inputs]
    return CutAnalysis(requested=list(tensors), crossing=ordered, from_inputs=from_inputs,
                       edge_nodes=len(edge), cloud_nodes=len(cloud),
                       extra=[t for t in ordered if t not in tensors])


def whole_component(graph: Graph) -> CutAnalysis:
    """Placement of the whole component in the cloud (``--at cloud``): the edge half only forwards
    (and optionally compresses) the inputs, e.g. a text tower served remotely beside an on-device
    image tower."""
    return CutAnalysis(requested=list(graph.inputs), crossing=list(graph.inputs), from_inputs=[],
                       edge_nodes=0, cloud_nodes=len(graph.nodes))


def cut_for(graph: Graph, at: str) -> tuple[CutAnalysis, Block | None]:
    """The analysed cut for ``--at`` (``block:K``, tensor names, or ``cloud``)."""
    if at.strip() == "cloud":
        return whole_component(graph), None
    tensors, block = resolve_at(graph, at)
    return analyse_cut(graph, tensors), block


def resolve_at(graph: Graph, at: str) -> tuple[list[str], Block | None]:
    """``block:K`` or a tensor name (or several, comma-separated) → cut tensors."""
    text = at.strip()
    if text.startswith("block:"):
        found = blocks(graph)
        if not found:
            raise UnsupportedError("no encoder blocks found in this graph",
                                   "cut at a tensor name with --at TENSOR_NAME")
        valid = f"valid blocks: block:0 .. block:{len(found) - 1} (list them with --list)"
        try:
            k = int(text.split(":", 1)[1])
        except ValueError:
            raise InputError(f"--at {text}: the block index is not an integer", valid) from None
        if not 0 <= k < len(found):
            raise InputError(f"--at {text}: there is no block {k}", valid)
        return [found[k].tensor], found[k]
    return [t.strip() for t in text.split(",") if t.strip()], None


# --------------------------------------------------------------------------- extraction


@dataclass
class Crossing:
    """One tensor crossing the link: its transport name(s), original tensor and spec."""

    name: str  # transport name (edge output / cloud input), e.g. cut_0
    tensor: str  # tensor name in the unsplit graph
    dtype: str  # dtype of the original tensor
    shape: list
    source: str  # "edge" (computed) or "input" (a component input forwarded as is)
    compression: str = "none"
    wire: list[dict] = field(default_factory=list)  # [{name, dtype, shape}] actually sent

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tensor": self.tensor, "dtype": self.dtype, "shape": self.shape,
                "source": self.source, "compression": self.compression, "wire": self.wire}


def _value_info(name: str, elem_type: int, shape: list):
    import onnx

    return onnx.helper.make_tensor_value_info(name, elem_type, [d if d != "?" else None for d in shape])


def _elem(dtype: str) -> int:
    import onnx

    return onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def extract_halves(graph: Graph, cut: CutAnalysis, compress: str = "none"):
    """(edge ModelProto, cloud ModelProto, [Crossing]) for an analysed cut."""
    import onnx
    from onnx import helper
    from onnx.utils import Extractor

    if compress not in COMPRESSIONS:
        raise InputError(f"--compress {compress!r} is not supported", "use fp16 or int8 (or leave it out)")
    extractor = Extractor(graph.model)
    edge_tensors = [t for t in cut.crossing if t not in cut.from_inputs]
    edge_inputs = sorted({n for i in graph.ancestors(edge_tensors) for n in graph.nodes[i].input
                          if n in graph.inputs} | set(cut.from_inputs)
                         | {t for t in edge_tensors if t in graph.inputs}, key=graph.inputs.index)
    edge = extractor.extract_model(edge_inputs, edge_tensors)
    cloud = extractor.extract_model(cut.crossing, graph.outputs)

    crossings: list[Crossing] = []
    edge_nodes, edge_outputs, cloud_nodes, cloud_inputs = [], [], [], []
    k = 0
    for tensor in cut.crossing:
        spec = graph.spec(tensor)
        if tensor in cut.from_inputs:
            crossings.append(Crossing(tensor, tensor, spec["dtype"], spec["shape"], "input",
                                      wire=[{"name": tensor, **spec}]))
            cloud_inputs.append(_value_info(tensor, _elem(spec["dtype"]), spec["shape"]))
            continue
        name = f"cut_{k}"
        k += 1
        mode = compress if spec["dtype"] == "float32" else "none"
        shape = spec["shape"]
        if mode == "fp16":
            wire = [{"name": name, "dtype": "float16", "shape": shape}]
            edge_nodes.append(helper.make_node("Cast", [tensor], [name], to=onnx.TensorProto.FLOAT16,
                                               name=f"split/{name}/Cast"))
            cloud_nodes.append(helper.make_node("Cast", [name], [tensor], to=onnx.TensorProto.FLOAT,
                                                name=f"split/{name}/Cast"))
        elif mode == "int8":
            # asymmetric uint8 with a per-request scale: needs no calibration data
            wire = [{"name": name, "dtype": "uint8", "shape": shape},
                    {"name": f"{name}_scale", "dtype": "float32", "shape": []},
                    {"name": f"{name}_zero_point", "dtype": "uint8", "shape": []}]
            names = [w["name"] for w in wire]
            edge_nodes.append(helper.make_node("DynamicQuantizeLinear", [tensor], names,
                                               name=f"split/{name}/DynamicQuantizeLinear"))
            cloud_nodes.append(helper.make_node("DequantizeLinear", names, [tensor],
                                                name=f"split/{name}/DequantizeLinear"))
        else:
            wire = [{"name": name, "dtype": spec["dtype"], "shape": shape}]
            edge_nodes.append(helper.make_node("Identity", [tensor], [name], name=f"split/{name}/Identity"))
            cloud_nodes.append(helper.make_node("Identity", [name], [tensor], name=f"split/{name}/Identity"))
        for w in wire:
            edge_outputs.append(_value_info(w["name"], _elem(w["dtype"]), w["shape"]))
            cloud_inputs.append(_value_info(w["name"], _elem(w["dtype"]), w["shape"]))
        crossings.append(Crossing(name, tensor, spec["dtype"], shape, "edge", mode, wire))

    edge.graph.node.extend(edge_nodes)
    del edge.graph.output[:]
    edge.graph.output.extend(edge_outputs)
    new_nodes = cloud_nodes + list(cloud.graph.node)
    del cloud.graph.node[:]
    cloud.graph.node.extend(new_nodes)
    del cloud.graph.input[:]
    cloud.graph.input.extend(cloud_inputs)
    from mmdeploy.onnx_files import checkable

    for model in (edge, cloud):  # forwarded inputs are not edge outputs: the client sends them
        with checkable(model):  # weights may still be in the component's external data
            onnx.checker.check_model(model)
    return edge, cloud, crossings


def crossing_bytes(crossings: list[Crossing], edge_outputs: dict[str, np.ndarray],
                   feeds: dict[str, np.ndarray], uncompressed: bool = False) -> int:
    """Bytes that cross per inference (per sample), measured on one batch of real outputs.

    ``uncompressed``: what the same tensors would weigh in their original dtype.
    """
    total = 0
    batch = max(1, int(next(iter(feeds.values())).shape[0])) if feeds else 1
    for c in crossings:
        wire = c.wire[:1] if uncompressed else c.wire
        for w in wire:
            value = np.asarray(feeds[w["name"]] if c.source == "input" else edge_outputs[w["name"]])
            nbytes = value.size * np.dtype(c.dtype).itemsize if uncompressed else value.nbytes
            total += nbytes // batch if value.ndim else nbytes
    return int(total)


def load_component(artifact: str | Path, component: str | None):
    """(component dir, manifest) of ``--component`` inside a convert bundle (or a component dir)."""
    from mmdeploy.artifact import component_dirs

    found = component_dirs(artifact)
    onnx_dirs = [(d, m) for d, m in found if m.format == "onnx"]
    if not onnx_dirs:
        raise InputError(f"{artifact} holds no ONNX component", "split a `mmdeploy convert` output")
    if component is None:
        if len(onnx_dirs) > 1:
            raise InputError(f"{artifact} holds several components",
                             "pick one with --component " + "|".join(m.name for _, m in onnx_dirs))
        return onnx_dirs[0]
    for d, m in onnx_dirs:
        if component in (m.name, d.name, m.metadata.get("component")):
            return d, m
    raise InputError(f"{artifact} has no component {component!r}",
                     "valid components: " + ", ".join(d.name for d, _ in onnx_dirs))
