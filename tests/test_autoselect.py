"""quantize --method auto: candidates recorded, the fastest within the budget chosen (timings
injected, never asserted), skips and failures named, and an OpenVINO choice usable like any
artifact (load_runner, bench, compile)."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from builders import quantize_bundle  # noqa: E402

from mmdeploy import cpu as cpu_module  # noqa: E402
from mmdeploy.artifact import read_manifest  # noqa: E402
from mmdeploy.stages import autoselect  # noqa: E402
from mmdeploy.stages.autoselect import CANDIDATES, NoCandidateError, Outcome  # noqa: E402
from mmdeploy.stages.quantize import QuantizeOptions, quantize  # noqa: E402

CPU_AMX = {"model": "test Xeon", "machine": "x86_64", "flags": [],
           "features": {"avx2": True, "avx512": True, "vnni": True, "avx512_bf16": True, "avx512_fp16": True,
                        "amx": True},
           "openvino_capabilities": ["FP32", "BF16", "FP16", "INT8"]}
CPU_AVX2 = {**CPU_AMX, "model": "test Zen 3", "openvino_capabilities": ["FP32", "INT8"],
            "features": {"avx2": True, "avx512": False, "vnni": False, "avx512_bf16": False,
                         "avx512_fp16": False, "amx": False}}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return quantize_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


def _timer(latencies: dict[str, float]):
    """An injected timer: {candidate: ms} instead of measuring (99 ms for those not named)."""
    return lambda runners, feeds, blocks: {name: latencies.get(name, 99.0) for name in runners}


class _Eval:
    metric, budget = "cosine", 0.99

    def describe(self):
        return "embedding cosine >= 0.99"


def _fake_build(values: dict[str, float], aware_gain: float = 0.0):
    """build(): a built Outcome scoring ``values[name]`` (cosine), no real quantization."""

    def build(cand, log, aware):
        value = values[cand.name] + (aware_gain if aware else 0.0)
        result = SimpleNamespace(model_file="model.onnx", format="onnx", precision=cand.precision, report={})
        state = {"vision": {"result": result, "out_dir": Path("/nonexistent"), "excluded": [], "passes": [],
                            "base_model": None}}
        return Outcome(cand, state=state, score={"value": value, "ok": value >= 0.99}, ok=value >= 0.99)

    return build


def _comps():
    return [SimpleNamespace(name="vision", calib=SimpleNamespace(feeds=[{"x": np.zeros(1)}]), result=None,
                            manifest=None, out_dir=None, excluded=[], passes=[], base_model=None)]


def _select(monkeypatch, values, latencies, cpu=CPU_AMX, aware_gain=0.0, **options):
    monkeypatch.setattr(cpu_module, "cpu_features", lambda: cpu)
    opts = QuantizeOptions(**options)
    return autoselect.select(_comps(), _Eval(), opts, lambda m: None, build=_fake_build(values, aware_gain),
                             runner_for=lambda comp, state, cand: cand.name, timer=_timer(latencies))


def test_picks_fastest_within_budget_and_records_every_candidate(monkeypatch):
    values = {n: 0.999 for n in CANDIDATES}
    values["openvino-bf16"] = 0.95  # the fastest, but over budget
    latencies = {"ort-static": 20.0, "ort-dynamic": 30.0, "nncf": 16.0, "nncf+bf16": 12.0,
                 "openvino-bf16": 9.0, "openvino-fp16": 25.0}
    chosen, record = _select(monkeypatch, values, latencies, precision="auto")
    assert chosen.name == "nncf+bf16"
    rows = {r["name"]: r for r in record["candidates"]}
    assert set(rows) == set(autoselect.KIND_CANDIDATES["cpu"])
    assert rows["openvino-bf16"]["holds_budget"] is False and rows["openvino-bf16"]["latency_ms"] == 9.0
    assert all("latency_ms" in r and "accuracy" in r for r in rows.values())
    assert record["cpu"]["features"]["amx"] is True and record["chosen"] == "nncf+bf16"
    assert "measured here" in record["how"] and "1.33× faster than nncf" in record["reason"]


def test_a_tie_in_speed_goes_to_fewer_float_blocks_then_the_smaller_artifact(monkeypatch):
    """Within 5 % of the fastest, speed is noise: MiniLM's nncf-fast+bf16 with 6 FFN blocks in float
    (42.6 MB, 3.04 ms) against nncf-w8 with none (23.2 MB, 3.07 ms) -- the user wants the latter."""
    values = {n: 0.999 for n in CANDIDATES}
    base = _fake_build(values)

    def build(cand, log, aware):
        o = base(cand, log, aware)
        if cand.name == "nncf-fast+bf16":
            o.float_blocks = [{"component": "vision", "block": f"layers.{i}.ffn"} for i in range(6)]
        return o

    monkeypatch.setattr(cpu_module, "cpu_features", lambda: CPU_AMX)
    latencies = {"nncf-fast+bf16": 3.04, "nncf-w8": 3.07, "nncf": 5.0}
    chosen, record = autoselect.select(_comps(), _Eval(), QuantizeOptions(), lambda m: None, build=build,
                                       runner_for=lambda comp, state, cand: cand.name, timer=_timer(latencies))
    assert chosen.name == "nncf-w8" and "fewer blocks in float" in record["reason"]
    latencies["nncf-fast+bf16"] = 2.5  # really faster: it wins despite its float blocks
    chosen, _ = autoselect.select(_comps(), _Eval(), QuantizeOptions(), lambda m: None, build=build,
                                  runner_for=lambda comp, state, cand: cand.name, timer=_timer(latencies))
    assert chosen.name == "nncf-fast+bf16"


def test_no_block_search_for_a_route_far_from_the_budget_when_another_holds(monkeypatch):
    """--precision auto: all-mpnet-base-v2's NNCF int8 at cosine 0.952 (4.8x the 0.01 allowance)
    while other routes hold -- a search would keep most blocks in float; it is skipped.  Near the
    budget (0.985) and faster, it is searched.  Under --int8, a route holding with every block
    int8 ends it: no search at all."""
    searched = []

    def build(cand, log, aware):
        if aware:
            searched.append(cand.name)
        o = _fake_build(values)(cand, log, aware)
        o.score["cosine"] = {"vision": o.score["value"]}  # the cosine guard scores each component
        return o

    monkeypatch.setattr(cpu_module, "cpu_features", lambda: CPU_AMX)
    values = {n: 0.999 if n in ("nncf-w8", "openvino-bf16") else 0.952 for n in CANDIDATES}
    latencies = {"nncf-w8": 10.0, "nncf": 5.0, "nncf+bf16": 4.0, "openvino-bf16": 9.0}
    auto = QuantizeOptions(precision="auto")
    chosen, _ = autoselect.select(_comps(), _Eval(), auto, lambda m: None, build=build,
                                  runner_for=lambda comp, state, cand: cand.name, timer=_timer(latencies))
    assert chosen.name == "openvino-bf16" and searched == []
    values.update({"nncf": 0.985, "nncf+bf16": 0.985})
    autoselect.select(_comps(), _Eval(), auto, lambda m: None, build=build,
                      runner_for=lambda comp, state, cand: cand.name, timer=_timer(latencies))
    assert "nncf" in searched
    # --int8: int8 weights holding with every block int8 end the search (no mixed artifact)
    searched.clear()
    lines: list[str] = []
    chosen, _ = autoselect.select(_comps(), _Eval(), QuantizeOptions(), lines.append, build=build,
                                  runner_for=lambda comp, state, cand: cand.name, timer=_timer(latencies))
    assert chosen.name == "nncf-w8" and searched == [] and any("no block search" in line for line in lines)


def test_other_cpu_other_choice_and_unavailable_routes_skipped_with_a_note(monkeypatch):
    values = {n: 0.999 for n in CANDIDATES}
    latencies = {"ort-static": 14.0, "ort-dynamic": 15.0, "nncf": 60.0}
    chosen, record = _select(monkeypatch, values, latencies, cpu=CPU_AVX2, precision="auto")
    assert chosen.name == "ort-static"
    rows = {r["name"]: r for r in record["candidates"]}
    assert "no bf16 (AMX or AVX512-BF16)" in rows["nncf+bf16"]["skipped"]
    assert "no fp16" in rows["openvino-fp16"]["skipped"] and "latency_ms" not in rows["openvino-fp16"]


def test_int8_never_chooses_a_float_route(monkeypatch):
    """Found on real weights: every int8 route missed the guard and --int8 returned OpenVINO bf16
    at 100 % of the fp32 size.  Under --int8 the float routes are not candidates at all."""
    values = {n: 0.999 for n in CANDIDATES}
    latencies = {"ort-static": 20.0, "ort-dynamic": 30.0, "nncf": 16.0, "nncf+bf16": 12.0, "openvino-bf16": 1.0}
    chosen, record = _select(monkeypatch, values, latencies)
    assert chosen.name == "nncf+bf16"
    names = {r["name"] for r in record["candidates"]}
    assert "openvino-bf16" not in names and "openvino-fp16" not in names and "nncf-w8" in names
    assert all(CANDIDATES[n].precision == "int8" for n in names)


def test_missing_package_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "nncf" else real(name, *a))
    assert autoselect.availability(CANDIDATES["nncf"], CPU_AMX) == "nncf: needs nncf (not installed)"
    assert autoselect.availability(CANDIDATES["ort-static"], CPU_AMX) is None


def test_no_candidate_within_budget_names_best_per_candidate(monkeypatch):
    values = {n: 0.9 + i / 1000 for i, n in enumerate(CANDIDATES)}
    with pytest.raises(NoCandidateError) as info:
        _select(monkeypatch, values, {}, precision="auto", accuracy_aware=False)
    message = str(info.value)
    assert info.value.exit_code == 1 and "nothing written" in message
    for name in autoselect.KIND_CANDIDATES["cpu"]:
        assert f"{name} cosine {values[name]:.5f}" in message
    # the hint is the accuracy guard's remedy for the closest candidate (the last, 0.905)
    assert "pass --accuracy-budget 0.90" in info.value.hint and "the cosine openvino-fp16 reached" in info.value.hint


def test_sensitive_blocks_kept_float_only_when_no_route_holds_fully_quantized(monkeypatch):
    values = {n: 0.985 for n in CANDIDATES}
    latencies = {"ort-static": 20.0, "ort-dynamic": 30.0, "nncf": 16.0, "nncf+bf16": 12.0,
                 "openvino-bf16": 9.0, "openvino-fp16": 25.0}
    values["openvino-bf16"] = 0.95  # not int8: no blocks to keep in float, stays over budget
    chosen, record = _select(monkeypatch, values, latencies, aware_gain=0.01, precision="auto")
    assert chosen.name == "nncf+bf16"
    assert {r["name"]: r["holds_budget"] for r in record["candidates"]}["openvino-bf16"] is False


def _two_tower_select(monkeypatch, cosines: dict[str, dict[str, float]], latencies: dict[str, dict[str, float]],
                      evaluator=None, mix_ok=True):
    """Two components; each candidate's cosine and latency per component."""
    monkeypatch.setattr(cpu_module, "cpu_features", lambda: CPU_AMX)
    comps = [SimpleNamespace(name=n, calib=SimpleNamespace(feeds=[{"x": np.zeros(1)}]), result=None, out_dir=None,
                             excluded=[], passes=[], base_model=None) for n in ("vision", "text")]

    def build(cand, log, aware):
        cos = cosines.get(cand.name, {"vision": 0.999, "text": 0.999})
        state = {n: {"result": f"{cand.name}/{n}", "out_dir": Path(f"/{cand.name}/{n}"), "excluded": [],
                     "passes": [], "base_model": None} for n in cos}
        ok = min(cos.values()) >= 0.99
        return Outcome(cand, state=state, score={"cosine": dict(cos), "value": min(cos.values()), "ok": ok}, ok=ok)

    def timer(runners, feeds, blocks):
        # runners are wrapped (a failure while timed is recorded, not raised): the component's name inside
        return {name: latencies.get(name, {}).get(r.runner, 50.0) for name, r in runners.items()}

    ev = evaluator or _Eval()
    if ev.metric == "task":
        ev.score = lambda runners: {"value": 50.0, "drop": 0.0 if mix_ok else 5.0, "ok": mix_ok}
    chosen, record = autoselect.select(comps, ev, QuantizeOptions(), lambda m: None, build=build,
                                       runner_for=lambda comp, state, cand: comp.name, timer=timer)
    return chosen, record, comps


