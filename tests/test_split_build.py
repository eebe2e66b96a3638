"""The split directory: layout, manifests, parity, nothing half-written on errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from builders import cached_bundle, cached_split

from mmdeploy.artifact import load_reference, read_manifest, verify_files
from mmdeploy.backends import load_runner
from mmdeploy.errors import InputError
from mmdeploy.split.build import read_split, split_component
from mmdeploy.split.hybrid import LocalChain


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    return cached_split(tmp_path_factory, "vision", "block:0")


def test_layout_and_manifest(split_dir):
    m = read_split(split_dir)
    assert m.kind == "model" and m.format == "split"
    assert [a.path for a in m.artifacts] == ["edge", "cloud", "full"]
    for sub in ("edge", "cloud", "full"):
        assert read_manifest(split_dir / sub).kind == "component"
    assert (split_dir / "triton" / "vision_cloud" / "config.pbtxt").is_file()
    assert (split_dir / "triton" / "vision_cloud" / "1" / "model.onnx").is_file()
    assert verify_files(split_dir) == []
    meta = m.metadata
    (c,) = meta["cut"]["crossing"]
    assert c["name"] == "cut_0" and c["tensor"].endswith("layers.0/Add_1_output_0") and c["dtype"] == "float32"
    assert c["shape"][1:] == [17, 32]
    assert meta["bytes_per_inference"] == 17 * 32 * 4
    assert m.parity["vs_unsplit"]["outputs"]["image_embeds"]["max_abs"] <= 1e-5
    assert m.parity["vs_reference"]["outputs"]["image_embeds"]["cosine"] > 0.99999
    json.loads((split_dir / "manifest.json").read_text())  # plain JSON


def test_halves_load_as_runners_and_chain(split_dir):
    edge, cloud = load_runner(split_dir / "edge"), load_runner(split_dir / "cloud")
    assert edge.output_names == ["cut_0"] and cloud.input_names == ["cut_0"]
    chain = LocalChain(split_dir)
    for feeds, ref in load_reference(split_dir / "full"):
        assert np.abs(chain.run(feeds)["image_embeds"] - ref["image_embeds"]).max() < 1e-5
    # the cloud half's own reference: cut tensors in, PyTorch outputs out
    for feeds, ref in load_reference(split_dir / "cloud"):
        assert np.abs(cloud.run(feeds)["image_embeds"] - ref["image_embeds"]).max() < 1e-5


def test_int8_compression_reports_cost_and_bytes(tmp_path_factory):
    d = cached_split(tmp_path_factory, "vision", "block:1", "int8")
    meta = read_split(d).metadata
    assert meta["compression"] == "int8"
    assert meta["bytes_per_inference"] < meta["bytes_uncompressed"] / 3
    cost = read_split(d).parity["vs_unsplit"]["outputs"]["image_embeds"]
    assert 0 < cost["max_abs"] < 0.1 and cost["cosine"] > 0.999
    assert [w["dtype"] for w in meta["cut"]["crossing"][0]["wire"]] == ["uint8", "float32", "uint8"]


def test_text_tower_split_forwards_extra_tensors(tmp_path_factory):
    d = cached_split(tmp_path_factory, "text", "block:0")
    m = read_split(d)
    assert len(m.metadata["cut"]["crossing"]) >= 2 and m.metadata["cut"]["extra"]
    assert m.parity["vs_unsplit"]["outputs"]["text_embeds"]["max_abs"] <= 1e-5


def test_errors_leave_nothing_behind(tmp_path_factory, tmp_path):
    bundle = cached_bundle(tmp_path_factory)
    out = tmp_path / "never"
    with pytest.raises(InputError):
        split_component(bundle, out, component="vision", at="block:5")
    with pytest.raises(InputError):
        split_component(bundle, out, component="vision", at="block:0", compress="int4")
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with pytest.raises(InputError, match="not a split directory"):
        read_split(bundle)
    with pytest.raises(InputError, match="does not exist"):
        read_split(tmp_path / "missing")


@pytest.mark.slow
def test_splits_a_real_convert_bundle(tmp_path, tiny_clip_dir):
    """The lead's `convert` output (onnxsim-simplified, with preprocess/) splits the same way."""
    from mmdeploy.stages.convert import convert

    bundle = tmp_path / "bundle"
    convert(tiny_clip_dir, bundle, components=["vision", "text"])
    for component in ("vision", "text"):
        m = split_component(bundle, tmp_path / f"split-{component}", component=component, at="block:1")
        out = m.metadata["model_name"]
        assert out == f"{component}_cloud"
        for key in ("vs_unsplit", "vs_reference"):
            for metrics in m.parity[key]["outputs"].values():
                assert metrics["cosine"] > 0.99999
        assert all(r["max_abs"] <= 1e-5 for r in m.parity["vs_unsplit"]["outputs"].values())
        assert m.metadata["cut"]["crossing"][-1]["shape"][0] == "batch"
        task = m.parity["task"]  # zero-shot top-1 through the bundle's adapter, split vs unsplit
        assert task["metric"] == "zero-shot-top1" and task["agreement"] == 1.0 and task["n"] > 0
    m = split_component(bundle, tmp_path / "split-int8", component="vision", at="block:0", compress="int8")
    assert 0 <= m.parity["task"]["agreement"] <= 1 and "split" in m.parity["task"]


def test_whole_component_in_the_cloud(tmp_path_factory):
    """Dual-tower placement: `--at cloud` serves the whole text tower; the edge only forwards inputs."""
    d = cached_split(tmp_path_factory, "text", "cloud")
    m = read_split(d)
    crossing = m.metadata["cut"]["crossing"]
    assert [c["tensor"] for c in crossing] == ["input_ids", "attention_mask"]
    assert [c["dtype"] for c in crossing] == ["int64", "int64"]
    assert m.parity["vs_unsplit"]["outputs"]["text_embeds"]["max_abs"] <= 1e-5
    assert read_manifest(d / "edge").inputs[0].name == "input_ids"
