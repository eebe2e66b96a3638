"""YAML loading shared by recipes, target profiles and budgets: one door, file:line errors.

Every YAML file the project reads goes through :func:`load_yaml` and :func:`validate`, so a
mistake is reported as ``FILE:LINE: what``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mmdeploy.errors import InputError

T = TypeVar("T", bound=BaseModel)



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
