"""Quantize a converted bundle (or one component): int8 that keeps accuracy, or fp16.

The flow, per component: calibration feeds (``--calib`` through the family's adapter, else the
adapter's bundled set, else the stored reference inputs) → optional ``optimize`` pass (ORT
fusions) → ``quantize`` pass → accuracy check against the fp32 model.  Accuracy-aware by
default: when the budget does not hold, each block's sensitivity is measured (leave-one-out:
the gain from keeping only that block in float) and the most sensitive blocks are kept in float
one at a time until it holds.  The budget is the family task (``--accuracy-budget`` in points of
zero-shot top-1 drop, default 0.5) when the adapter has one, else embedding cosine to the fp32
model on the calibration data (default 0.99).  If no choice meets it: an error naming the best
reached, and nothing is written.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from mmdeploy.artifact import (
    LOG_DIR, MANIFEST_NAME, REFERENCE_NAME, ArtifactRef, Manifest, PassRecord, atomic_output, bundle_dir,
    load_reference, read_manifest, scratch_dir, sha256_file, sha256_path, tool_versions, write_manifest,
)
from mmdeploy import cpu as cpu_module
from mmdeploy.errors import CalibrationError, InputError, UnsupportedError
from mmdeploy.passes.accuracy import (  # noqa: F401  (AccuracyBudgetError: part of this stage's API)
    AccuracyBudgetError, brief, budget_error, describe, embedding_cosines, tail_floor,
)
from mmdeploy.onnx_files import folder_bytes, model_bytes
from mmdeploy.passes.base import PassContext
from mmdeploy.passes.calibration import (
    CalibrationSet, check_modality, component_modality, data_kinds, feeds_sha256, preprocess_images,
    read_captions, split_batch, tokenize,
)

DEFAULT_TASK_BUDGET = 0.5  # points of task metric (zero-shot top-1) drop
DEFAULT_COSINE_BUDGET = 0.99  # minimum mean embedding cosine to fp32


class QuantizeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # int8: int8 weights (the guard may keep blocks in float, listed); auto: the fastest artifact of
    # any precision that holds the budget (float routes such as OpenVINO bf16 compete too)
    precision: Literal["int8", "fp16", "auto"] = "int8"
    method: Literal["auto", "ort-static", "ort-dynamic", "nncf", "nncf-weights", "inc", "tflite"] = "auto"
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"
    optimize: bool | None = None  # ORT fusions; None: on for ort-dynamic (ORT-only graph)
    fuse_attention: bool = True  # with optimize: fuse Attention too (int8 QAttention)
    calib: Path | list[Path] | None = None  # several: one per modality (images for vision, captions for text)
    calib_limit: int = 32
    processor: Path | None = None  # tokenizer / processor files the bundle was converted without
    components: list[str] | None = None
    metric: Literal["auto", "task", "cosine"] = "auto"
    accuracy_budget: float | None = None  # pp drop (task) or min cosine; None: the default
    accuracy_aware: bool = True
    max_float_blocks: int = 8
    nodes_to_exclude: list[str] = []
    target: str | None = None  # auto: choose for this target profile (None: this machine)
    auto_blocks: int = 5  # auto: interleaved timing blocks per candidate
    eval_limit: int | None = None  # task samples (None: the adapter's default)
    eval_data: str | None = None  # --eval: the user's set (ImageFolder, pairs, builtin:NAME) for the guard
    eval_task: str = "auto"
    templates: Path | None = None
    latency_runs: int = 10  # 0: skip the latency columns
    nncf_preset: Literal["auto", "mixed", "performance"] = "auto"  # nncf: auto = mixed (u8 activations)
    smooth_quant: bool = True  # nncf: SmoothQuant before the MatMuls
    smooth_quant_alpha: float | None = None  # nncf: None = NNCF's default, then tried against 0.5 by the guard
    reduce_range: bool | None = None  # ORT: 7-bit weights; None = decided by measuring (see _variants)
    overflow_fix: Literal["auto", "first_layer", "enable", "disable"] = "auto"  # nncf; auto = by measuring
    search_seconds: float = 120.0  # block search: each route's sensitivity probes; auto: searches once a route holds

    def resolved_method(self) -> str:
        """``auto`` is decided by measuring (:mod:`mmdeploy.stages.autoselect`)."""
        return self.method


@dataclass
class _Component:
    name: str
    src: Path  # input component dir
    manifest: Manifest
    ref_path: str | None  # path in the bundle
    calib: CalibrationSet | None = None
    base_model: Path | None = None  # model the quantizer reads (after optimize)
    passes: list[PassRecord] = field(default_factory=list)
    work: Path | None = None
    excluded: list[str] = field(default_factory=list)
    groups: dict[str, list[str]] = field(default_factory=dict)
    probes: int = 0  # block-search probes made (each in work/probe-N)
    result: Any = None  # PassResult of the current quantization
    out_dir: Path | None = None
    torch_module: Any = None  # for --method tflite

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.manifest.inputs]


# --------------------------------------------------------------------------- runners


def model_runner(model_file: Path, fmt: str, name: str = "", input_names=None, output_names=None, pad=None,
                 inference_precision: str | None = None, signature: Manifest | None = None):
    """A Runner over a model file (before it becomes an artifact).  ``signature``: the component
    manifest whose inputs/outputs the model keeps; a static one (``convert --batch N --sequence
    L``) gets feeds of any batch and length through :class:`~mmdeploy.backends.base.StaticShapeRunner`."""
    runner = _model_runner(model_file, fmt, name, input_names, output_names, pad, inference_precision)
    if signature is None or fmt == "tflite":  # the TFLite runner pads and slices itself
        return runner
    from mmdeploy.backends.base import static_runner

    return static_runner(runner, signature.inputs, signature.outputs)


def _model_runner(model_file: Path, fmt: str, name: str, input_names, output_names, pad, inference_precision):
    if fmt == "onnx":
        from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner

        return OnnxRuntimeRunner(model_file, name=name or "onnxruntime")
    if fmt == "openvino":
        from mmdeploy.backends.openvino import OpenVINORunner

        return OpenVINORunner(model_file, input_names=input_names, output_names=output_names,
                              inference_precision=inference_precision or "f32")
    if fmt == "tflite":
        from mmdeploy.backends.tflite import TFLiteRunner

        return TFLiteRunner(model_file, input_names or [], output_names or [], name="tflite-int8", pad=pad)
    raise UnsupportedError(f"no runner for format {fmt!r} in quantize")


def _model_file(comp_dir: Path, manifest: Manifest) -> Path:
    return Path(comp_dir) / manifest.metadata.get("model_file", "model.onnx")


# --------------------------------------------------------------------------- calibration


def _adapter(bundle: Path | None, processor: Path | None = None):
    if bundle is None:
        return None
    from mmdeploy.models import adapter_for_bundle

    try:
        return adapter_for_bundle(bundle, {"processor": str(processor) if processor else None})
    except (UnsupportedError, ImportError, NotImplementedError):
        return None


def calibration_paths(calib) -> dict[str, Path]:
    """{modality: path} of the --calib paths (at most one per modality)."""
    paths = [] if calib is None else [calib] if isinstance(calib, (str, Path)) else list(calib)
    by_kind: dict[str, Path] = {}
    for path in paths:
        for kind in data_kinds(Path(path)):  # a pairs file feeds both towers
            if kind in by_kind:
                raise CalibrationError(f"--calib {by_kind[kind]} and {path} both hold {kind} data",
                                       "pass one --calib per modality (e.g. images and a captions file)")
            by_kind[kind] = Path(path)
    return by_kind


def calibration_set(comp: _Component, adapter, bundle: Path | None, path: Path | None,
                    kind: str | None, limit: int) -> CalibrationSet:
    """Feeds for one component, of one shape (see :func:`pad_to_common_shape`)."""
    from mmdeploy.backends.base import fit_static_batches
    from mmdeploy.passes.calibration import JUDGE_BATCH, JUDGE_SAMPLES, pad_to_common_shape, stack_feeds

    calib = _calibration_set(comp, adapter, bundle, path, kind, limit + JUDGE_SAMPLES)
    if len(calib.feeds) > limit:  # the guard judges on samples the calibration never saw
        calib.feeds, calib.heldout = calib.feeds[:limit], calib.feeds[limit:]
        if calib.source == "adapter-default":
            calib.sha256 = feeds_sha256(calib.feeds)
    calib.feeds, padded = pad_to_common_shape(calib.feeds)
    if calib.heldout:
        calib.heldout, _ = pad_to_common_shape(calib.heldout)
    if padded:
        calib.extra["padded_to"] = padded
    static = fit_static_batches(calib.feeds, comp.manifest.inputs)  # convert --batch N / --sequence L
    if static is not calib.feeds:
        calib.feeds = static
        calib.heldout = fit_static_batches(calib.heldout, comp.manifest.inputs) if calib.heldout else []
        calib.extra["static_shape"] = {t.name: list(t.shape) for t in comp.manifest.inputs}
    elif calib.heldout and all(t.shape and isinstance(t.shape[0], str) for t in comp.manifest.inputs):
        calib.heldout = stack_feeds(calib.heldout, JUDGE_BATCH)  # the guard runs them a batch at a time
    return calib


def _calibration_set(comp: _Component, adapter, bundle: Path | None, path: Path | None,
                     kind: str | None, limit: int) -> CalibrationSet:
    """Feeds for one component: --calib via the adapter (or preprocess/), else the bundled set,
    else the stored reference inputs."""
    inputs = [t.name for t in comp.manifest.inputs]
    shapes = {t.name: t.shape for t in comp.manifest.inputs}
    batched = [t.name for t in comp.manifest.inputs if t.shape and isinstance(t.shape[0], str)] or None
    modality = component_modality(inputs)
    feeds = None
    images = None  # a folder of images is decoded once, through mmdeploy.data (unreadable files skipped)
    if path is not None and kind == "image":
        from mmdeploy.data.calib import calibration_images

        images = calibration_images(path, limit)
    if adapter is not None:
        try:
            feeds = adapter.calibration_feeds(comp.name, images if images is not None else path, limit)
        except (NotImplementedError, AttributeError):
            feeds = None
    if path is not None:
        if feeds is None:
            preprocess = bundle / "preprocess" if bundle else None
            if kind == "image":
                feeds = preprocess_images(images.images, preprocess, shapes.get("pixel_values", []))
            elif kind == "text":
                feeds = tokenize(read_captions(path, limit), preprocess, inputs, shapes.get(inputs[0], []))
            else:
                raise UnsupportedError(f"{kind} calibration data needs the model family's adapter",
                                       "quantize the bundle written by `mmdeploy convert`")
        feeds = split_batch(feeds, batched)[:limit]
        if not feeds:
            raise CalibrationError(f"--calib {path} gave no calibration samples", "add data to it")
        extra = {"skipped": len(images.skipped), "note": images.note} if images is not None and images.skipped else {}
        return CalibrationSet(feeds, str(path), sha256_path(path), kind or modality, extra)
    if feeds:
        feeds = split_batch(feeds, batched)[:limit]
        return CalibrationSet(feeds, "adapter-default", feeds_sha256(feeds), modality)
    cases = load_reference(comp.src)
    feeds = split_batch([f for f, _ in cases], batched)[:limit]
    if not feeds:
        raise CalibrationError(f"component {comp.name!r} has no calibration data (no --calib, no bundled set, "
                               "no reference.npz)", "pass --calib PATH")
    return CalibrationSet(feeds, REFERENCE_NAME, feeds_sha256(feeds), modality,
                          {"note": "reference inputs: pass --calib for representative data"})


# --------------------------------------------------------------------------- accuracy


class _Evaluator:
    """Scores a set of quantized components: task points (higher is better) or worst cosine."""

    def __init__(self, comps: list[_Component], adapter, bundle: Path | None, options: QuantizeOptions):
        self.comps = {c.name: c for c in comps}
        self.adapter = adapter
        self.options = options
        self.notes: list[str] = []
        self._refs: dict[str, list] = {}  # fp32 outputs on each component's judge samples
        self.fp32 = {c.name: model_runner(_model_file(c.src, c.manifest), "onnx", "onnxruntime-fp32",
                                       signature=c.manifest) for c in comps}
        self.metric = "cosine"
        self.baseline: float | None = None
        self.task_name = None
        self.user_set = None  # mmdeploy.stages.eval.TaskEvaluator over --eval
        if options.eval_data is not None:
            self._user_task(bundle)
        elif options.metric in ("auto", "task") and adapter is not None:
            self._try_task(bundle)
        if options.metric == "task" and self.metric != "task":
            raise UnsupportedError("--metric task: this model family has no task metric here",
                                   "use --metric cosine")
        default = DEFAULT_TASK_BUDGET if self.metric == "task" else DEFAULT_COSINE_BUDGET
        self.budget = options.accuracy_budget if options.accuracy_budget is not None else default
        if self.metric == "cosine" and not 0 < self.budget <= 1:
            raise InputError(f"--accuracy-budget {self.budget:g} is not a cosine in (0, 1]",
                             "without a task metric the budget is the minimum embedding cosine, e.g. 0.99")
        if self.metric == "task" and self.budget < 0:
            raise InputError(f"--accuracy-budget {self.budget:g} is negative", "give the allowed drop in points, e.g. 0.5")
        if self.metric == "task":
            self._check_resolution(options.accuracy_budget is not None)

    def _check_resolution(self, explicit: bool) -> None:
        """A budget finer than one item of the set would be noise: refuse it for a user's --eval
        set; for the built-in set, say so (pass --eval for a real guard).  A budget inside the fp32
        set's own interval is fine: the candidate is judged on the same items (its drop has a
        paired interval, :meth:`mmdeploy.stages.eval.TaskEvaluator.drop`), not against that interval."""
        import math

        base = self.baseline_result
        n = base["n"] if isinstance(base, dict) else base.n
        one = 100.0 / max(n, 1)
        flag = f"--accuracy-budget {self.budget:g} pp" if explicit else f"the default budget {self.budget:g} pp"
        if self.user_set is None:
            if self.budget < one:
                self.notes.append(f"{flag} is below the resolution of the built-in set (n={n}: one sample is "
                                  f"{one:.2f} pp); pass --eval PATH with your own data for a meaningful guard")
            return
        if 0 < self.budget < one - 1e-9:  # 0: not one item may be lost (meaningful at any n)
            raise InputError(f"{flag} is below the resolution of {self.task_name} (n={n}: one item is {one:.2f} pp)",
                             f"pass --accuracy-budget {math.ceil(one * 100) / 100:.2f} or more, or a larger --eval set")

    def _task_runners(self, bundle: Path | None, needed) -> dict | None:
        runners = {}
        for name in needed:
            if name in self.fp32:
                runners[name] = self.fp32[name]
            else:
                src = bundle / name if bundle is not None else None
                if src is None or not (src / MANIFEST_NAME).is_file():
                    return None
                m = read_manifest(src)
                runners[name] = model_runner(_model_file(src, m), m.format or "onnx", "",
                                             [t.name for t in m.inputs], [t.name for t in m.outputs], signature=m)
        return runners

    def _user_task(self, bundle: Path | None):
        from mmdeploy.stages.eval import TaskEvaluator

        self.user_set = TaskEvaluator(self.options.eval_data, self.adapter, self.options.eval_task,
                                      self.options.templates, limit=self.options.eval_limit)
        needed = self.user_set.components(set(self.comps))  # a text set needs only the text encoder
        runners = self._task_runners(bundle, needed) if needed else None
        if not runners:
            raise UnsupportedError("--eval: this artifact has no task the set can measure "
                                   "(quantize the whole bundle written by `mmdeploy convert`)",
                                   "drop --eval to guard with embedding cosine")
        self.task_runners = runners
        self.baseline_result = self.user_set.score(runners)
        self.metric, self.task_name = "task", self.user_set.name
        self.baseline = self.baseline_result["value"]

    def _try_task(self, bundle: Path | None):
        try:
            needed = tuple(self.adapter.task_components())
        except NotImplementedError:
            return
        if not needed or bundle is None:
            return
        runners = self._task_runners(bundle, needed)
        if runners is None:
            return
        self.task_runners = runners
        try:
            result = self.adapter.evaluate(runners, limit=self.options.eval_limit)
        except NotImplementedError:
            return
        if result is None:
            return
        self.metric, self.task_name = "task", result.name
        self.baseline = 100.0 * result.value
        self.baseline_result = result

    def judge(self, name: str, runner) -> tuple[float, float]:
        """(mean, worst sample) embedding cosine of one quantized component on the judge samples
        (:attr:`CalibrationSet.judge_feeds`); the fp32 outputs are computed once."""
        feeds = self.comps[name].calib.judge_feeds
        if name not in self._refs:
            self._refs[name] = [self.fp32[name].run(f) for f in feeds]
        return embedding_cosines(self.fp32[name], runner, feeds, refs=self._refs[name])

    def score(self, runners: dict[str, Any]) -> dict[str, Any]:
        """{"value", "ok", ...} for quantized runners (fp32 runners stand in for the others)."""
        both = {name: self.judge(name, r) for name, r in runners.items()}
        cosines = {name: mean for name, (mean, _) in both.items()}
        out: dict[str, Any] = {"cosine": cosines, "min_cosine": {name: worst for name, (_, worst) in both.items()}}
        if self.metric == "task" and self.user_set is not None:
            from mmdeploy.data.metrics import agreement

            result = self.user_set.score({**self.task_runners, **runners})
            value = result["value"]
            out.update(value=value, drop=self.baseline - value, ok=self.baseline - value <= self.budget + 1e-9,
                       agreement=agreement(result["predictions"], self.baseline_result["predictions"]),
                       ci95=result["ci95"])
        elif self.metric == "task":
            result = self.adapter.evaluate({**self.task_runners, **runners}, limit=self.options.eval_limit)
            value = 100.0 * result.value
            out.update(value=value, drop=self.baseline - value, ok=self.baseline - value <= self.budget + 1e-9,
                       agreement=result.agreement(self.baseline_result))
        else:
            value = min(cosines.values())  # the mean holds the budget, every sample the tail floor
            worst = min(out["min_cosine"].values())
            out.update(value=value, ok=value >= self.budget and worst >= tail_floor(self.budget))
        return out

    def describe(self) -> str:
        if self.metric == "task":
            return f"{self.task_name} drop <= {self.budget:g} pp (fp32 {self.baseline:.2f} %)"
        return f"embedding cosine >= {self.budget:g} (mean), >= {tail_floor(self.budget):g} (every sample)"


# --------------------------------------------------------------------------- main entry


def quantize(artifact: str | Path, output: str | Path, options: QuantizeOptions | None = None,
             log=print, torch_modules: dict[str, Any] | None = None) -> Manifest:
    """Quantize every component of a bundle (or one component dir) into a new artifact at ``output``."""
    options = options or QuantizeOptions()
    artifact = Path(artifact)
    manifest = read_manifest(artifact)
    if Path(output).absolute() == artifact.absolute():
        raise InputError("--output is the input artifact", "write to a new directory; artifacts are never modified")
    if manifest.kind == "model":
        bundle, refs = artifact, list(manifest.artifacts)
        comps = [_Component(r.component, artifact / r.path, read_manifest(artifact / r.path), r.path) for r in refs]
    else:
        bundle = bundle_dir(artifact)
        comps = [_Component(manifest.name, artifact, manifest, None)]
    if options.components:
        unknown = sorted(set(options.components) - {c.name for c in comps})
        if unknown:
            raise InputError(f"no component {', '.join(unknown)} in {artifact}",
                             "components: " + ", ".join(c.name for c in comps))
    selected = [c for c in comps if not options.components or c.name in options.components]
    for comp in selected:
        if comp.manifest.format != "onnx" or comp.manifest.precision != "fp32":
            raise UnsupportedError(
                f"component {comp.name!r} is {comp.manifest.precision} {comp.manifest.format}; quantize takes fp32 ONNX",
                "quantize the output of `mmdeploy convert`, then compile the result")

    method = options.resolved_method() if options.precision != "fp16" else "fp16"
    if options.precision == "auto" and method != "auto":
        raise InputError(f"--precision auto chooses among every route; --method {method} names one",
                         f"drop --method {method}, or use --int8 with it")
    if method == "auto" and options.target and _target_backend(options.target) == "tflite":
        method_needs_torch = True
    else:
        method_needs_torch = method == "tflite"
    if method_needs_torch:
        _attach_torch_modules(selected, manifest if manifest.kind == "model" else (
            read_manifest(bundle) if bundle else manifest), torch_modules)
    adapter = _adapter(bundle, options.processor)
    if adapter is not None:
        adapter.processor_dir()  # a bad --processor fails before calibration

    # calibration data: each --calib path serves the components of its modality
    by_kind = calibration_paths(options.calib)
    modalities = {c.name: component_modality([t.name for t in c.manifest.inputs]) for c in selected}
    for kind in by_kind:
        matching = [c for c in selected if modalities[c.name] in (kind, "tensor")]
        if not matching:
            for c in selected:
                check_modality(kind, modalities[c.name], c.name)
    if by_kind and options.components:
        for c in selected:
            if modalities[c.name] != "tensor" and modalities[c.name] not in by_kind:
                check_modality(next(iter(by_kind)), modalities[c.name], c.name)
    for comp in selected:
        modality = modalities[comp.name]
        kind = modality if modality in by_kind else (next(iter(by_kind)) if modality == "tensor" and len(by_kind) == 1
                                                      else None)
        use_path = by_kind.get(kind) if kind else None
        comp.calib = calibration_set(comp, adapter, bundle, use_path, kind if use_path else None,
                                     options.calib_limit)
        log(f"calibration {comp.name}: {len(comp.calib.feeds)} samples from {comp.calib.source}")
        if comp.calib.extra.get("note"):
            log(comp.calib.extra["note"])

    with scratch_dir("mmdeploy-quantize-") as tmp:
        evaluator = _Evaluator(selected, adapter, bundle, options)
        log(f"accuracy budget: {evaluator.describe()}")
        for note in evaluator.notes:
            log(f"note: {note}")
        if method == "auto":
            from mmdeploy.stages import autoselect

            built: dict = {}  # quantize-method -> built state, shared by candidates of one method
            try:
                chosen, record = autoselect.select(
                    selected, evaluator, options, log,
                    build=lambda cand, log, aware: _build_candidate(
                        selected, evaluator, options.model_copy(update={"accuracy_aware": aware}), cand, Path(tmp),
                        manifest.family, log, built),
                    runner_for=_candidate_runner)
            except autoselect.NoCandidateError as exc:
                if options.precision == "int8":  # the exact command for a float artifact instead
                    exc.hint = (f"{exc.hint}; or, for the fastest artifact of any precision (float routes too): "
                                f"mmdeploy quantize {artifact} --precision auto --output {output}")
                raise
            record["int8_isa"] = cpu_module.int8_isa(record["cpu"])
            summary = _summary(selected, evaluator, chosen.steps, chosen.float_blocks, options, chosen.name, log)
            summary.update(auto=record, artifact_precision=chosen.precision)
            for row in summary["components"]:
                row["method"] = chosen.by_component[row["component"]].candidate.name
            return _write(artifact, manifest, comps, selected, bundle, Path(output), options, chosen.name, summary)
        for comp in selected:
            _prepare(comp, Path(tmp) / comp.name, options, method, manifest.family, log)
        steps, float_blocks = _accuracy_loop(selected, evaluator, options, method, log)
        summary = _summary(selected, evaluator, steps, float_blocks, options, method, log)
        return _write(artifact, manifest, comps, selected, bundle, Path(output), options, method, summary)


def _prepare(comp: _Component, work: Path, options: QuantizeOptions, method: str, family, log,
             optimize: bool | None = None) -> None:
    """Fresh work dir and base model for one quantization route (optimize pass when it asks)."""
    comp.work = work
    comp.work.mkdir(parents=True)
    comp.base_model = _model_file(comp.src, comp.manifest)
    comp.excluded = list(options.nodes_to_exclude)
    comp.passes = []
    if optimize is None:
        optimize = options.optimize if options.optimize is not None else method == "ort-dynamic"
    if optimize:
        comp.base_model, record = _run_optimize(comp, family, options.fuse_attention)
        comp.passes.append(record)
        log(f"optimize {comp.name}: fused {record.report.get('fused')}")


def _target_backend(name: str) -> str:
    from mmdeploy.targets import get_target

    return get_target(name).backend


def _build_candidate(comps: list[_Component], evaluator: _Evaluator, options: QuantizeOptions, cand, tmp: Path,
                     family, log, reuse: dict):
    """One ``--method auto`` candidate: every component through the candidate's route (the
    accuracy loop for int8 routes), scored; an autoselect.Outcome.  Any failure (a runtime that
    raises during calibration, a graph a quantizer cannot take) is that candidate's outcome, one
    line, never the end of the search."""
    from mmdeploy.logs import log_failure
    from mmdeploy.stages.autoselect import Outcome

    outcome = Outcome(cand)
    phase = "quantization"
    try:
        _build_state(comps, evaluator, options, cand, tmp, family, log, reuse, outcome)
        phase = "scoring"
        if outcome.score is None:
            runners = {c.name: _candidate_runner(c, outcome.state[c.name], cand) for c in comps}
            outcome.score = evaluator.score(runners)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - recorded as this candidate's outcome
        outcome.error = f"failed during {phase}: {log_failure(exc, f'auto candidate {cand.name}')}"
        outcome.state = {}
        log(f"auto: {cand.name}: {outcome.error}")
        return outcome
    outcome.ok = bool(outcome.score["ok"])
    # the summary's final step is this candidate's own score (its runtime and precision)
    outcome.steps = list(outcome.steps) + [{"float_block": None, "component": None, "candidate": cand.name,
                                            **brief(outcome.score)}]
    log(f"auto: {cand.name}: {describe(outcome.score, evaluator)}" + ("" if outcome.ok else " (over budget)"))
    return outcome


def _build_state(comps: list[_Component], evaluator: _Evaluator, options: QuantizeOptions, cand, tmp: Path,
                 family, log, reuse: dict, outcome) -> None:
    import copy

    options = options.model_copy(update=dict(cand.settings))
    key = (cand.method, cand.settings, cand.runtime == "tensorrt", options.accuracy_aware)
    if key in reuse:  # e.g. nncf+bf16: the nncf IR, run at another precision
        for comp in comps:
            state = reuse[key]["state"][comp.name]
            comp.result, comp.out_dir = copy.deepcopy(state["result"]), state["out_dir"]
            comp.excluded, comp.passes, comp.base_model = list(state["excluded"]), list(state["passes"]), state["base_model"]
        outcome.steps, outcome.float_blocks = reuse[key]["steps"], reuse[key]["float_blocks"]
    else:
        for comp in comps:
            _prepare(comp, tmp / cand.name / ("aware" if options.accuracy_aware else "all") / comp.name,
                     options, cand.method, family, log,
                     optimize=cand.optimize if options.optimize is None else options.optimize)
        if cand.method == "openvino-float":
            for comp in comps:
                _openvino_float(comp, cand)
            outcome.steps, outcome.float_blocks = [], []
        else:
            opts = options.model_copy(update={"activation_type": "int8"}) if cand.runtime == "tensorrt" else options
            try:
                outcome.steps, outcome.float_blocks = _accuracy_loop(
                    comps, evaluator, opts, cand.method, lambda m: log("  " + m), reuse.setdefault("variants", {}))
            except AccuracyBudgetError as exc:
                outcome.score = getattr(exc, "best", None)
                outcome.steps, outcome.float_blocks = [], list(getattr(exc, "float_blocks", []))
        reuse[key] = {"steps": outcome.steps, "float_blocks": outcome.float_blocks,
                      "state": {c.name: {"result": copy.deepcopy(c.result), "out_dir": c.out_dir,
                                         "excluded": list(c.excluded), "passes": list(c.passes),
                                         "base_model": c.base_model} for c in comps}}
    for comp in comps:
        if cand.inference_precision:
            comp.result.report["inference_precision"] = cand.inference_precision
        outcome.state[comp.name] = {"result": copy.deepcopy(comp.result), "out_dir": comp.out_dir,
                                    "excluded": list(comp.excluded), "passes": list(comp.passes),
                                    "base_model": comp.base_model}


def _candidate_runner(comp: _Component, state: dict, cand):
    result = state["result"]
    return model_runner(state["out_dir"] / result.model_file, result.format, f"{cand.name}-{comp.name}",
                        comp.input_names, [t.name for t in comp.manifest.outputs], result.report.get("pad"),
                        inference_precision=cand.inference_precision, signature=comp.manifest)


def _openvino_float(comp: _Component, cand) -> None:
    """The fp32 ONNX as an OpenVINO IR (fp32 weights), to run at a reduced inference precision."""
    from mmdeploy.passes.base import PassResult

    try:
        import openvino as ov
    except ImportError:
        raise UnsupportedError(f"{cand.name} needs openvino (not installed)", 'pip install "mmdeploy[openvino]"') from None
    out = comp.work / "q"
    out.mkdir()
    ov.save_model(ov.convert_model(str(comp.base_model)), str(out / "model.xml"), compress_to_fp16=False)
    report = {"format": "OpenVINO IR (fp32 weights)", "inference_precision": cand.inference_precision}
    comp.result, comp.out_dir = PassResult("model.xml", "openvino", cand.precision, dict(report)), out
    comp.result.report["record"] = PassRecord(name="openvino-precision",
                                              params={"inference_precision": cand.inference_precision}, report=report)


def _attach_torch_modules(comps: list[_Component], manifest: Manifest, given: dict | None) -> None:
    """--method tflite needs each component's torch module: given, or from the bundle's source."""
    for comp in comps:
        if given and comp.name in given:
            comp.torch_module = given[comp.name]
    missing = [c for c in comps if c.torch_module is None]
    if not missing:
        return
    source = (manifest.source or {}).get("path")
    if not source or not (Path(source).exists() or str(source).startswith("demo:")):
        raise UnsupportedError(
            "--method tflite quantizes the PyTorch module, and the bundle's source checkpoint "
            f"({source or 'none recorded'}) is not available", "keep the checkpoint at its path, or use --method ort-static")
    from mmdeploy.models import resolve

    components = resolve(source, family=manifest.family).components()
    for comp in missing:
        comp.torch_module = components[comp.name].module


def _run_optimize(comp: _Component, family: str | None, attention: bool = True):
    from mmdeploy.passes import get_pass

    opt = get_pass("optimize")
    config = opt.config(attention=attention)
    out = comp.work / "optimized"
    out.mkdir()
    result = opt.run(comp.base_model, out, config, PassContext(family=family, work_dir=comp.work))
    return out / result.model_file, opt.record(config, result)


def _quantize_component(comp: _Component, options: QuantizeOptions, method: str, tag: str):
    """Quantize ``comp`` with its current exclusions into work/<tag>; returns (result, runner)."""
    from mmdeploy.passes import get_pass

    out = comp.work / tag
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    context = PassContext(calibration=comp.calib.feeds, work_dir=comp.work,
                          metadata={"torch_module": comp.torch_module, "input_names": comp.input_names,
                                    "manifest": comp.manifest})
    if method == "fp16":
        p = get_pass("fp16")
        config = p.config()
    else:
        p = get_pass("quantize")
        config = p.config(method="ort-static" if method == "inc" else method,
                          calibrate_method=options.calibrate_method, per_channel=options.per_channel,
                          activation_type=options.activation_type, nodes_to_exclude=sorted(set(comp.excluded)),
                          reduce_range=bool(options.reduce_range), nncf_preset=options.nncf_preset,
                          smooth_quant=options.smooth_quant, smooth_quant_alpha=options.smooth_quant_alpha,
                          overflow_fix="first_layer" if options.overflow_fix == "auto" else options.overflow_fix)
    result = p.run(comp.base_model, out, config, context)
    result.report["record"] = p.record(config, result)
    comp.result, comp.out_dir = result, out
    return result, _runner(comp, method)


def _runner(comp: _Component, method: str, base=None, model: Path | None = None):
    """A runner over ``comp``'s current quantized model (or ``base``: (result, out_dir); or the
    file ``model`` of that result's format)."""
    result, out_dir = base or (comp.result, comp.out_dir)
    return model_runner(model or out_dir / result.model_file, result.format, f"{method}-{comp.name}",
                        comp.input_names, [t.name for t in comp.manifest.outputs], result.report.get("pad"),
                        signature=comp.manifest)