def test_each_component_gets_the_fastest_candidate_that_holds_the_budget_for_it(monkeypatch):
    """NNCF holds on the image tower and is fastest there, but loses too much on the text tower:
    the image tower takes NNCF, the text tower the fastest route that holds for it."""
    cosines = {"nncf+bf16": {"vision": 0.998, "text": 0.9875}, "nncf": {"vision": 0.998, "text": 0.9875}}
    latencies = {"nncf+bf16": {"vision": 13.0, "text": 4.0}, "nncf": {"vision": 15.0, "text": 5.0},
                 "ort-static": {"vision": 22.0, "text": 7.0}, "ort-dynamic": {"vision": 30.0, "text": 9.0},
                 "openvino-bf16": {"vision": 19.0, "text": 8.0}, "openvino-fp16": {"vision": 40.0, "text": 12.0}}
    chosen, record, comps = _two_tower_select(monkeypatch, cosines, latencies)
    assert record["chosen_by_component"] == {"vision": "nncf+bf16", "text": "ort-static"}
    assert chosen.name == "nncf+bf16 (vision) + ort-static (text)" and chosen.precision == "int8"
    assert chosen.latency_ms == 13.0 + 7.0 and record["latency_ms"] == 20.0
    assert chosen.score["value"] == pytest.approx(0.998) and chosen.score["ok"]
    assert [c.out_dir for c in comps] == [Path("/nncf+bf16/vision"), Path("/ort-static/text")]
    rows = {r["name"]: r for r in record["candidates"]}
    assert rows["nncf+bf16"]["holds_budget"] is False  # as a whole; it still serves the image tower
    assert rows["nncf+bf16"]["latency_ms_by_component"] == {"vision": 13.0, "text": 4.0}
    assert "vision: nncf+bf16" in record["reason"] and "text: ort-static" in record["reason"]
    assert "1.69× faster than ort-static" in record["reason"]  # vision: 22 / 13


