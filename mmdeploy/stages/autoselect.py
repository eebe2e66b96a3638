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
(:mod:`mmdeploy.targets.agent`: the ``bench --target`` SSH path) when it is reachable, else the
profile's stated preference (``quantize_preference``), labelled so.

This module is kept apart from :mod:`mmdeploy.stages.quantize` (which owns calibration, the
accuracy guard and writing): it only decides.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmdeploy import cpu as _cpu
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
    settings: tuple[tuple[str, Any], ...] = ()  # QuantizeOptions this route sets (e.g. the NNCF preset)


CANDIDATES: dict[str, Candidate] = {c.name: c for c in (
    Candidate("ort-static", "ort-static", "onnxruntime", "int8", needs=("onnxruntime",),
              note="calibrated QDQ, u8 activations / s8 per-channel weights (VNNI's u8s8)"),
    Candidate("ort-dynamic", "ort-dynamic", "onnxruntime", "int8", needs=("onnxruntime",), optimize=True,
              note="ORT fusions (Attention, SkipLayerNorm) + dynamic int8 MatMuls"),
    Candidate("nncf", "nncf", "openvino", "int8", "f32", needs=("openvino", "nncf"),
              note="NNCF int8 (model_type=TRANSFORMER), float parts in f32"),
    Candidate("nncf+bf16", "nncf", "openvino", "int8", "bf16", needs=("openvino", "nncf"), cpu="BF16",
              note="NNCF int8, float parts in bf16 (AMX / AVX512-BF16)"),
    Candidate("nncf-fast", "nncf", "openvino", "int8", "f32", needs=("openvino", "nncf"),
              settings=(("nncf_preset", "performance"), ("smooth_quant", False)),
              note="NNCF int8, symmetric activations, no SmoothQuant (fewer ops; the guard judges the accuracy)"),
    Candidate("nncf-fast+bf16", "nncf", "openvino", "int8", "bf16", needs=("openvino", "nncf"), cpu="BF16",
              settings=(("nncf_preset", "performance"), ("smooth_quant", False)),
              note="NNCF int8 symmetric, no SmoothQuant, float parts in bf16"),
    Candidate("nncf-w8", "nncf-weights", "openvino", "int8", "f32", needs=("openvino", "nncf"),
              note="NNCF int8 weights (per-channel), activations quantized at run time by OpenVINO (no calibrated "
                   "ranges: activation outliers cost nothing)"),
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
# (``--int8`` keeps those of int8 weights; ``--precision auto`` all of them)
KIND_CANDIDATES = {
    "cpu": ("ort-static", "ort-dynamic", "nncf", "nncf+bf16", "nncf-fast", "nncf-fast+bf16", "nncf-w8",
            "openvino-bf16", "openvino-fp16"),
    "onnxruntime": ("ort-static", "ort-dynamic"),
    "openvino": ("nncf", "nncf+bf16", "nncf-fast", "nncf-fast+bf16", "nncf-w8", "openvino-bf16", "openvino-fp16"),
    "tflite": ("tflite-int8",),
    "tensorrt": ("tensorrt-int8", "tensorrt-fp16"),
}
# past ONNX's 2 GB (ViT-H, ViT-bigG towers) every candidate costs minutes and a copy of the model
# in memory: on this machine only OpenVINO int8 is built (NNCF's int8 weights, which need no
# calibration, and one NNCF PTQ build run at f32 and at bf16)
LARGE_CANDIDATES = ("nncf-w8", "nncf", "nncf+bf16")
LARGE_BYTES = 2**31
# without a measurement on the device and without a profile preference
DEFAULT_PREFERENCE = {
    "onnxruntime": ("ort-static", "ort-dynamic"),
    "openvino": ("nncf", "nncf+bf16", "openvino-bf16"),
    "tflite": ("tflite-int8",),
    "tensorrt": ("tensorrt-int8", "tensorrt-fp16"),
}


# --------------------------------------------------------------------------- the hardware


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


RACE_BLOCKS = 3  # blocks every runner gets before one can be dropped from the race
RACE_RATIO = 3.0  # dropped when even its fastest run is this many times the leader's median
# candidates within 5 % of the fastest are equally fast (timing noise on a shared 2-core machine is
# that large): among them, the fewest blocks kept in float, then the smallest artifact wins
TIE_RATIO = 1.05
# with a route that holds, an over-budget route is searched only if its error (1 - cosine, mean or
# worst sample) is within this many times the budget's allowance (all-mpnet-base-v2's NNCF int8:
# 4.8x on the mean, 10x on the worst sample -- it would need most blocks in float)
FAR = 3.0


def time_interleaved(runners: dict[str, Any], feeds: dict[str, dict], blocks: int = 5, runs: int = 5) -> dict[str, float]:
    """Median latency (ms) per runner: ``blocks`` rounds, each running every runner for a block
    of ``runs`` in a rotating order, so all see the same background load.  ONNX Runtime runners
    must have intra-op spinning off (the stage's runners do).

    A race: after :data:`RACE_BLOCKS` blocks, a runner whose *fastest* run is over
    :data:`RACE_RATIO` × the leader's median cannot win and stops (its median so far is kept).
    The slow routes are where the timing time goes (OpenVINO on a tiny, dispatch-bound model), so
    this makes ``auto`` cheaper without changing which one is fastest."""
    names = list(runners)
    for name in names:  # warm-up
        for _ in range(2):
            runners[name].run(feeds[name])
    samples: dict[str, list[float]] = {n: [] for n in names}
    racing = list(names)
    for b in range(blocks):
        order = racing[b % len(racing):] + racing[: b % len(racing)]
        for name in order:
            for _ in range(runs):
                t = time.perf_counter()
                runners[name].run(feeds[name])
                samples[name].append((time.perf_counter() - t) * 1000)
        if b + 1 >= RACE_BLOCKS and len(racing) > 1:
            healthy = [n for n in racing if getattr(runners[n], "error", None) is None] or racing
            leader = min(float(np.median(samples[n])) for n in healthy)
            racing = [n for n in racing if min(samples[n]) <= RACE_RATIO * leader]
    return {n: float(np.median(s)) for n, s in samples.items()}


def measure_on_target(profile, built: list["Outcome"], comps, log) -> tuple[Any, str | None]:
    """(the device agent's :class:`~mmdeploy.targets.agent.Measurement`, None), or (None, one
    line saying why not) when the device cannot be reached or the run failed there: ``auto``
    then falls back to the profile's preference, labelled so (never a traceback)."""
    import subprocess

    from mmdeploy.errors import MMDeployError
    from mmdeploy.targets import agent

    builds = {}
    for o in built:
        c = o.candidate
        builds[c.name] = {}
        for comp, s in o.state.items():
            r = s["result"]
            builds[c.name][comp] = agent.Build(
                Path(s["out_dir"]), r.model_file, r.format, r.precision, c.runtime,
                inference_precision=c.inference_precision or r.report.get("inference_precision"),
                pad=r.report.get("pad"))
    try:
        return agent.measure_candidates(profile, builds, {c.name: c.manifest for c in comps},
                                        {c.name: c.calib.feeds[0] for c in comps}, log=log), None
    except agent.Unreachable as exc:
        return None, f"the device agent was not reachable: {exc.one_line()}"
    except MMDeployError as exc:
        return None, f"the device agent failed on {profile.name}: {exc.one_line()}"
    except (OSError, subprocess.SubprocessError) as exc:
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return None, f"the device agent failed on {profile.name}: {type(exc).__name__}: {line}"


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
    latency_ms: float | None = None  # summed over the components
    latency_by_component: dict[str, float] = field(default_factory=dict)
    skipped: str | None = None
    error: str | None = None
    not_on_device: str | None = None  # --target: the device agent could not run it there (why)

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
            row["accuracy"] = {k: v for k, v in self.score.items()
                               if k in ("value", "drop", "ok", "cosine", "min_cosine")}
        row["holds_budget"] = self.ok
        row["float_blocks"] = len(self.float_blocks)
        if self.not_on_device:
            row["skipped_on_device"] = self.not_on_device
        if self.latency_ms is not None:
            row["latency_ms"] = round(self.latency_ms, 3)
        if len(self.latency_by_component) > 1:
            row["latency_ms_by_component"] = {k: round(v, 3) for k, v in self.latency_by_component.items()}
        return row

    def cosines(self, component: str) -> tuple[float, float] | None:
        """(mean, worst sample) embedding cosine of one component, where the cosine guard scored
        each component alone; else None."""
        cosines = (self.score or {}).get("cosine")
        if not isinstance(cosines, dict) or component not in cosines:
            return None
        return cosines[component], (self.score.get("min_cosine") or {}).get(component, cosines[component])

    def holds_for(self, component: str, budget: float | None) -> bool:
        """This candidate's own accuracy on one component against the cosine budget, else the
        whole candidate's verdict."""
        from mmdeploy.passes.accuracy import tail_floor

        both = self.cosines(component)
        if budget is None or both is None:
            return self.ok
        return both[0] >= budget and both[1] >= tail_floor(budget)

    def far_from(self, component: str, budget: float | None) -> bool:
        """Fully quantized, more than :data:`FAR` times the budget's allowance away on one
        component (mean or worst sample): blocks in float would have to be many."""
        from mmdeploy.passes.accuracy import tail_floor

        both = self.cosines(component)
        if budget is None or both is None:
            return False
        return 1 - both[0] > FAR * (1 - budget) or 1 - both[1] > FAR * (1 - tail_floor(budget))


@dataclass
class Choice:
    """What ``auto`` chose: one candidate per component (the same one, or the fastest that holds
    the budget for each component: e.g. NNCF int8 for an image tower, ORT QDQ for a text tower
    whose NNCF graph loses too much)."""

    by_component: dict[str, Outcome]
    score: dict

    @property
    def single(self) -> Outcome | None:
        outcomes = {id(o): o for o in self.by_component.values()}
        return next(iter(outcomes.values())) if len(outcomes) == 1 else None

    @property
    def name(self) -> str:
        if self.single:
            return self.single.candidate.name
        return " + ".join(f"{o.candidate.name} ({comp})" for comp, o in self.by_component.items())

    @property
    def precision(self) -> str:
        labels = sorted({o.candidate.precision for o in self.by_component.values()})
        return "+".join(labels)

    @property
    def latency_ms(self) -> float | None:
        parts = [o.latency_by_component.get(c) for c, o in self.by_component.items()]
        if any(v is None for v in parts):
            return self.single.latency_ms if self.single else None
        return float(sum(parts))

    @property
    def float_blocks(self) -> list:
        if self.single:
            return list(self.single.float_blocks)
        return [b for comp, o in self.by_component.items() for b in o.float_blocks if b.get("component") == comp]

    @property
    def steps(self) -> list:
        if self.single:
            return list(self.single.steps)
        from mmdeploy.passes.accuracy import brief

        return [{"float_block": None, "component": None, "candidate": self.name, **brief(self.score)}]


def _fp32_bytes(comp) -> int:
    """Bytes of a component's fp32 ONNX (graph + external data)."""
    from mmdeploy.onnx_files import model_bytes

    if getattr(comp, "src", None) is None or getattr(comp, "manifest", None) is None:
        return 0
    model = Path(comp.src) / comp.manifest.metadata.get("model_file", "model.onnx")
    return model_bytes(model) if model.is_file() else 0


def target_kind(options) -> tuple[str, Any]:
    """("cpu", None) for this machine, else (the profile's backend, the profile)."""
    if not getattr(options, "target", None):
        return "cpu", None
    from mmdeploy.targets import get_target

    profile = get_target(options.target)
    return profile.backend, profile


def select(comps, evaluator, options, log, build: Callable, runner_for: Callable,
           timer: Callable | None = None) -> tuple[Choice, dict[str, Any]]:
    """Build and score every candidate; return the Choice (its state restored into ``comps``)
    and the record for the manifest.

    ``build(candidate, log, aware) -> Outcome`` quantizes all components (fully; with ``aware``
    through the stage's accuracy loop, keeping sensitive blocks in float);
    ``runner_for(comp, state, candidate)`` gives a runner over a built component; ``timer``
    times runners side by side (injected in tests)."""
    kind, profile = target_kind(options)
    cpu = _cpu.cpu_features()
    names = KIND_CANDIDATES[kind]
    remote = profile is not None and profile.remote
    if remote:
        preference = list(getattr(profile, "quantize_preference", None) or DEFAULT_PREFERENCE[kind])
        names = tuple(n for n in preference if n in CANDIDATES)
    if getattr(options, "precision", "int8") == "int8":  # --int8 means int8 weights: no float route
        names = tuple(n for n in names if CANDIDATES[n].precision == "int8")
    large = [c for c in comps if _fp32_bytes(c) > LARGE_BYTES]
    if large and kind == "cpu":
        names = tuple(n for n in names if n in LARGE_CANDIDATES)
        log(f"auto: {', '.join(c.name for c in large)} past 2 GB ({_fp32_bytes(large[0]) / 1e9:.1f} GB): "
            f"building {', '.join(names)} only (each route takes minutes and a copy of the model in memory; "
            "pass --method ort-static or ort-dynamic to build those)")
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
    built = _built(outcomes)
    aware = getattr(options, "accuracy_aware", True)
    if remote and not _coverable(built, comps, evaluator) and aware:
        # nobody holds the budget fully quantized: now keep sensitive blocks in float (costly:
        # one probe per block), int8 routes only
        for i, o in enumerate(outcomes):
            if o in built and o.candidate.precision == "int8":
                log(f"auto: {o.candidate.name} over budget: keeping sensitive blocks in float")
                outcomes[i] = build(o.candidate, log, True)
        built = _built(outcomes)
    if not remote and built:
        # every candidate competes on its best variant that holds: time them all, then search
        # blocks to keep in float for each int8 route over budget that could still win (nobody
        # holds, or it is faster than every route that holds for some component), and time again
        built = _time(built, comps, runner_for, timer or time_interleaved, getattr(options, "auto_blocks", 5), log)
        retry = [o for o in built if aware and not o.ok and o.candidate.precision == "int8"
                 and _could_win(o, built, comps, evaluator)]
        if retry and getattr(options, "precision", "int8") == "int8" and _coverable(built, comps, evaluator):
            # --int8 means int8 weights: a route that holds with every block int8 beats any that
            # would keep blocks in float (larger, and the search costs minutes)
            log(f"auto: {', '.join(o.candidate.name for o in built if o.ok)} hold(s) with every block int8: no "
                f"block search for {', '.join(o.candidate.name for o in retry)} (--precision auto searches them)")
            retry = []
        started, allowed = time.perf_counter(), getattr(options, "search_seconds", 120.0)
        for o in retry:
            if time.perf_counter() - started > allowed and _coverable(_built(outcomes), comps, evaluator):
                log(f"auto: {o.candidate.name}: no block search (the {allowed:g} s for searches are spent and "
                    "another route holds; --search-seconds gives more)")
                continue
            log(f"auto: {o.candidate.name} over budget but could be fastest: keeping sensitive blocks in float")
            outcomes[outcomes.index(o)] = build(o.candidate, log, True)
        built = _built(outcomes)
        if retry:
            built = _time(built, comps, runner_for, timer or time_interleaved,
                          getattr(options, "auto_blocks", 5), log)
    record: dict[str, Any] = {"target": options.target or "this machine", "cpu": cpu,
                              "budget": evaluator.describe()}
    if not _coverable(built, comps, evaluator):
        parts = [f"{o.candidate.name} {_reached(o, evaluator)}" for o in built]
        parts += [f"{o.candidate.name} {o.error}" for o in outcomes if o.error]
        raise NoCandidateError(
            f"no candidate holds the accuracy budget {evaluator.describe()}; best reached: "
            + ("; ".join(parts) or "no candidate could be built here") + "; nothing written",
            _remedy(built, evaluator))

    where = None
    if remote:
        measured, why = measure_on_target(profile, built, comps, log)
        if measured is not None:
            for o in built:
                o.latency_by_component = dict(measured.latency_ms.get(o.candidate.name, {}))
                o.latency_ms = sum(o.latency_by_component.values()) if o.latency_by_component else None
                o.not_on_device = measured.skipped.get(o.candidate.name)
                if o.not_on_device:
                    log(f"auto: {o.candidate.name} not timed on {profile.name}: {o.not_on_device}")
            record["device"] = measured.record()
            if not measured.latency_ms:
                why = "no candidate runs on the device: " + "; ".join(
                    f"{n}: {r}" for n, r in measured.skipped.items())
                measured = None
        if measured is not None:
            how = (f"measured on {profile.name} ({measured.host}) through the device agent: {measured.identity}; "
                   f"each candidate timed there ({measured.record()['timing']}); per component, the fastest "
                   "candidate that holds the budget")
            where = f" on {profile.name}: {measured.identity}"
            by_comp = {}
            for c in comps:
                timed = [o for o in _eligible(built, c.name, evaluator) if c.name in o.latency_by_component]
                if not timed:
                    raise NoCandidateError(
                        f"no candidate that runs on {profile.name} holds the accuracy budget {evaluator.describe()} "
                        f"for {c.name}; " + "; ".join(
                            f"{o.candidate.name}: {o.not_on_device or _reached(o, evaluator)}" for o in built)
                        + "; nothing written",
                        f"install the missing runtime on the device, or {_remedy(built, evaluator)}")
                by_comp[c.name] = min(timed, key=lambda o: _comp_latency(o, c.name))
            if evaluator.metric == "task":  # a mix would need its own score: the fastest whole candidate
                best = min(timed, key=lambda o: o.latency_ms)  # the same candidates for every component
                by_comp = {c.name: best for c in comps}
            choice = Choice(by_comp, {})
        else:
            how = (f"profile preference of {profile.name} ({', '.join(names)}): not measured, {why}")
            # per component: the first in the profile's order that holds
            choice = Choice({c.name: _eligible(built, c.name, evaluator)[0] for c in comps}, {})
        choice.score = choice.single.score if choice.single else _mix_cosine(choice)
    else:
        # every built candidate was timed (those over budget too: the record shows what they cost)
        choice = _fastest(built, comps, evaluator, runner_for, log)
        how = ("measured here: every candidate timed side by side in one process (interleaved blocks, "
               "batch of the calibration feeds, ONNX Runtime spinning off; a candidate whose fastest run is "
               f"over {RACE_RATIO:g}x the leader's median stops after {RACE_BLOCKS} blocks); per component, "
               f"the fastest candidate that holds the budget (within {TIE_RATIO - 1:.0%}: the one with fewest "
               "blocks in float, then the smallest)")
    for comp in comps:
        state = choice.by_component[comp.name].state[comp.name]
        for attr in ("result", "out_dir", "excluded", "passes", "base_model"):
            setattr(comp, attr, state[attr])
    record.update(chosen=choice.name, how=how,
                  chosen_by_component={c: o.candidate.name for c, o in choice.by_component.items()},
                  candidates=[o.record() for o in outcomes],
                  reason=_reason(choice, built, cpu, comps, evaluator, where))
    if choice.latency_ms is not None:
        record["latency_ms"] = round(choice.latency_ms, 3)
    log(f"auto: chose {choice.name} ({how.split(':')[0]})")
    return choice, record


def _could_win(o: Outcome, built: list[Outcome], comps, evaluator) -> bool:
    """An over-budget candidate worth a block search: no candidate holds for some component, or
    it is faster there than every candidate that holds by more than a tie (:data:`TIE_RATIO`;
    blocks kept in float only make it slower) and not far from the budget (:data:`FAR`)."""
    budget = evaluator.budget if evaluator.metric != "task" else None
    for c in comps:
        holding = [x for x in _eligible(built, c.name, evaluator) if x is not o]
        if not holding:
            return True
        if o.far_from(c.name, budget):  # another route holds: a search that keeps many blocks in float loses
            continue
        if _comp_latency(o, c.name) * TIE_RATIO < min(_comp_latency(x, c.name) for x in holding):
            return True
    return False


def _built(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if o.skipped is None and o.error is None and o.state]


def _eligible(built: list[Outcome], component: str, evaluator) -> list[Outcome]:
    """Candidates that hold the budget for one component: by its own cosine under the cosine
    guard; under a task metric (which scores the components together) whole candidates only."""
    budget = evaluator.budget if evaluator.metric != "task" else None
    return [o for o in built if o.holds_for(component, budget)]


def _coverable(built: list[Outcome], comps, evaluator) -> bool:
    return all(_eligible(built, c.name, evaluator) for c in comps)


def _mix_cosine(choice: Choice) -> dict:
    both = {c: o.cosines(c) for c, o in choice.by_component.items()}
    cosines = {c: mean for c, (mean, _) in both.items()}
    return {"cosine": cosines, "min_cosine": {c: worst for c, (_, worst) in both.items()},
            "value": min(cosines.values()), "ok": True}


def _fastest(built: list[Outcome], comps, evaluator, runner_for, log) -> Choice:
    """Per component, the fastest candidate that holds the budget for it (ties: :data:`TIE_RATIO`).
    Under the cosine guard the mix's score is exact (each component is scored alone); under a
    task metric the mix is scored as a whole and kept only if it holds, else the fastest whole
    candidate."""
    by_comp = {}
    for comp in comps:
        eligible = _eligible(built, comp.name, evaluator)
        fastest = min(_comp_latency(o, comp.name) for o in eligible)
        tied = [o for o in eligible if _comp_latency(o, comp.name) <= fastest * TIE_RATIO]
        by_comp[comp.name] = min(tied, key=lambda o: (_float_blocks(o, comp.name), _comp_bytes(o, comp.name),
                                                      _comp_latency(o, comp.name)))
    mix = Choice(by_comp, {})
    if mix.single:
        mix.score = mix.single.score or {}
        return mix
    if evaluator.metric != "task":
        mix.score = _mix_cosine(mix)
        return mix
    runners = {c.name: runner_for(c, by_comp[c.name].state[c.name], by_comp[c.name].candidate) for c in comps}
    score = evaluator.score(runners)
    if score.get("ok"):
        mix.score = score
        return mix
    best = min((o for o in built if o.ok), key=lambda o: o.latency_ms if o.latency_ms is not None else float("inf"))
    log(f"auto: the per-component mix {mix.name} is over budget as a whole; keeping {best.candidate.name}")
    return Choice({c.name: best for c in comps}, best.score or {})


def _float_blocks(o: Outcome, component: str) -> int:
    return sum(1 for b in o.float_blocks if b.get("component") == component)


def _comp_bytes(o: Outcome, component: str) -> int:
    from mmdeploy.onnx_files import folder_bytes

    out_dir = o.state.get(component, {}).get("out_dir")
    return folder_bytes(out_dir) if out_dir else 0


def _comp_latency(o: Outcome, component: str) -> float:
    value = o.latency_by_component.get(component, o.latency_ms)
    return float("inf") if value is None else value


class _Guarded:
    """A runner that records its first failure instead of raising, so that one candidate failing
    while timed leaves the others' timing intact."""

    def __init__(self, runner):
        self.runner, self.error = runner, None

    def run(self, feeds):
        if self.error is None:
            try:
                return self.runner.run(feeds)
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001 - recorded as the candidate's outcome
                self.error = exc
        return {}


def _time(built: list[Outcome], comps, runner_for, timer, blocks: int, log=print) -> list[Outcome]:
    """Time every built candidate per component; a candidate that fails to load or run here is
    recorded as failed during timing (one line) and dropped.  Returns the candidates timed."""
    from mmdeploy.logs import log_failure

    by_name = {o.candidate.name: o for o in built}
    alive = list(built)
    for comp in comps:
        runners = {}
        for o in alive:
            try:
                runners[o.candidate.name] = _Guarded(runner_for(comp, o.state[comp.name], o.candidate))
            except KeyboardInterrupt:
                raise
            except Exception as exc:  # noqa: BLE001
                o.error = f"failed during timing: {log_failure(exc, f'auto candidate {o.candidate.name}')}"
        runners = {n: r for n, r in runners.items() if by_name[n].error is None}
        if runners:
            feeds = {n: comp.calib.feeds[0] for n in runners}
            for name, ms in timer(runners, feeds, blocks).items():
                by_name[name].latency_by_component[comp.name] = ms
        for name, r in runners.items():
            if r.error is not None:
                by_name[name].error = f"failed during timing: {log_failure(r.error, f'auto candidate {name}')}"
        for o in alive:
            if o.error:
                log(f"auto: {o.candidate.name}: {o.error}")
        alive = [o for o in alive if o.error is None]
    for o in alive:
        o.latency_ms = sum(o.latency_by_component.values())
    return alive


def _remedy(built: list[Outcome], evaluator) -> str:
    """The accuracy guard's remedy (:func:`mmdeploy.passes.accuracy.remedy`) for the candidate
    that came closest: rerunning with what it suggests lets that candidate through."""
    from mmdeploy.passes.accuracy import remedy

    scored = [o for o in built if o.score is not None]
    if not scored:
        return "quantize with another --method, or use --fp16"
    task = evaluator.metric == "task"
    best = min(scored, key=lambda o: o.score["drop"]) if task else max(scored, key=lambda o: o.score["value"])
    return remedy(evaluator, best.score, best.float_blocks, who=best.candidate.name)


def _reached(o: Outcome, evaluator) -> str:
    if o.score is None:
        return "not scored"
    if evaluator.metric == "task":
        return f"drop {o.score['drop']:.2f} pp"
    return f"cosine {o.score['value']:.5f}"


def _reason(choice: Choice, built: list[Outcome], cpu: dict, comps, evaluator, where: str | None = None) -> str:
    if where is None:
        f = cpu["features"]
        have = [k for k in ("avx2", "avx512", "vnni", "avx512_bf16", "amx") if f.get(k)]
        where = f" on {cpu['model']} [{', '.join(have) or 'no SIMD flags read'}]"
    parts = []
    for comp in comps:
        o = choice.by_component[comp.name]
        mine = _comp_latency(o, comp.name)
        text = f"{comp.name}: {o.candidate.name} ({o.candidate.note})"
        if any(_comp_latency(x, comp.name) < mine for x in _eligible(built, comp.name, evaluator)):
            text += f" (within {TIE_RATIO - 1:.0%} of the fastest: fewer blocks in float / smaller wins a tie)"
        others = sorted((x for x in _eligible(built, comp.name, evaluator) if x is not o
                         and _comp_latency(x, comp.name) < float("inf")), key=lambda x: _comp_latency(x, comp.name))
        if mine < float("inf") and others:
            text += "; " + ", ".join(f"{_comp_latency(x, comp.name) / mine:.2f}× faster than {x.candidate.name}"
                                     for x in others)
        parts.append(text)
    return " | ".join(parts) + where