def _probe(comp: _Component, nodes: list[str], method: str, base=None):
    """A runner over ``comp``'s quantized model (or ``base``: (result, out_dir)) with ``nodes``'
    activation quantizers bypassed (:func:`mmdeploy.passes.quantize.float_probe`), or None where
    the model has none.  Each probe has a folder of its own (a runner may map its weights file);
    the previous ones are removed."""
    from mmdeploy.passes.quantize import float_probe

    result, out_dir = base or (comp.result, comp.out_dir)
    for old in comp.work.glob("probe-*"):
        shutil.rmtree(old, ignore_errors=True)
    comp.probes += 1
    path = float_probe(out_dir / result.model_file, result.format, nodes, comp.work / f"probe-{comp.probes}")
    return None if path is None else _runner(comp, method, (result, out_dir), path)


def _variants(options: QuantizeOptions, method: str) -> list[dict]:
    """The settings a route tries, in order, until one holds the budget (the best is kept): its
    outlier handling decided by measuring on the calibration data, not assumed.

    * ONNX Runtime routes on an x86 CPU without int8 dot-product instructions (AVX2 only): 8-bit
      weights, then 7-bit (``reduce_range``: ORT's u8s8 kernels add pairs into int16 there and can
      saturate; with VNNI / AMX they accumulate in int32);
    * NNCF: SmoothQuant at NNCF's alpha, then alpha 0.5; on x86 without int8 dot products also
      NNCF's ``overflow_fix`` on every layer (its 7-bit weights for the same saturation).
    Options the user set are not varied."""
    from mmdeploy import cpu

    no_dot = cpu.cpu_features()["machine"] in ("x86_64", "AMD64") and not cpu.has_int8_dot()
    if method in ("ort-static", "ort-dynamic", "inc"):
        if options.reduce_range is not None or options.activation_type != "uint8" or options.target:
            return [{"reduce_range": bool(options.reduce_range)}]
        return [{"reduce_range": False}] + ([{"reduce_range": True}] if no_dot else [])
    if method == "nncf":
        fix = [] if options.overflow_fix != "auto" else [{"overflow_fix": "first_layer"}] + (
            [{"overflow_fix": "enable"}] if no_dot else [])
        alphas = [{}] if not options.smooth_quant or options.smooth_quant_alpha is not None else [
            {}, {"smooth_quant_alpha": 0.5}]
        return [{**a, **f} for f in (fix or [{}]) for a in alphas]
    return [{}]