def test_one_candidate_for_all_components_when_it_is_fastest_everywhere(monkeypatch):
    latencies = {"nncf+bf16": {"vision": 13.0, "text": 4.0}}
    chosen, record, _ = _two_tower_select(monkeypatch, {}, latencies)
    assert chosen.single is not None and chosen.name == "nncf+bf16" and record["chosen"] == "nncf+bf16"


def test_task_metric_mix_is_scored_as_a_whole_and_dropped_when_over_budget(monkeypatch):
    """Under a task metric components are scored together: a per-component mix is kept only when
    its own score holds; else the fastest whole candidate."""

    class _Task:
        metric, budget, task_name, baseline = "task", 1.0, "zero-shot top-1", 50.0

        def describe(self):
            return "zero-shot top-1 drop <= 1 pp"

    latencies = {"nncf+bf16": {"vision": 13.0, "text": 9.0}, "ort-static": {"vision": 22.0, "text": 5.0}}
    chosen, record, _ = _two_tower_select(monkeypatch, {}, latencies, evaluator=_Task(), mix_ok=True)
    assert record["chosen_by_component"] == {"vision": "nncf+bf16", "text": "ort-static"}
    chosen, record, _ = _two_tower_select(monkeypatch, {}, latencies, evaluator=_Task(), mix_ok=False)
    assert chosen.single is not None and record["chosen"] == "nncf+bf16"  # 22 ms in all, against ort-static's 27


