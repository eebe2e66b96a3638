"""A user's own ``nn.Module``: ``SOURCE = path/to/file.py:function``.

The contract (see README, "Your own module"): ``function()`` takes no arguments and returns either

* ``(module, example_inputs)`` where ``example_inputs`` maps input names to tensors (or numpy
  arrays) with a batch axis first; or
* a dict ``{"module": m, "inputs": {...}, "output_names": [...], "dynamic_axes": {...},
  "name": "component"}`` (everything but ``module`` and ``inputs`` optional); or
* a dict of such dicts, keyed by component name, for a model of several networks.

Inputs and outputs get a dynamic batch axis (axis 0) unless ``dynamic_axes`` says otherwise.
Loading the file runs the user's code: that is what they asked for by naming it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.errors import InputError
from mmdeploy.models.base import Adapter, Component


class CustomAdapter(Adapter):
    family = "custom"
    description = "your own nn.Module from path/to/file.py:function"

    def __init__(self, source: Path, *, allow_pickle: bool = False, options: dict | None = None):
        text = str(source)
        file, _, function = text.rpartition(":")
        super().__init__(Path(file), allow_pickle=allow_pickle, options=options)
        self.function = function
        self._components: dict[str, Component] | None = None

    def _build(self) -> Any:
        if not self.source.is_file():
            raise InputError(f"{self.source} does not exist", "SOURCE must be path/to/file.py:function")
        spec = importlib.util.spec_from_file_location(f"mmdeploy_user_{self.source.stem}", self.source)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:  # noqa: BLE001 - the user's code
            raise InputError(f"{self.source} failed to import: {exc.__class__.__name__}: {exc}",
                             "fix the file, or rerun with --debug") from exc
        fn = getattr(module, self.function, None)
        if not callable(fn):
            names = [n for n, v in vars(module).items() if callable(v) and not n.startswith("_")]
            raise InputError(f"{self.source} has no function {self.function!r}",
                             "functions there: " + ", ".join(names[:10]))
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{self.source}:{self.function}() raised {exc.__class__.__name__}: {exc}",
                             "rerun with --debug") from exc

    def components(self) -> dict[str, Component]:
        if self._components is None:
            built = self._build()
            if isinstance(built, dict) and "module" not in built:
                specs = {name: _normalize(value, name) for name, value in built.items()}
            else:
                spec = _normalize(built, "model")
                specs = {spec["name"]: spec}
            self._components = {name: _component(name, spec) for name, spec in specs.items()}
        return self._components

    def torch_model(self):
        comps = self.components()
        return next(iter(comps.values())).module if len(comps) == 1 else {n: c.module for n, c in comps.items()}

    def metadata(self) -> dict[str, Any]:
        return {"function": f"{self.source.name}:{self.function}", "task": None}


def _normalize(value: Any, default_name: str) -> dict:
    import torch

    if isinstance(value, tuple) and len(value) == 2:
        value = {"module": value[0], "inputs": value[1]}
    if not isinstance(value, dict) or not isinstance(value.get("module"), torch.nn.Module) \
            or not isinstance(value.get("inputs"), dict) or not value["inputs"]:
        raise InputError("the build function must return (nn.Module, {input_name: example tensor}) "
                         "or a dict with 'module' and 'inputs'", "see README, 'Your own module'")
    value = dict(value)
    value.setdefault("name", default_name)
    value["inputs"] = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
                       for k, v in value["inputs"].items()}
    return value


def _component(name: str, spec: dict) -> Component:
    import torch

    module = spec["module"].eval()
    examples = spec["inputs"]
    input_names = list(examples)
    with torch.no_grad():
        out = module(*[torch.from_numpy(np.ascontiguousarray(a)) for a in examples.values()])
    count = 1 if isinstance(out, torch.Tensor) else len(out)
    output_names = spec.get("output_names") or (["output"] if count == 1 else [f"output_{i}" for i in range(count)])
    axes = spec.get("dynamic_axes") or {n: {0: "batch"} for n in input_names + list(output_names)}

    def make_inputs(batch: int, seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        feeds = {}
        for key, example in examples.items():
            shape = (batch, *example.shape[1:]) if example.ndim and 0 in axes.get(key, {}) else example.shape
            if example.dtype.kind in "iu":
                feeds[key] = rng.integers(0, int(example.max()) + 1, size=shape).astype(example.dtype)
            elif example.dtype.kind == "b":
                feeds[key] = rng.integers(0, 2, size=shape).astype(bool)
            else:
                feeds[key] = rng.standard_normal(shape).astype(example.dtype)
        return feeds

    return Component(name=name, module=module, input_names=input_names, output_names=list(output_names),
                     dynamic_axes=axes, make_inputs=make_inputs)