def _quantize_variants(comps: list[_Component], evaluator, options: QuantizeOptions, method: str, log,
                       cache: dict | None = None):
    """Quantize every component with each of the route's variants (:func:`_variants`) until one
    holds the budget; returns (options of the best, its runners, its score).  Each variant is
    built in its own directory; the components are left at the best one.  ``cache``: the builds of
    earlier runs over the same components (auto's block search starts from the all-int8 build
    it already made and judged)."""
    key = (method, options.model_dump_json(exclude={"accuracy_aware"}))
    if cache is not None and key in cache:
        import copy

        opts, score, state = cache[key]
        for c in comps:
            c.result, c.out_dir = copy.deepcopy(state[c.name][0]), state[c.name][1]
        log(f"quantized all (built before): {describe(score, evaluator)}")
        return (opts.model_copy(update={"accuracy_aware": options.accuracy_aware}),
                {c.name: _runner(c, method) for c in comps}, score)
    variants = _variants(options, method)
    best = None
    for i, update in enumerate(variants):
        opts = options.model_copy(update=update)
        built = {c.name: _quantize_component(c, opts, method, f"q{i}") for c in comps}
        runners = {name: r for name, (_, r) in built.items()}
        score = evaluator.score(runners)
        label = ", ".join(f"{k}={v}" for k, v in update.items())
        log(f"quantized all{f' ({label})' if len(variants) > 1 and label else ''}: {describe(score, evaluator)}")
        state = {c.name: (c.result, c.out_dir) for c in comps}
        if best is None or _better(score, best[2], evaluator):
            best = (opts, runners, score, state)
        if score["ok"]:
            break
    opts, runners, score, state = best
    for c in comps:
        c.result, c.out_dir = state[c.name]
    if cache is not None:
        cache[key] = (opts, score, state)
    return opts, runners, score