def test_remote_target_unreachable_uses_profile_preference_with_the_reason(monkeypatch, tmp_path):
    """The device agent for real, against a closed port: no traceback, the preference, labelled."""
    sys.path.insert(0, str(Path(__file__).parent))
    from _device import free_port

    port = free_port()
    (tmp_path / "orin.yaml").write_text(f"backend: tensorrt\nremote: true\nhost: nvidia@127.0.0.1:{port}\n"
                                        "quantize_preference: [tensorrt-fp16, tensorrt-int8]\n")
    monkeypatch.setenv("MMDEPLOY_TARGETS_PATH", str(tmp_path))
    values = {n: 0.999 for n in CANDIDATES}
    chosen, record = _select(monkeypatch, values, {}, target="orin", precision="auto")
    assert chosen.name == "tensorrt-fp16"
    how = record["how"]
    assert "profile preference" in how and "not measured, the device agent was not reachable: " in how
    assert len(how.splitlines()) == 1 and ("127.0.0.1" in how or "ssh client is not installed" in how)
    assert all("latency_ms" not in r for r in record["candidates"])


def _measurement(latency, skipped=None):
    from mmdeploy.targets.agent import Measurement

    board = {"profile": "jetson-orin-nano", "model": "NVIDIA Jetson Orin Nano Developer Kit", "arch": "aarch64",
             "cpu_model": "ARMv8 Processor rev 1 (v8l)"}
    return Measurement("orin", "nvidia@10.0.0.2", board, latency_ms=latency, skipped=skipped or {})


