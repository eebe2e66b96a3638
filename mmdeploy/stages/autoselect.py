"""``quantize --method auto``: choose the fastest route that holds the accuracy budget, by
measuring on the hardware the artifact targets.

Which int8 (or reduced-precision) route is fastest depends on the CPU: on an AVX2-only Zen 3
ONNX Runtime's static QDQ won; on a Xeon with AVX-512 VNNI and AMX, OpenVINO (NNCF int8, or
simply bf16 inference) is 1.5-2× faster than it.  So ``auto`` builds every candidate that can
run here, scores each with the stage's accuracy guard, times the ones that hold the budget side
by side in one process (interleaved blocks, ONNX Runtime spinning off) and keeps the fastest.
The manifest records every candidate (latency, accuracy, or why it was skipped) and the CPU
features that drove the choice.

``--target PROFILE`` chooses for another machine: measured there through the device agent
(:func:`measure_on_target`, a hook) when it is reachable, else the profile's stated preference
(``quantize_preference``), labelled so.

This module is kept apart from :mod:`mmdeploy.stages.quantize` (which owns calibration, the
accuracy guard and writing): it only decides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmdeploy.errors import CheckFailed


class NoCandidateError(CheckFailed):
    """No candidate holds the accuracy budget (exit 1, nothing written)."""


@dataclass(frozen=True)
class Candidate:
    name: str
    method: str  # the quantize pass's method, or "openvino-float" (fp32 IR, reduced inference precision)
    runtime: str  # onnxruntime | openvino | tflite | tensorrt
    precision: str  # the artifact's precision label
    inference_precision: str | None = None  # OpenVINO INFERENCE_PRECISION_HINT
    needs: tuple[str, ...] = ()  # python modules
    cpu: str | None = None  # OpenVINO capability the CPU must report (BF16, FP16)
    optimize: bool = False  # ORT fusions first (ort-dynamic)
    note: str = ""


CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    Candidate("ort-static", "ort-static", "onnxruntime", "int8", needs=("onnxruntime",),
              note="calibrated QDQ, u8 activations / s8 per-channel weights (VNNI's u8s8)"),
    Candidate("ort-dynamic", "ort-dynamic", "onnxruntime", "int8", needs=("onnxruntime",), optimize=True,
              note="ORT fusions (Attention, SkipLayerNorm) + dynamic int8 MatMuls"),
    Candidate("nncf", "nncf", "openvino", "int8", "f32", needs=("openvino", "nncf"),
              note="NNCF int8 (model_type=TRANSFORMER), float parts in f32"),
    Candidate("nncf+bf16", "nncf", "openvino", "int8", "bf16", needs=("openvino", "nncf"), cpu="BF16",
              note="NNCF int8, float parts in bf16 (AMX / AVX512-BF16)"),
    Candidate("openvino-bf16", "openvino-float", "openvino", "bf16", "bf16", needs=("openvino",), cpu="BF16",
              note="fp32 IR run in bf16 (AMX / AVX512-BF16)"),
    Candidate("openvino-fp16", "openvino-float", "openvino", "fp16", "f16", needs=("openvino",), cpu="FP16",
              note="fp32 IR run in fp16 (AVX512-FP16 / AMX-FP16)"),
    Candidate("tflite-int8", "tflite", "tflite", "int8", needs=("litert_torch",),
              note="litert-torch PT2E int8, XNNPACK"),
    Candidate("tensorrt-int8", "ort-static", "tensorrt", "int8", needs=("tensorrt",),
              note="symmetric QDQ for TensorRT explicit quantization"),
    Candidate("tensorrt-fp16", "fp16", "tensorrt", "fp16", needs=("tensorrt",), note="fp16 engine"),
)}
# candidates per kind of target (the backend of a --target profile; "cpu": this machine)
KIND_CANDIDATES = {
    "cpu": ("ort-static", "ort-dynamic", "nncf", "nncf+bf16", "openvino-bf16", "openvino-fp16"),
    "onnxruntime": ("ort-static", "ort-dynamic"),
    "openvino": ("nncf", "nncf+bf16", "openvino-bf16", "openvino-fp16"),
    "tflite": ("tflite-int8",),
    "tensorrt": ("tensorrt-int8", "tensorrt-fp16"),
}
# without a measurement on the device and without a profile preference
DEFAULT_PREFERENCE = {
    "onnxruntime": ("ort-static", "ort-dynamic"),
    "openvino": ("nncf", "nncf+bf16", "openvino-bf16"),
    "tflite": ("tflite-int8",),
    "tensorrt": ("tensorrt-int8", "tensorrt-fp16"),
}


# --------------------------------------------------------------------------- the hardware


def cpu_features() -> dict[str, Any]:
    """The CPU's model name and the features that decide the int8 route."""
    flags: set[str] = set()
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    import platform

    features = {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_fp16": "avx512_fp16" in flags,
        "amx": bool({"amx_int8", "amx_bf16", "amx_tile"} & flags),
    }
    out: dict[str, Any] = {"model": model, "machine": platform.machine(), "features": features,
                           "flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))}
    try:
        import openvino as ov

        out["openvino_capabilities"] = list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # openvino absent or no CPU plugin
        pass
    return out


def availability(candidate: Candidate, cpu: dict[str, Any]) -> str | None:
    """None when the candidate can be built and run here, else one line saying what is missing."""
    import importlib.util

    missing = [m for m in candidate.needs if importlib.util.find_spec(m) is None]
    if missing:
        return f"{candidate.name}: needs {', '.join(missing)} (not installed)"
    if candidate.cpu and candidate.cpu not in cpu.get("openvino_capabilities", []):
        label = {"BF16": "bf16 (AMX or AVX512-BF16)", "FP16": "fp16 (AVX512-FP16 or AMX-FP16)"}[candidate.cpu]
        return f"{candidate.name}: this CPU ({cpu['model']}) has no {label} support in OpenVINO"
    return None


# --------------------------------------------------------------------------- timing


def time_interleaved(runners: dict[str, Any], feeds: dict[str, dict], blocks: int = 5, runs: int = 5) -> dict[str, float]:
    """Median latency (ms) per runner: ``blocks`` rounds, each running every runner for a block
    of ``runs`` in a rotating order, so all see the same background load.  ONNX Runtime runners
    must have intra-op spinning off (the stage's runners do)."""
    names = list(runners)
    for name in names:  # warm-up
        for _ in range(2):
            runners[name].run(feeds[name])
    samples: dict[str, list[float]] = {n: [] for n in names}
    for b in range(blocks):
        order = names[b % len(names):] + names[: b % len(names)]
        for name in order:
            for _ in range(runs):
                t = time.perf_counter()
                runners[name].run(feeds[name])
                samples[name].append((time.perf_counter() - t) * 1000)
    return {n: float(np.median(s)) for n, s in samples.items()}


def measure_on_target(profile, builds: dict[str, dict[str, Path]], feeds) -> dict[str, float] | None:
    """Latency (ms) per candidate measured on the profile's device through its agent, or None
    when no agent is reachable.  The hook for the device agent (``mmdeploy.targets.agent``,
    ``measure(profile, artifacts, feeds) -> {name: ms}``) while it lands."""
    try:
        from mmdeploy.targets import agent  # type: ignore[attr-defined]
    except ImportError:
        return None
    measure = getattr(agent, "measure_candidates", None)
    if measure is None:
        return None
    try:
        return measure(profile, builds, feeds)
    except (OSError, ConnectionError, TimeoutError):
        return None


# --------------------------------------------------------------------------- selection


@dataclass
class Outcome:
    """One candidate's result: built state per component, accuracy, latency."""

    candidate: Candidate
    state: dict[str, dict] = field(default_factory=dict)  # component -> result, out_dir, excluded, passes, base_model
    steps: list = field(default_factory=list)
    float_blocks: list = field(default_factory=list)
    score: dict | None = None
    ok: bool = False
    latency_ms: float | None = None
    skipped: str | None = None
    error: str | None = None

    def record(self) -> dict[str, Any]:
        c = self.candidate
        row: dict[str, Any] = {"name": c.name, "runtime": c.runtime, "method": c.method, "precision": c.precision,
                               "note": c.note}
        if c.inference_precision:
            row["inference_precision"] = c.inference_precision
        if self.skipped:
            row["skipped"] = self.skipped
            return row
        if self.error:
            row["error"] = self.error
        if self.score is not None:
            row["accuracy"] = {k: v for k, v in self.score.items() if k in ("value", "drop", "ok", "cosine")}
        row["holds_budget"] = self.ok
        row["float_blocks"] = len(self.float_blocks)
        if self.latency_ms is not None:
            row["latency_ms"] = round(self.latency_ms, 3)
        return row


def target_kind(options) -> tuple[str, Any]:
    """("cpu", None) for this machine, else (the profile's backend, the profile)."""
    if not getattr(options, "target", None):
        return "cpu", None
    from mmdeploy.targets import get_target

    profile = get_target(options.target)
    return profile.backend, profile


def select(comps, evaluator, options, log, build: Callable, runner_for: Callable,
           timer: Callable | None = None) -> tuple[Outcome, dict[str, Any]]:
    """Build and score every candidate; return the chosen Outcome (its state restored into
    ``comps``) and the record for the manifest.

    ``build(candidate, log, aware) -> Outcome`` quantizes all components (fully; with ``aware``
    through the stage's accuracy loop, keeping sensitive blocks in float);
    ``runner_for(comp, state, candidate)`` gives a runner over a built component; ``timer``
    times runners side by side (injected in tests)."""
    kind, profile = target_kind(options)
    cpu = cpu_features()
    names = KIND_CANDIDATES[kind]
    measured_remote = None
    remote = profile is not None and profile.remote
    if remote:
        preference = list(getattr(profile, "quantize_preference", None) or DEFAULT_PREFERENCE[kind])
        names = tuple(n for n in preference if n in CANDIDATES)
    outcomes: list[Outcome] = []
    for name in names:
        cand = CANDIDATES[name]
        missing = availability(cand, cpu)
        if missing and cand.runtime == "tensorrt" and remote:
            missing = None  # the QDQ / fp16 ONNX is built here; the engine (and its timing) on the device
        if missing:
            log(f"auto: skip {missing}")
            outcomes.append(Outcome(cand, skipped=missing))
            continue
        log(f"auto: candidate {name} ({cand.note})")
        outcomes.append(build(cand, log, False))
    built = [o for o in outcomes if o.skipped is None and o.error is None and o.state]
    holding = [o for o in built if o.ok]
    if not holding and getattr(options, "accuracy_aware", True):
        # nobody holds the budget fully quantized: now keep sensitive blocks in float (costly:
        # one probe per block), int8 routes only
        for i, o in enumerate(outcomes):
            if o in built and o.candidate.precision == "int8":
                log(f"auto: {o.candidate.name} over budget: keeping sensitive blocks in float")
                outcomes[i] = build(o.candidate, log, True)
        built = [o for o in outcomes if o.skipped is None and o.error is None and o.state]
        holding = [o for o in built if o.ok]
    record: dict[str, Any] = {"target": options.target or "this machine", "cpu": cpu,
                              "budget": evaluator.describe()}
    if not holding:
        parts = [f"{o.candidate.name} {_reached(o, evaluator)}" for o in built]
        parts += [f"{o.candidate.name} failed ({o.error})" for o in outcomes if o.error]
        raise NoCandidateError(
            f"no candidate holds the accuracy budget {evaluator.describe()}; best reached: "
            + ("; ".join(parts) or "no candidate could be built here") + "; nothing written",
            "loosen --accuracy-budget, raise --max-float-blocks, or quantize with --fp16")

    if remote:
        builds = {o.candidate.name: {n: s["out_dir"] for n, s in o.state.items()} for o in holding}
        measured_remote = measure_on_target(profile, builds, {c.name: c.calib.feeds[0] for c in comps})
    if measured_remote:
        for o in holding:
            o.latency_ms = measured_remote.get(o.candidate.name)
        how = f"measured on {profile.name} through the device agent"
        timed = [o for o in holding if o.latency_ms is not None]
        chosen = min(timed, key=lambda o: o.latency_ms) if timed else holding[0]
    elif remote:
        how = (f"profile preference of {profile.name} ({', '.join(names)}): not measured, the device "
               "agent was not reachable")
        chosen = holding[0]
    else:
        # every built candidate is timed (those over budget too: the record shows what they cost)
        _time(built, comps, runner_for, timer or time_interleaved, getattr(options, "auto_blocks", 5))
        chosen = min(holding, key=lambda o: o.latency_ms)
        how = ("measured here: every candidate timed side by side in one process (interleaved blocks, "
               "batch of the calibration feeds, ONNX Runtime spinning off); sum over components")
    for comp in comps:
        for attr in ("result", "out_dir", "excluded", "passes", "base_model"):
            setattr(comp, attr, chosen.state[comp.name][attr])
    record.update(chosen=chosen.candidate.name, how=how,
                  candidates=[o.record() for o in outcomes],
                  reason=_reason(chosen, holding, cpu))
    log(f"auto: chose {chosen.candidate.name} ({how.split(':')[0]})")
    return chosen, record


def _time(built: list[Outcome], comps, runner_for, timer, blocks: int) -> None:
    total = {o.candidate.name: 0.0 for o in built}
    for comp in comps:
        runners = {o.candidate.name: runner_for(comp, o.state[comp.name], o.candidate) for o in built}
        feeds = {n: comp.calib.feeds[0] for n in runners}
        for name, ms in timer(runners, feeds, blocks).items():
            total[name] += ms
    for o in built:
        o.latency_ms = total[o.candidate.name]


def _reached(o: Outcome, evaluator) -> str:
    if o.score is None:
        return "not scored"
    if evaluator.metric == "task":
        return f"drop {o.score['drop']:.2f} pp"
    return f"cosine {o.score['value']:.5f}"


def _reason(chosen: Outcome, holding: list[Outcome], cpu: dict) -> str:
    f = cpu["features"]
    have = [k for k in ("avx2", "avx512", "vnni", "avx512_bf16", "amx") if f.get(k)]
    text = f"{chosen.candidate.name} ({chosen.candidate.note}) on {cpu['model']} [{', '.join(have) or 'no SIMD flags read'}]"
    others = sorted((o for o in holding if o is not chosen and o.latency_ms), key=lambda o: o.latency_ms)
    if chosen.latency_ms and others:
        text += "; " + ", ".join(f"{o.latency_ms / chosen.latency_ms:.2f}× faster than {o.candidate.name}"
                                 for o in others)
    return text