def _better(a: dict, b: dict, evaluator) -> bool:
    if evaluator.metric == "task":
        return a["drop"] < b["drop"]
    return a["value"] > b["value"]


def _accuracy_loop(comps: list[_Component], evaluator: _Evaluator, options: QuantizeOptions,
                   method: str, log, cache: dict | None = None):
    """Quantize; while the budget fails, keep the most sensitive block in float (``cache``: see
    :func:`_quantize_variants`)."""
    from mmdeploy.passes.quantize import block_label, quantizable_groups

    if method == "inc":
        from mmdeploy.passes.inc import inc_accuracy_loop

        return inc_accuracy_loop(comps, evaluator, options, _quantize_component, log)
    options, runners, score = _quantize_variants(comps, evaluator, options, method, log, cache)
    steps = [{"float_block": None, "component": None, **brief(score)}]
    float_blocks: list[dict] = []
    if score["ok"] or not options.accuracy_aware or method in ("fp16", "tflite"):
        if not score["ok"]:
            raise budget_error(evaluator, score, float_blocks)
        return steps, float_blocks

    # sensitivity: gain in the component's cosine when only that block stays float, within
    # options.search_seconds (blocks not probed by then rank last)
    ranking = []
    probing: set[str] = set()  # components whose blocks are measured by quantizer bypass (_probe)
    quantized = {c.name: (c.result, c.out_dir) for c in comps}  # the all-int8 build the probes start from
    started = time.perf_counter()
    for comp in comps:
        comp.groups = dict(quantizable_groups(comp.base_model))
        log(f"measuring the sensitivity of {len(comp.groups)} blocks of {comp.name} "
            f"(at most {options.search_seconds:g} s)")
        base_cos = score["cosine"][comp.name]
        probed = 0
        for group, nodes in comp.groups.items():
            if time.perf_counter() - started > options.search_seconds:
                ranking.append((-1.0, comp.name, group))
                continue
            r = _probe(comp, nodes, method, quantized[comp.name])
            if r is not None:
                probing.add(comp.name)
            else:  # no quantizer to bypass (dynamic quantization, a block NNCF left float): re-quantize
                saved = comp.excluded
                comp.excluded = saved + nodes
                _, r = _quantize_component(comp, options, method, "probe")
                comp.excluded = saved
                comp.result, comp.out_dir = quantized[comp.name]
            gain = evaluator.judge(comp.name, r)[0] - base_cos
            del r
            ranking.append((gain, comp.name, group))
            probed += 1
        top = sorted((t for t in ranking if t[1] == comp.name and t[0] > -1), key=lambda t: -t[0])[:3]
        log(f"sensitivity {comp.name}: {probed} of {len(comp.groups)} blocks measured; most sensitive: "
            + (", ".join(f"{block_label(n, g)} (cosine +{gain:.2g})" for gain, n, g in top) or "none measured"))
    ranking.sort(key=lambda t: -t[0])
    by_name = {c.name: c for c in comps}
    user = {c.name: list(c.excluded) for c in comps}  # --exclude

    def build(name: str, nodes: list[str], real: bool):
        """``name``'s runner with ``nodes`` in float: a probe where its quantizers can be bypassed,
        else (or ``real``) a re-quantization without them."""
        if not real and name in probing:  # nothing to bypass in these blocks: the all-int8 model itself
            return (_probe(by_name[name], nodes, method, quantized[name])
                    or _runner(by_name[name], method, quantized[name]))
        by_name[name].excluded = user[name] + nodes
        return _quantize_component(by_name[name], options, method, "q")[1]

    def confirm() -> dict:
        """The probes ran with the kept blocks' activation quantizers bypassed: now the real thing
        (quantized without those blocks, their weights float too), judged."""
        for name in probing:
            runners[name] = build(name, floated[name], True)
        score = evaluator.score(runners)
        steps.append({"float_block": None, "component": None, "confirmed": True, **brief(score)})
        log(f"  quantized without the {len(float_blocks)} block(s) kept in float: {describe(score, evaluator)}")
        return score

    floated: dict[str, list[str]] = {c.name: [] for c in comps}
    real, best = not probing, score
    queue = ranking[: options.max_float_blocks]
    while queue:
        gain, name, group = queue.pop(0)
        nodes = floated[name] + by_name[name].groups[group]
        candidate = build(name, nodes, real)
        new = evaluator.score({**runners, name: candidate})
        entry = {"component": name, "block": group, "label": block_label(name, group),
                 "nodes": by_name[name].groups[group], "sensitivity_gain": gain, "metric_before": best["value"],
                 "metric_after": new["value"]}
        if new["value"] < best["value"]:  # no gain on the budget metric: quantize it after all
            if real:
                build(name, floated[name], True)
            steps.append({"float_block": group, "component": name, "rejected": True, **brief(new)})
            log(f"  {block_label(name, group)} in float does not help ({describe(new, evaluator)}): stays int8")
            continue
        runners[name], floated[name] = candidate, nodes
        float_blocks.append(entry)
        steps.append({"float_block": group, "component": name, **brief(new)})
        log(f"  keep {block_label(name, group)} in float -> {describe(new, evaluator)}")
        best = new
        if not new["ok"]:
            continue
        float_blocks = _drop_unneeded(float_blocks, runners, floated, build, real, evaluator, steps, log)
        if real:
            return steps, float_blocks
        best, real = confirm(), True  # if the probes were optimistic: go on with real builds
        if best["ok"]:
            return steps, float_blocks
    if not real and float_blocks:
        best = confirm()  # what is reported is a real build's accuracy (probes are pessimistic too)
        if best["ok"]:
            return steps, float_blocks
    raise budget_error(evaluator, best, float_blocks)


