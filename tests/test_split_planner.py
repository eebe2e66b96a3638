"""The planner: units, the cost model, segments, measured/estimated/saved profiles, the sweep."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from builders import cached_bundle

from mmdeploy.artifact import load_reference
from mmdeploy.errors import InputError
from mmdeploy.split import partition, planner
from mmdeploy.split.planner import Profile, SegmentTime


def _profile(ms, target="t", kind="measured"):
    names = [f"block:{i}" for i in range(len(ms) - 1)] + ["head"]
    return Profile(target=target, kind=kind, segments=[SegmentTime(name=n, ms=m) for n, m in zip(names, ms)])


def test_units():
    assert planner.parse_bandwidth("20Mbps") == 20e6
    assert planner.parse_bandwidth("1.5 Gbps") == 1.5e9
    assert planner.parse_bandwidth("800kbps") == 800e3
    assert planner.parse_bandwidth(5) == 5e6
    assert planner.parse_ms("40ms") == 40 and planner.parse_ms("0.1s") == 100 and planner.parse_ms(3) == 3
    for bad in ("fast", "-1Mbps", "0"):
        with pytest.raises(InputError):
            planner.parse_bandwidth(bad)
    with pytest.raises(InputError):
        planner.parse_ms("soon")


def test_cost_model_picks_each_strategy_where_it_should():
    # a slow edge, a fast cloud; the cut after block 0 is small, the input is big
    edge, cloud = _profile([2, 20, 20, 1]), _profile([0.2, 2, 2, 0.1])
    cut_bytes, input_bytes, output_bytes = [1_000, 50_000, 50_000], 600_000, 64
    low = planner.plan(edge, cloud, cut_bytes, input_bytes, output_bytes, 0.05e6, 10)
    assert low["choice"]["strategy"] == "edge-only"
    mid = planner.plan(edge, cloud, cut_bytes, input_bytes, output_bytes, 20e6, 10)
    assert mid["choice"]["at"] == "block:0"
    assert mid["choice"]["total_ms"] == pytest.approx(2 + 10 + (1_064 * 8 / 20e6) * 1e3 + 4.1)
    high = planner.plan(edge, cloud, cut_bytes, input_bytes, output_bytes, 10e9, 1)
    assert high["choice"]["strategy"] == "cloud-only"
    for p in (low, mid, high):
        assert p["choice"]["total_ms"] == min(r["total_ms"] for r in p["rows"])
        assert len(p["rows"]) == 5 and p["best_split"]["strategy"] == "split"


@pytest.fixture(scope="module")
def seg(tmp_path_factory):
    bundle = cached_bundle(tmp_path_factory)
    return planner.segment(partition.Graph(onnx.load(str(bundle / "vision" / "model.onnx")))), bundle


def test_segments_chain_to_the_full_output(seg):
    s, bundle = seg
    assert [x.name for x in s.segments] == ["block:0", "block:1", "head"]
    feeds, ref = load_reference(bundle / "vision")[1]
    values = planner.chain_values(s, feeds)
    env = dict(feeds)
    for x in s.segments:
        runner = planner._runner(x.model)
        env.update(runner.run({k: env[k] for k in runner.input_names}))
    assert np.abs(env["image_embeds"] - ref["image_embeds"]).max() < 1e-5
    assert all(np.array_equal(values[t], env[t]) or np.abs(values[t] - env[t]).max() < 1e-5
               for c in s.cuts for t in c.crossing)
    assert planner.cut_bytes(s, values) == [17 * 32 * 4] * 2
    assert planner.cut_bytes(s, values, "fp16") == [17 * 32 * 2] * 2
    assert planner.io_bytes(s, values) == (3 * 32 * 32 * 4, 16 * 4)


def test_profiles_measured_estimated_saved(seg, tmp_path):
    s, bundle = seg
    feeds = {k: v[:1] for k, v in load_reference(bundle / "vision")[0][0].items()}
    values = planner.chain_values(s, feeds)
    gflops = planner.segment_gflops(s, feeds)
    # identical layers have identical FLOPs; the first segment adds the patch embedding conv
    assert gflops[0] > gflops[1] > gflops[2] > 0
    measured = planner.get_profile("cpu-1t", s, values, gflops, runs=3)
    assert measured.kind == "measured" and measured.threads == 1 and all(x.ms > 0 for x in measured.segments)
    estimated = planner.get_profile("rpi5", s, values, gflops)  # a shipped target profile (remote)
    assert estimated.kind == "estimated" and "ESTIMATE" in estimated.machine
    weights = planner.segment_weight_bytes(s)
    assert estimated.segments[1].ms == pytest.approx(max(gflops[1] / 150 * 1e3, weights[1] / 17e9 * 1e3))
    local = planner.get_profile("cpu", s, values, gflops, runs=2)  # the shipped local profile: measured
    assert local.kind == "measured"
    path = measured.save(tmp_path / "edge.json")
    assert planner.get_profile(str(path), s, values, gflops).segments == measured.segments
    other = _profile([1, 2])
    other.save(tmp_path / "other.json")
    with pytest.raises(InputError, match="segments"):
        planner.get_profile(str(tmp_path / "other.json"), s, values, gflops)
    with pytest.raises(InputError, match="unknown target"):
        planner.get_profile("toaster", s, values, gflops)
    with pytest.raises(InputError, match="does not exist"):
        planner.get_profile(str(tmp_path / "none.json"), s, values, gflops)


def test_sweep_table_and_plot(tmp_path):
    edge, cloud = _profile([2, 20, 20, 1]), _profile([0.2, 2, 2, 0.1])
    rows = planner.sweep(edge, cloud, [1_000, 50_000, 50_000], 600_000, 64, [0.05, 1, 20, 10_000], 5)
    assert [r["choice"] for r in rows][0] == "edge-only" and rows[2]["choice"] == "block:0"
    assert all(r["choice_ms"] <= min(r["edge_only_ms"], r["cloud_only_ms"]) for r in rows)
    md = planner.sweep_markdown(rows, "t")
    assert md.count("\n| ") == 4 + 1  # header row + one per bandwidth
    png = planner.sweep_plot(rows, tmp_path / "s.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