def test_remote_target_measured_through_the_agent_hook(monkeypatch, tmp_path):
    (tmp_path / "orin.yaml").write_text("backend: tensorrt\nremote: true\nhost: nvidia@10.0.0.2\n")
    monkeypatch.setenv("MMDEPLOY_TARGETS_PATH", str(tmp_path))
    monkeypatch.setattr(autoselect, "measure_on_target", lambda profile, built, comps, log: (
        _measurement({"tensorrt-int8": {"vision": 3.0}, "tensorrt-fp16": {"vision": 4.0}}), None))
    chosen, record = _select(monkeypatch, {n: 0.999 for n in CANDIDATES}, {}, target="orin")
    assert chosen.name == "tensorrt-int8" and "through the device agent" in record["how"]
    assert "measured on orin (nvidia@10.0.0.2)" in record["how"] and "Jetson Orin Nano" in record["how"]
    assert record["device"]["board"] == "jetson-orin-nano" and record["latency_ms"] == 3.0


def test_a_candidate_the_device_cannot_run_is_never_chosen(monkeypatch, tmp_path):
    """Faster here or preferred, but skipped on the device (its runtime is missing there)."""
    (tmp_path / "box.yaml").write_text("backend: onnxruntime\nremote: true\nhost: pi@10.0.0.3\n"
                                       "quantize_preference: [nncf, ort-static, ort-dynamic]\n")
    monkeypatch.setenv("MMDEPLOY_TARGETS_PATH", str(tmp_path))
    why = "the openvino runtime is not installed for python3 on pi@10.0.0.3 (pip install openvino)"
    monkeypatch.setattr(autoselect, "measure_on_target", lambda profile, built, comps, log: (
        _measurement({"ort-static": {"vision": 5.0}, "ort-dynamic": {"vision": 4.0}}, {"nncf": why}), None))
    chosen, record = _select(monkeypatch, {n: 0.999 for n in CANDIDATES}, {}, target="box")
    assert chosen.name == "ort-dynamic"
    rows = {r["name"]: r for r in record["candidates"]}
    assert rows["nncf"]["skipped_on_device"] == why and "latency_ms" not in rows["nncf"]
    assert rows["ort-static"]["latency_ms"] == 5.0
    # only the skipped one holds the budget: nothing that runs there does
    monkeypatch.setattr(autoselect, "measure_on_target", lambda profile, built, comps, log: (
        _measurement({"ort-static": {"vision": 5.0}}, {"nncf": why}), None))
    with pytest.raises(NoCandidateError, match="no candidate that runs on box"):
        _select(monkeypatch, {"nncf": 0.999, "ort-static": 0.9, "ort-dynamic": 0.9}, {}, target="box",
                accuracy_aware=False)