def _drop_unneeded(float_blocks: list[dict], runners: dict, floated: dict, build, real: bool, evaluator,
                   steps: list, log) -> list[dict]:
    """Greedy search, second pass: quantize again each block kept in float earlier (all but the
    last, which met the budget) whose float copy turns out not to matter with the others kept."""
    kept = list(float_blocks)
    for entry in list(float_blocks[:-1]):
        name = entry["component"]
        nodes = [n for n in floated[name] if n not in set(entry["nodes"])]
        candidate = build(name, nodes, real)
        score = evaluator.score({**runners, name: candidate})
        if score["ok"]:
            runners[name], floated[name] = candidate, nodes
            kept.remove(entry)
            steps.append({"float_block": entry["block"], "component": name, "dropped": True, **brief(score)})
            log(f"  {entry['label']} did not matter once the others were float: quantized again "
                f"({describe(score, evaluator)})")
            continue
        if real:
            build(name, floated[name], True)
    return kept


def _latency(runner, feeds, runs: int) -> float:
    for _ in range(2):
        runner.run(feeds)
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        runner.run(feeds)
        samples.append(time.perf_counter() - t)
    return float(np.median(samples) * 1000)


def _summary(comps, evaluator: _Evaluator, steps, float_blocks, options, method, log) -> dict:
    final = steps[-1]
    rows = []
    for comp in comps:
        fp32_file = _model_file(comp.src, comp.manifest)
        row = {"component": comp.name, "size_fp32": model_bytes(fp32_file),
               "size_quantized": folder_bytes(comp.out_dir), "cosine": final["cosine"].get(comp.name)}
        report = comp.result.report
        floats = sum(1 for b in float_blocks if b.get("component") == comp.name)
        if report.get("weights"):
            row["weights"] = report["weights"] + (f", {floats} block(s) kept in float" if floats else "")
            row["activations"] = report.get("activations")
            # the artifact's precision in a few words (inspect's precision column)
            row["precision"] = ("int8 weights, activations at run time" if "run time" in (row["activations"] or "")
                                else "int8") + (f", {floats} block(s) in float" if floats else "")
        elif comp.result.precision != "int8":
            row["weights"] = f"{comp.result.precision} (float: no int8)"
        if options.latency_runs:
            feeds = comp.calib.feeds[0]
            qrunner = model_runner(comp.out_dir / comp.result.model_file, comp.result.format, "",
                                   comp.input_names, [t.name for t in comp.manifest.outputs],
                                   comp.result.report.get("pad"), comp.result.report.get("inference_precision"),
                                   signature=comp.manifest)
            row["latency_ms_fp32"] = _latency(evaluator.fp32[comp.name], feeds, options.latency_runs)
            row["latency_ms_quantized"] = _latency(qrunner, feeds, options.latency_runs)
        rows.append(row)
    accuracy = {"metric": evaluator.metric, "budget": evaluator.budget, "value": final["value"], "ok": final["ok"]}
    if evaluator.metric == "task":
        accuracy.update(task=evaluator.task_name, fp32=evaluator.baseline, drop=final["drop"],
                        agreement=final.get("agreement"), n=getattr(evaluator.baseline_result, "n", None))
        if evaluator.user_set is not None:
            base = evaluator.baseline_result
            accuracy.update(eval_data=str(evaluator.user_set.data.path), n=base["n"], fp32_ci95=base["ci95"],
                            ci95=final.get("ci95"), resolution=base["resolution"])
    if evaluator.notes:
        accuracy["notes"] = list(evaluator.notes)
    return {"method": method, "precision": options.precision, "components": rows, "accuracy": accuracy,
            "int8_isa": cpu_module.int8_isa(),
            "float_blocks": float_blocks, "steps": steps,
            "latency_note": "median of %d batch-1 runs, same process, ORT spinning off" % options.latency_runs}


