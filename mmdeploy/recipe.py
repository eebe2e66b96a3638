"""Recipes: a whole deployment declared in YAML, and YAML loading with file:line errors.

A recipe lists the source checkpoint, the components, the passes with their options, the
targets, the bench settings and the budgets; ``mmdeploy run RECIPE.yaml --output DIR``
executes it (:mod:`mmdeploy.bench.pipeline`).  Example::

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
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mmdeploy.errors import InputError

T = TypeVar("T", bound=BaseModel)

# pass names a recipe may list -> what runs them (the owning engineers' library functions)
PASSES = ("simplify", "optimize", "fp16", "quantize", "prune")


# --------------------------------------------------------------------------- YAML with lines


class YamlDoc:
    """Parsed YAML plus the line (1-based) of every mapping key / sequence item, by path."""

    def __init__(self, path: Path, data: Any, lines: dict[tuple, int]):
        self.path = path
        self.data = data
        self.lines = lines

    def line(self, loc: tuple) -> int:
        """Line of the deepest known prefix of ``loc`` (a pydantic error location)."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), 1)

    def where(self, loc: tuple = ()) -> str:
        return f"{self.path}:{self.line(loc)}"


def load_yaml(path: str | Path, what: str = "YAML file") -> YamlDoc:
    """Parse ``path`` keeping line marks; malformed YAML is an InputError ``FILE:LINE: ...``."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path} does not exist", "check the path")
    text = path.read_text(errors="replace")
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple, int] = {}
        data = _construct(loader, node, (), lines) if node is not None else None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise InputError(f"{path}:{line}: malformed {what}: {exc.problem or exc.context}",
                         "fix the YAML syntax") from None
    except yaml.YAMLError as exc:
        raise InputError(f"{path}: malformed {what}: {str(exc).splitlines()[0]}", "fix the YAML syntax") from None
    finally:
        loader.dispose()
    return YamlDoc(path, data, lines)


def _construct(loader, node, loc: tuple, lines: dict) -> Any:
    import yaml

    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            lines[loc + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(loader, value_node, loc + (key,), lines)
            lines[loc + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(loader, item, loc + (i,), lines) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def validate(model: type[T], doc: YamlDoc, what: str, data: Any = None, loc: tuple = ()) -> T:
    """``model.model_validate(data)``; the first error becomes ``FILE:LINE: field: message``."""
    data = doc.data if data is None else data
    if data is None:
        raise InputError(f"{doc.path}:1: empty {what}", f"see the {what} schema in the docs")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        err_loc = loc + tuple(err["loc"])
        field = ".".join(str(p) for p in err["loc"]) or "document"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {err['loc'][-1]!r}"
        raise InputError(f"{doc.where(err_loc)}: invalid {what}: {field}: {msg}",
                         f"see the {what} schema in the docs") from None


# --------------------------------------------------------------------------- recipe schema


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConvertStep(Strict):
    opset: int = 17
    atol: float | None = None
    family: str | None = None
    allow_pickle: bool = False


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


def load_recipe(path: str | Path) -> tuple[Recipe, YamlDoc]:
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

    known = list_targets()
    for i, name in enumerate(recipe.targets):
        if name not in known:
            raise InputError(f"{doc.where(('targets', i))}: unknown target {name!r}",
                             "valid targets: " + ", ".join(sorted(known)))
    if recipe.budgets:
        from mmdeploy.bench.budgets import BudgetRule

        for i, rule in enumerate(recipe.budgets):
            validate(BudgetRule, doc, "recipe budget", data=rule, loc=("budgets", i))
    return recipe, doc