def test_no_candidate_runs_on_the_device_falls_back_to_the_preference_saying_so(monkeypatch, tmp_path):
    (tmp_path / "box.yaml").write_text("backend: openvino\nremote: true\nhost: pi@10.0.0.3\n"
                                       "quantize_preference: [nncf, openvino-bf16]\n")
    monkeypatch.setenv("MMDEPLOY_TARGETS_PATH", str(tmp_path))
    why = "the openvino runtime is not installed for python3 on pi@10.0.0.3 (pip install openvino)"
    monkeypatch.setattr(autoselect, "measure_on_target", lambda profile, built, comps, log: (
        _measurement({}, {"nncf": why, "openvino-bf16": why}), None))
    chosen, record = _select(monkeypatch, {n: 0.999 for n in CANDIDATES}, {}, target="box", precision="auto")
    assert chosen.name == "nncf" and record["how"].startswith("profile preference of box (nncf, openvino-bf16): "
                                                              "not measured, no candidate runs on the device: nncf: ")
    assert record["device"]["host"] == "nvidia@10.0.0.2"  # who answered is still recorded


def test_real_auto_records_candidates_and_openvino_choice_runs_everywhere(bundle, tmp_path, monkeypatch):
    """Real candidates on the tiny CLIP; the timer is injected so that an OpenVINO route wins."""
    caps = cpu_module.cpu_features().get("openvino_capabilities", [])
    fast = "nncf+bf16" if "BF16" in caps else "nncf"
    real_select = autoselect.select
    latencies = {n: (1.0 if n == fast else 5.0) for n in CANDIDATES}
    monkeypatch.setattr(autoselect, "select",
                        lambda *a, **kw: real_select(*a, **{**kw, "timer": _timer(latencies)}))
    out = tmp_path / "auto"
    m = quantize(bundle, out, QuantizeOptions(latency_runs=0, calib_limit=4))
    auto = m.metadata["quantize"]["auto"]
    assert auto["chosen"] == fast and m.metadata["quantize"]["method"] == fast
    built = [c for c in auto["candidates"] if "skipped" not in c]
    assert {"ort-static", "ort-dynamic", "nncf"} <= {c["name"] for c in built}
    assert all(c["holds_budget"] and c["accuracy"]["value"] >= 0.99 and c["latency_ms"] > 0 for c in built)
    assert set(auto["cpu"]["features"]) >= {"avx2", "avx512", "vnni", "amx"}
    vision = read_manifest(out / "vision")
    assert vision.format == "openvino" and vision.precision == "int8"
    assert vision.metadata["inference_precision"] == ("bf16" if fast == "nncf+bf16" else "f32")

    from mmdeploy.backends import load_runner
    from mmdeploy.bench import BenchSettings, bench
    from mmdeploy.stages.compile import compile_artifact
    from mmdeploy.targets import get_target

    pixels = {"pixel_values": np.zeros((1, *read_manifest(out / "vision").inputs[0].shape[1:]), np.float32)}
    assert all(np.isfinite(v).all() for v in load_runner(out / "vision").run(pixels).values())
    doc = bench([out], BenchSettings(warmup=1, iters=3), get_target("openvino-cpu"))
    assert [r["component"] for r in doc["results"]] == ["vision", "text"]
    compiled = compile_artifact(out, "openvino", tmp_path / "compiled", {"evaluate": False})
    assert {a.format for a in compiled.artifacts} == {"openvino"}
    assert load_runner(tmp_path / "compiled" / "vision").run(pixels)