def _component_manifest(comp: _Component, out_dir: Path, method: str, options, summary) -> Manifest:
    from mmdeploy.compare import verify_runner

    result = comp.result
    record = result.report.pop("record")
    record.report = dict(result.report)
    record.report["float_blocks"] = [b for b in summary["float_blocks"] if b["component"] == comp.name]
    record.report["calibration"] = comp.calib.record()
    m = comp.manifest.model_copy(deep=True)
    m.format, m.precision = result.format, result.precision
    m.parent = {"path": str(comp.src.resolve()), "manifest_sha256": sha256_file(comp.src / MANIFEST_NAME)}
    m.passes = list(m.passes) + comp.passes + [record]
    m.tools = {**m.tools, **tool_versions("onnx", "onnxruntime", "openvino", "nncf", "neural-compressor")}
    m.metadata = {**m.metadata, "model_file": result.model_file, "calibration": comp.calib.record(),
                  "quantize": next(r for r in summary["components"] if r["component"] == comp.name)}
    if result.format == "openvino":
        m.metadata["weights_file"] = "model.bin"
        m.metadata["inference_precision"] = result.report.get("inference_precision") or "f32"
    if result.format == "tflite":  # int8 inputs/outputs: the runner (de)quantizes with the file's params
        m.metadata.update(io_quantized=True, static_batch=1, pad_inputs=result.report.get("pad", {}))
    cases = load_reference(comp.src)
    if cases:
        runner = model_runner(out_dir / result.model_file, result.format, "", comp.input_names,
                              [t.name for t in comp.manifest.outputs], result.report.get("pad"),
                              result.report.get("inference_precision"), signature=comp.manifest)
        m.parity = verify_runner(runner, cases, atol=None, label=f"{method}/{comp.name}")
    return m


