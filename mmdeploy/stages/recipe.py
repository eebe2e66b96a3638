"""Recipes: a whole deployment declared in YAML, and YAML loading with file:line errors.

A recipe lists the source checkpoint, the components, the passes with their options, the
targets, the bench settings and the budgets; ``mmdeploy run RECIPE.yaml --output DIR``
executes it (:func:`run_recipe`): prune (on the checkpoint) → convert → quantize / fp16 →
compile per target → bench (fp32 and final bundles, same run) → budgets.  Example::

    name: demo-tiny-clip
    source: demo:tiny-clip
    components: [vision, text]
    convert: {opset: 17}
    passes:
      - quantize: {mode: static, calibration_limit: 64}
    targets: [cpu, openvino-cpu]
    bench: {iters: 100, warmup: 10, batch: 1, accuracy: true}
    budgets:
      - {component: vision, target: cpu, max_p50_ms: 30}

Every YAML file the project reads (recipes, budgets, target profiles) goes through
:func:`load_yaml` and :func:`validate`, so a mistake is reported as ``FILE:LINE: what``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmdeploy.config import YamlDoc, load_yaml, validate
from mmdeploy.errors import InputError

# pass names a recipe may list; prune works on the checkpoint so it runs before convert,
# simplify is convert's onnxsim step, quantize/fp16 call mmdeploy.stages.quantize.quantize
PASSES = ("prune", "simplify", "quantize", "fp16")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConvertStep(Strict):
    opset: int = 17
    atol: float | None = None
    family: str | None = None
    allow_pickle: bool = False
    batch: int | None = None
    sequence: int | None = None


class PassStep(Strict):
    """One pass: ``- quantize: {mode: static}`` in YAML."""

    name: str
    options: dict[str, Any] = Field(default_factory=dict)


class BenchStep(Strict):
    warmup: int = 10
    iters: int | None = 100
    duration: float | None = None
    batch: int = 1
    threads: int | None = None
    blocks: int = 1
    accuracy: bool = False
    accuracy_limit: int | None = None
    estimate: bool = False


class Recipe(Strict):
    name: str
    source: str
    family: str | None = None
    components: list[str] | None = None
    convert: ConvertStep = Field(default_factory=ConvertStep)
    passes: list[PassStep] = Field(default_factory=list)
    targets: list[str] = Field(default_factory=lambda: ["cpu"])
    bench: BenchStep | None = Field(default_factory=BenchStep)
    budgets: list[dict[str, Any]] = Field(default_factory=list)
    host: str | None = None
    eval: str | None = None  # the user's evaluation set for prune, quantize's guard and bench accuracy

    @field_validator("passes", mode="before")
    @classmethod
    def _passes(cls, value):
        """Accept ``- quantize: {...}``, ``- quantize`` and ``- {name: quantize, ...}``."""
        out = []
        for item in value or []:
            if isinstance(item, str):
                out.append({"name": item})
            elif isinstance(item, dict) and "name" not in item and len(item) == 1:
                (name, options), = item.items()
                out.append({"name": name, "options": options or {}})
            else:
                out.append(item)
        return out


def load_recipe(path: str | Path, targets_dir: list | None = None) -> tuple[Recipe, YamlDoc]:
    """Parse and check a recipe: schema, pass names and target names, all as FILE:LINE errors."""
    doc = load_yaml(path, "recipe")
    if not isinstance(doc.data, dict):
        raise InputError(f"{doc.where()}: a recipe is a mapping (name:, source:, ...)", "see recipes/")
    recipe = validate(Recipe, doc, "recipe")
    for i, step in enumerate(recipe.passes):
        if step.name not in PASSES:
            raise InputError(f"{doc.where(('passes', i))}: unknown pass {step.name!r}",
                             "valid passes: " + ", ".join(PASSES))
    from mmdeploy.targets import list_targets

    known = list_targets(targets_dir)
    for i, name in enumerate(recipe.targets):
        if name not in known:
            raise InputError(f"{doc.where(('targets', i))}: unknown target {name!r}",
                             "valid targets: " + ", ".join(sorted(known)))
    if recipe.budgets:
        from mmdeploy.bench.budgets import BudgetRule

        for i, rule in enumerate(recipe.budgets):
            validate(BudgetRule, doc, "recipe budget", data=rule, loc=("budgets", i))
    check_steps(recipe, doc)
    return recipe, doc


def check_steps(recipe: Recipe, doc: YamlDoc) -> None:
    """Every step's options, checked before the first step runs (an invalid ``method:`` of the
    last pass must not cost a convert first)."""
    for i, s in enumerate(recipe.passes):
        where = doc.where(("passes", i))
        if s.name == "prune":
            from mmdeploy.passes.prune import check_amount, check_method

            _check_prune_options(s.options, where)
            for key, check in (("method", check_method), ("amount", check_amount)):
                if key not in s.options:
                    raise InputError(f"{where}: prune needs {key}:", "e.g. {method: heads, amount: 0.25}")
                try:
                    check(s.options[key])
                except InputError as exc:
                    raise InputError(f"{where}: {exc.message}", exc.hint) from None
        elif s.name in ("quantize", "fp16"):
            options = {"precision": "fp16", **s.options} if s.name == "fp16" else dict(s.options)
            _quantize_options(options, where)
        elif s.name == "simplify" and set(s.options) - {"enabled"}:
            raise InputError(f"{where}: unknown simplify option {sorted(set(s.options) - {'enabled'})[0]!r}",
                             "simplify takes only enabled: true|false")


# --------------------------------------------------------------------------- execution


def plan(recipe: Recipe) -> list[str]:
    """The steps ``run_recipe`` will take, in order (for --dry-run and the run summary)."""
    steps = [f"prune {s.options}" for s in recipe.passes if s.name == "prune"]
    simplify = not any(s.name == "simplify" and s.options.get("enabled") is False for s in recipe.passes)
    steps.append(f"convert {recipe.source} -> fp32 (components {recipe.components or 'all'}, "
                 f"opset {recipe.convert.opset}, simplify {simplify})")
    steps += [f"{s.name} {s.options}" for s in recipe.passes if s.name in ("quantize", "fp16")]
    for t in recipe.targets:
        steps.append(f"compile + bench on {t}" if recipe.bench else f"compile for {t}")
    if recipe.budgets:
        steps.append(f"check {len(recipe.budgets)} budget(s)")
    return steps


def _resolve_source(source: str, recipe_dir: Path) -> str:
    if source.startswith("demo:") or ".py:" in source or Path(source).is_absolute():
        return source
    here = recipe_dir / source
    return str(here) if here.exists() else source


def _pass_function(name: str):
    """The library function of a pass (imported lazily: other engineers' modules)."""
    from mmdeploy.errors import UnsupportedError

    try:
        if name == "prune":
            from mmdeploy.stages.prune import prune as func
        else:
            from mmdeploy.stages.quantize import quantize as func
    except ImportError as exc:
        raise UnsupportedError(f"the {name} pass is not available in this build ({exc})", "update mmdeploy") from None
    return func


def _check_prune_options(options: dict, where: str) -> None:
    import inspect

    params = inspect.signature(_pass_function("prune")).parameters
    unknown = [k for k in options if k not in params or k in ("source", "output")]
    if unknown:
        valid = [k for k in params if k not in ("source", "output")]
        raise InputError(f"{where}: unknown prune option {unknown[0]!r}", "valid: " + ", ".join(valid))


def _quantize_options(options: dict, where: str):
    _pass_function("quantize")
    from mmdeploy.stages.quantize import QuantizeOptions

    try:
        return QuantizeOptions(**options)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InputError(f"{where}: quantize option {'.'.join(map(str, err['loc']))}: {err['msg']}",
                         "see `mmdeploy quantize --help`") from None


def _quantize(prev: Path, out: Path, options: dict, say, where: str) -> None:
    _pass_function("quantize")(prev, out, _quantize_options(options, where), log=say)


def _compile(bundle: Path, out: Path, profile, say) -> Path:
    """The bundle compiled for a local non-ORT target (via mmdeploy.stages.compile), or itself."""
    if profile.backend == "onnxruntime" or (profile.remote and profile.backend == "tensorrt"):
        return bundle  # ORT runs the ONNX; TensorRT engines are built on the device itself
    # OpenVINO IR and .tflite files are portable: compiled here (tflite needs the torch
    # module, which only this machine has), then copied to a remote device as they are
    try:
        from mmdeploy.stages.compile import compile_artifact
    except ImportError:
        say(f"mmdeploy.stages.compile not in this build: {profile.name} compiles at bench time")
        return bundle
    from mmdeploy.artifact import component_dirs

    options = dict(profile.compile)
    if any(m.precision != "fp32" for _, m in component_dirs(bundle)):
        # a quantized graph compiled as-is is checked against PyTorch by cosine, not fp32 atol
        options.setdefault("atol", 1e6)
        options.setdefault("min_cosine", 0.99)
    say(f"compiling {bundle.name} for {profile.name}")
    compile_artifact(bundle, f"{profile.backend}:{profile.precision}", out, options)
    return out


def run_recipe(path: str | Path, output: str | Path, *, targets_dir: list | None = None,
               host: str | None = None, progress=None) -> dict:
    """Execute a recipe into ``output`` (atomic); returns the run summary (also run.json).

    Raises BudgetExceeded after the output is in place when a budget fails.
    """
    import json
    import time

    from mmdeploy.artifact import Manifest, atomic_output, check_output, write_manifest
    from mmdeploy.errors import BudgetExceeded
    from mmdeploy.targets import get_target

    say = progress or (lambda msg: None)
    recipe, doc = load_recipe(path, targets_dir)
    check_output(output)  # before any step
    profiles = [get_target(t, targets_dir, host=host or recipe.host) for t in recipe.targets]
    source = _resolve_source(recipe.source, Path(path).resolve().parent)
    eval_data = None
    if recipe.eval:  # relative to the recipe's folder, like the source
        eval_data = recipe.eval if recipe.eval.startswith("builtin:") else str(
            (Path(path).resolve().parent / recipe.eval).resolve())
    summary: dict[str, Any] = {"recipe": str(path), "name": recipe.name, "source": source, "steps": [],
                               "targets": {}, "passed": True}
    output = Path(output)
    with atomic_output(output) as tmp:
        def step(name: str, started: float, **extra):
            summary["steps"].append({"step": name, "seconds": round(time.perf_counter() - started, 2), **extra})

        for i, s in enumerate(recipe.passes):
            if s.name == "prune":
                prune = _pass_function("prune")
                _check_prune_options(s.options, doc.where(("passes", i)))
                t0 = time.perf_counter()
                say(f"prune {s.options}")
                prune(source, tmp / "pruned", **{**({"eval_data": eval_data} if eval_data else {}), **s.options})
                source = str(tmp / "pruned")
                step("prune", t0, output="pruned")
        from mmdeploy.stages.convert import convert

        t0 = time.perf_counter()
        say(f"convert {source}")
        simplify = not any(s.name == "simplify" and s.options.get("enabled") is False for s in recipe.passes)
        kwargs = {k: v for k, v in recipe.convert.model_dump().items() if v is not None}
        if recipe.family:
            kwargs.setdefault("family", recipe.family)
        convert(source, tmp / "fp32", components=recipe.components, simplify=simplify,
                progress=lambda m: say(f"  {m}"), **kwargs)
        step("convert", t0, output="fp32")
        bundles = [tmp / "fp32"]
        for i, s in enumerate(recipe.passes):
            if s.name in ("quantize", "fp16"):
                t0 = time.perf_counter()
                out = tmp / (s.name if not (tmp / s.name).exists() else f"{s.name}-{len(bundles)}")
                options = {"precision": "fp16", **s.options} if s.name == "fp16" else dict(s.options)
                if eval_data and s.name == "quantize":
                    options.setdefault("eval_data", eval_data)
                say(f"{s.name} {bundles[-1].name} -> {out.name}")
                _quantize(bundles[-1], out, options, lambda m: say(f"  {m}"), doc.where(("passes", i)))
                bundles.append(out)
                step(s.name, t0, output=out.name)
        to_bench = [bundles[0]] if len(bundles) == 1 else [bundles[0], bundles[-1]]
        from mmdeploy.bench.budgets import BudgetFile, BudgetRule

        budgets = BudgetFile(budgets=[BudgetRule(**b) for b in recipe.budgets])
        for profile in profiles:
            t0 = time.perf_counter()
            compiled = [_compile(b, tmp / profile.name / b.name, profile, say) for b in to_bench]
            entry: dict[str, Any] = {"artifacts": [str(c.relative_to(tmp)) for c in compiled]}
            if recipe.bench is not None:
                from mmdeploy.bench import BenchSettings, bench, gate
                from mmdeploy.bench.report import write_report

                say(f"bench on {profile.name}")
                settings = BenchSettings(**{k: v for k, v in recipe.bench.model_dump().items() if k != "estimate"})
                scorer = None
                if eval_data and settings.accuracy:
                    from mmdeploy.stages.eval import scorer as make_scorer

                    settings.eval_data = eval_data
                    scorer = make_scorer(eval_data, limit=settings.accuracy_limit)
                result = bench(compiled, settings, profile, estimate=recipe.bench.estimate, scorer=scorer)
                checks = gate(result, budgets) if not recipe.bench.estimate else []
                write_report(result, tmp / "bench" / profile.name)
                entry.update(passed=result["passed"], failed=[c for c in checks if not c["passed"]],
                             p50_ms={f"{r['artifact']}/{r['component']}": r["p50_ms"] for r in result["results"]},
                             report=f"bench/{profile.name}/report.md")
                summary["passed"] = summary["passed"] and result["passed"]
            summary["targets"][profile.name] = entry
            step(f"target {profile.name}", t0)
        summary["plan"] = plan(recipe)
        (tmp / "run.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        (tmp / "recipe.yaml").write_text(Path(path).read_text())
        write_manifest(tmp, Manifest(kind="model", name=recipe.name, format="run",
                                     metadata={"recipe": recipe.model_dump(), "passed": summary["passed"]}))
    if not summary["passed"]:
        failed = [c for t in summary["targets"].values() for c in t.get("failed", [])]
        first = failed[0]
        raise BudgetExceeded(f"{len(failed)} budget(s) failed; first: {first['where']} {first['check']}: "
                             f"{first['message']}", f"see {output}/bench/*/report.md and junit.xml")
    return summary
