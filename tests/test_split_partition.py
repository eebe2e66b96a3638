"""Cutting ONNX graphs: block boundaries, tensor cuts with residual streams, exact chaining."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from builders import cached_bundle

from mmdeploy.artifact import load_reference
from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner
from mmdeploy.errors import InputError
from mmdeploy.split import partition
from mmdeploy.split.build import cloud_feeds


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return cached_bundle(tmp_path_factory)


def _graph(bundle, component):
    return partition.Graph(onnx.load(str(bundle / component / "model.onnx")))


def _chain(tmp_path, graph, cut, compress, feeds):
    edge, cloud, crossings = partition.extract_halves(graph, cut, compress)
    onnx.save(edge, str(tmp_path / "edge.onnx"))
    onnx.save(cloud, str(tmp_path / "cloud.onnx"))
    e, c = OnnxRuntimeRunner(tmp_path / "edge.onnx"), OnnxRuntimeRunner(tmp_path / "cloud.onnx")
    edge_out = e.run({k: v for k, v in feeds.items() if k in e.input_names})
    return c.run(cloud_feeds([x.as_dict() for x in crossings], edge_out, feeds)), crossings


def test_blocks_are_the_encoder_layers_residual_outputs(bundle):
    for component, prefix in (("vision", "/vision_model"), ("text", "/text_model")):
        found = partition.blocks(_graph(bundle, component))
        assert [b.index for b in found] == [0, 1]
        assert [b.tensor for b in found] == [f"{prefix}/encoder/layers.{k}/Add_1_output_0" for k in (0, 1)]


@pytest.mark.parametrize("component", ["vision", "text"])
@pytest.mark.parametrize("block", [0, 1])
def test_edge_then_cloud_reproduces_the_unsplit_graph(bundle, tmp_path, component, block):
    graph = _graph(bundle, component)
    tensors, found = partition.resolve_at(graph, f"block:{block}")
    cut = partition.analyse_cut(graph, tensors)
    full = OnnxRuntimeRunner(bundle / component / "model.onnx")
    for feeds, _ in load_reference(bundle / component):
        got, _ = _chain(tmp_path, graph, cut, "none", feeds)
        want = full.run(feeds)
        for name in want:
            assert np.abs(got[name] - want[name]).max() <= 1e-5


def test_a_cut_inside_a_layer_adds_the_residual_stream(bundle, tmp_path):
    graph = _graph(bundle, "vision")
    inner = "/vision_model/encoder/layers.0/mlp/fc1/Add_output_0"  # the residual bypasses the MLP
    cut = partition.analyse_cut(graph, [inner])
    assert cut.crossing[-1] == inner or inner in cut.crossing
    assert "/vision_model/encoder/layers.0/Add_output_0" in cut.extra
    feeds, _ = load_reference(bundle / "vision")[0]
    got, crossings = _chain(tmp_path, graph, cut, "none", feeds)
    want = OnnxRuntimeRunner(bundle / "vision" / "model.onnx").run(feeds)
    assert len(crossings) == 2
    assert np.abs(got["image_embeds"] - want["image_embeds"]).max() <= 1e-5


def test_text_cut_forwards_what_later_layers_need(bundle):
    graph = _graph(bundle, "text")
    cut = partition.analyse_cut(graph, [partition.blocks(graph)[0].tensor])
    assert len(cut.crossing) > 1  # the attention mask / pooling indices built before layer 0
    assert cut.extra and partition.blocks(graph)[0].tensor in cut.crossing


@pytest.mark.parametrize("compress,min_cos", [("fp16", 0.9999), ("int8", 0.999)])
def test_compression_shrinks_the_cut_and_keeps_cosine(bundle, tmp_path, compress, min_cos):
    from mmdeploy.compare import output_metrics

    graph = _graph(bundle, "vision")
    cut = partition.analyse_cut(graph, partition.resolve_at(graph, "block:0")[0])
    feeds, ref = load_reference(bundle / "vision")[1]
    got, crossings = _chain(tmp_path, graph, cut, compress, feeds)
    wire = crossings[0].wire
    assert wire[0]["dtype"] == {"fp16": "float16", "int8": "uint8"}[compress]
    assert output_metrics(ref["image_embeds"], got["image_embeds"])["cosine"] >= min_cos


def _raises(pattern, fn, *args):
    """The error's one line (message and hint, as the CLI prints it) matches ``pattern``."""
    with pytest.raises(InputError) as info:
        fn(*args)
    assert re.search(pattern, info.value.one_line()), info.value.one_line()


def test_bad_cuts_say_what_is_valid(bundle):
    graph = _graph(bundle, "vision")
    _raises(r"no block 9.*block:0 \.\. block:1", partition.resolve_at, graph, "block:9")
    _raises("not an integer", partition.resolve_at, graph, "block:x")
    _raises(r"'nope' is not in the graph.*block:0 \.\. block:1", partition.analyse_cut, graph, ["nope"])
    _raises("constant", partition.analyse_cut, graph, [graph.model.graph.initializer[0].name])
    _raises("before any computation", partition.analyse_cut, graph, ["pixel_values"])
    _raises("after the outputs", partition.analyse_cut, graph, ["image_embeds"])
    cut = partition.analyse_cut(graph, [partition.blocks(graph)[0].tensor])
    _raises("fp16 or int8", partition.extract_halves, graph, cut, "int4")


def test_load_component_picks_by_name(bundle):
    d, m = partition.load_component(bundle, "text")
    assert d.name == "text" and m.format == "onnx"
    _raises("valid components: vision, text", partition.load_component, bundle, "audio")
    _raises("several components", partition.load_component, bundle, None)


def test_blocks_survive_scopeless_node_names(bundle):
    """Fusing/quantizing tools rename nodes (SkipLayerNorm_1, Gemm_2_Add...); tensor names keep scopes."""
    model = onnx.load(str(bundle / "vision" / "model.onnx"))
    for i, node in enumerate(model.graph.node):
        node.name = f"{node.op_type}_{i}"
    graph = partition.Graph(model)
    found = partition.blocks(graph)
    assert [b.tensor for b in found] == [f"/vision_model/encoder/layers.{k}/Add_1_output_0" for k in (0, 1)]
    assert all(partition.analyse_cut(graph, [b.tensor]).crossing == [b.tensor] for b in found)