def _write(artifact, manifest, comps, selected, bundle, output: Path, options, method, summary) -> Manifest:
    chosen = {c.name for c in selected}
    with atomic_output(output) as tmp:
        if manifest.kind == "component":
            comp = selected[0]
            _copy_files(comp.out_dir, tmp)
            if (comp.src / REFERENCE_NAME).is_file():
                shutil.copy2(comp.src / REFERENCE_NAME, tmp / REFERENCE_NAME)
            cm = _component_manifest(comp, tmp, method, options, summary)
            cm.metadata["quantize_summary"] = summary
            return write_manifest(tmp, cm)
        skip = {c.ref_path.split("/")[0] for c in comps if c.ref_path} | {MANIFEST_NAME, LOG_DIR}
        for item in Path(artifact).iterdir():  # preprocess/ and any other bundle files
            if item.name not in skip and not item.name.startswith("."):
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        refs = []
        for comp in comps:
            dest = tmp / comp.ref_path
            if comp.name not in chosen:
                shutil.copytree(comp.src, dest)
                refs.append(next(r for r in manifest.artifacts if r.component == comp.name))
                continue
            dest.mkdir(parents=True)
            _copy_files(comp.out_dir, dest)
            if (comp.src / REFERENCE_NAME).is_file():
                shutil.copy2(comp.src / REFERENCE_NAME, dest / REFERENCE_NAME)
            cm = write_manifest(dest, _component_manifest(comp, dest, method, options, summary))
            refs.append(ArtifactRef(path=comp.ref_path, component=comp.name, format=cm.format,
                                    precision=cm.precision, target=cm.target))
        m = manifest.model_copy(deep=True)
        m.artifacts = refs
        m.precision = summary.get("artifact_precision") or (options.precision if method != "fp16" else "fp16")
        m.parent = {"path": str(Path(artifact).resolve()), "manifest_sha256": sha256_file(Path(artifact) / MANIFEST_NAME)}
        m.passes = list(m.passes) + [PassRecord(name="quantize", params=options.model_dump(mode="json"),
                                                report={k: summary[k] for k in ("method", "accuracy", "float_blocks")})]
        m.tools = {**m.tools, **tool_versions("onnx", "onnxruntime", "openvino", "nncf", "neural-compressor")}
        m.metadata = {**m.metadata, "quantize": summary}
        m.parity = _bundle_parity(manifest.parity, summary)
        return write_manifest(tmp, m)


def _bundle_parity(parent: dict, summary: dict) -> dict:
    """The quantized bundle's own task numbers (never the parent's), measured by the accuracy guard
    against the fp32 ONNX; without a task metric, the embedding cosine it reached."""
    acc = summary["accuracy"]
    if acc["metric"] != "task":
        return {"embedding_cosine": acc["value"], "measured_on": f"{summary['precision']} components vs fp32 ONNX"}
    before = parent.get("task") or {}
    return {"task": {"metric": acc["task"], "n": acc.get("n", before.get("n")), "dataset": before.get("dataset"),
                     "reference_label": "fp32 ONNX", "reference_value": acc["fp32"] / 100,
                     "value": acc["value"] / 100, "top1_agreement": acc.get("agreement"),
                     "measured_on": f"{summary['precision']} components"}}


def _copy_files(src: Path, dest: Path) -> None:
    for item in Path(src).iterdir():
        if item.is_file():
            shutil.copy2(item, dest / item.name)