def test_timing_race_stops_runners_that_cannot_win():
    """time_interleaved: a runner whose fastest run is over RACE_RATIO x the leader's median stops
    after RACE_BLOCKS blocks (a 20 ms sleep against a no-op), the leader runs every block."""
    import time as _time

    class _Counting:
        def __init__(self, delay):
            self.delay, self.calls = delay, 0

        def run(self, feeds):
            self.calls += 1
            if self.delay:
                _time.sleep(self.delay)
            return {}

    runners = {"fast": _Counting(0.0), "slow": _Counting(0.02)}
    result = autoselect.time_interleaved(runners, {"fast": {}, "slow": {}}, blocks=5, runs=3)
    assert runners["fast"].calls == 2 + 5 * 3
    assert runners["slow"].calls == 2 + autoselect.RACE_BLOCKS * 3
    assert result["slow"] > result["fast"]


@pytest.mark.parametrize("cpu, variants", [
    (CPU_AVX2, [{"reduce_range": False}, {"reduce_range": True}]), (CPU_AMX, [{"reduce_range": False}])])
def test_ort_weight_bits_decided_by_measuring_on_x86_without_vnni(bundle, tmp_path, monkeypatch, cpu, variants):
    """ORT's u8s8 path without VNNI can saturate int16: 8-bit weights are tried first and 7-bit
    (reduce_range) only if 8-bit misses the budget (7-bit cost accuracy on real weights: 0.939
    against 0.9925); with VNNI only 8-bit."""
    from mmdeploy.stages.quantize import _variants

    monkeypatch.setattr(cpu_module, "cpu_features", lambda: cpu)
    assert _variants(QuantizeOptions(), "ort-dynamic") == variants
    assert _variants(QuantizeOptions(reduce_range=True), "ort-static") == [{"reduce_range": True}]
    m = quantize(bundle / "vision", tmp_path / "q", QuantizeOptions(method="ort-static", latency_runs=0, calib_limit=4))
    assert m.passes[-1].params["reduce_range"] is False  # 8-bit held the budget
    nncf = _variants(QuantizeOptions(), "nncf")
    assert ({"overflow_fix": "enable"} in nncf) is (cpu is CPU_AVX2)
    assert {"smooth_quant_alpha": 0.5, "overflow_fix": "first_layer"} in nncf


def test_nncf_fast_settings_reach_the_pass(bundle, tmp_path):
    """--nncf-preset performance --no-smooth-quant (auto's nncf-fast candidates) reach NNCF."""
    m = quantize(bundle / "vision", tmp_path / "q", QuantizeOptions(method="nncf", latency_runs=0, calib_limit=4,
                                                                     nncf_preset="performance", smooth_quant=False))
    report = m.passes[-1].report
    assert report["preset"] == "performance" and report["smooth_quant"] is False and report["fake_quantize_nodes"] > 0
    assert CANDIDATES["nncf-fast+bf16"].settings == (("nncf_preset", "performance"), ("smooth_quant", False))


def test_block_search_starts_from_the_all_int8_build_and_really_searches(bundle, tmp_path, monkeypatch):
    """A route over budget is searched from the build auto already made and judged (no second
    calibration), and the search runs (two bugs once: the build was never kept; then the kept
    one came back with accuracy_aware off and no block was measured)."""
    monkeypatch.setitem(autoselect.KIND_CANDIDATES, "cpu", ("nncf",))  # real builds, one route
    lines: list[str] = []
    with pytest.raises(NoCandidateError):  # random tiny weights: nncf is all but exact, never 0.999999
        quantize(bundle / "vision", tmp_path / "q", QuantizeOptions(latency_runs=0, precision="auto",
                                                                     accuracy_budget=0.999999, max_float_blocks=1),
                 log=lines.append)
    text = "\n".join(lines)
    assert text.count("quantized all (built before)") == 1, text
    assert text.index("quantized all (built before)") < text.index("sensitivity vision: ")
