"""The backend protocol (after Polygraphy's runners).

A backend is one module with one class implementing:

* ``available() -> (bool, reason)``: import check and version, no side effects;
* ``compile(onnx_artifact, output_dir, options) -> Manifest``: build this backend's artifact from
  an ONNX component artifact, writing files and (last) the manifest into ``output_dir``;
* ``load(artifact_dir, **options) -> Runner``.

A Runner maps numpy feeds to numpy outputs by name.  Comparison lives apart, in
:mod:`mmdeploy.compare`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from mmdeploy.errors import BackendUnavailable, OutputShapeError


@runtime_checkable
class Runner(Protocol):
    name: str  # e.g. "onnxruntime", "openvino-fp16"
    input_names: list[str]
    output_names: list[str]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class Backend:
    name: str = ""
    format: str = ""  # the manifest "format" this backend writes
    extra: str | None = None  # pip extra that installs it, e.g. "openvino"
    packages: tuple[str, ...] = ()  # distributions recorded in manifests' tool versions

    def available(self) -> tuple[bool, str]:
        raise NotImplementedError

    def require(self) -> None:
        """Raise BackendUnavailable naming the extra to install when the backend is missing."""
        ok, reason = self.available()
        if not ok:
            hint = f'pip install "mmdeploy[{self.extra}]"' if self.extra else None
            raise BackendUnavailable(f"backend {self.name} is unavailable: {reason}", hint)

    def compile(self, onnx_artifact: Path, output_dir: Path, options: dict[str, Any]):
        raise NotImplementedError(f"{self.name} does not compile artifacts")

    def load(self, artifact_dir: Path, **options) -> Runner:
        raise NotImplementedError


def run_static(run_one, feeds: dict[str, np.ndarray], model_batch: int | None, batched: list[str],
               pad: dict[str, dict] | None = None) -> dict[str, np.ndarray]:
    """Run a static-shape model on feeds of any batch size and (padded) length.

    ``batched``: the inputs with a batch axis; only they are cut into slices of ``model_batch``
    (the last slice filled up by repeating its last row, the extra outputs dropped); the others
    (a shared ``scale [1, 1]``) go whole to every run.  ``pad``: input -> {"axis", "length",
    "value", "trim": {output: axis}}; shorter inputs are padded up to ``length`` and outputs that
    carry the same axis (a ``last_hidden_state``) are cut back to the length fed.
    """
    pad = pad or {}
    trims: dict[str, tuple[int, int]] = {}
    fitted = {}
    for name, value in feeds.items():
        value = np.asarray(value)
        rule = pad.get(name)
        if rule and value.shape[rule["axis"]] < rule["length"]:
            fed = value.shape[rule["axis"]]
            for out, axis in (rule.get("trim") or {}).items():
                trims[out] = (int(axis), fed)
            widths = [(0, 0)] * value.ndim
            widths[rule["axis"]] = (0, rule["length"] - fed)
            value = np.pad(value, widths, constant_values=rule.get("value", 0))
        fitted[name] = value
    sliced = [n for n in batched if n in fitted]
    batch = int(np.shape(fitted[sliced[0]])[0]) if sliced else None
    if not model_batch or batch is None or batch == model_batch:
        outputs = run_one(fitted)
    else:
        parts = []
        for start in range(0, batch, model_batch):
            piece = dict(fitted)
            for name in sliced:
                rows = fitted[name][start:start + model_batch]
                if len(rows) < model_batch:
                    rows = np.concatenate([rows, np.repeat(rows[-1:], model_batch - len(rows), axis=0)])
                piece[name] = rows
            out = run_one(piece)
            keep = min(model_batch, batch - start)
            parts.append({k: (v[:keep] if np.ndim(v) and np.shape(v)[0] == model_batch else v) for k, v in out.items()})
        outputs = {k: (np.concatenate([p[k] for p in parts]) if np.ndim(parts[0][k]) and
                       np.shape(parts[0][k])[0] == min(model_batch, batch) else parts[0][k]) for k in parts[0]}
    for name, (axis, length) in trims.items():
        if name in outputs and np.ndim(outputs[name]) > axis:
            outputs[name] = np.take(outputs[name], np.arange(length), axis=axis)
    return outputs


class StaticShapeRunner:
    """A runner over a graph exported with static shapes (``convert --batch N --sequence L``):
    feeds of any batch size and any token length are cut or filled to the built shape.

    Token inputs (integer dtypes) are zero-padded, or cut, to the static length along axis 1;
    outputs whose axis 1 has that length are cut back to the length fed.  The batch is run in
    slices of the static size (see :func:`run_static`).
    """

    def __init__(self, runner, inputs, outputs):
        self.runner = runner
        self.name = runner.name
        self.input_names = list(runner.input_names)
        self.output_names = list(runner.output_names)
        self.specs = {t.name: list(t.shape) for t in inputs}
        first = [t.shape[0] for t in inputs if t.shape]
        self.model_batch = first[0] if first and all(isinstance(d, int) for d in first) else None
        self.batched = [t.name for t in inputs if t.shape and (isinstance(t.shape[0], str) or self.model_batch)]
        self.pad = {}
        for t in inputs:
            if np.dtype(t.dtype).kind in "iu" and len(t.shape) > 1 and isinstance(t.shape[1], int):
                trim = {o.name: 1 for o in outputs if len(o.shape) > 1 and o.shape[1] == t.shape[1]}
                self.pad[t.name] = {"axis": 1, "length": t.shape[1], "value": 0, "trim": trim}

    def fit(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Cut token inputs longer than the static length (padding is done per run)."""
        out = {}
        for name, value in feeds.items():
            rule = self.pad.get(name)
            value = np.asarray(value)
            if rule and value.ndim > 1 and value.shape[1] > rule["length"]:
                value = value[:, :rule["length"]]
            out[name] = value
        return out

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return run_static(self.runner.run, self.fit(feeds), self.model_batch, self.batched, self.pad)


def fit_static(feeds: dict[str, np.ndarray], inputs) -> dict[str, np.ndarray]:
    """Feeds of exactly a static signature: token inputs padded/cut to the static length, every
    batched input's rows repeated or cut to the static batch (for ``reference.npz``, so PyTorch and
    the exported graph see the same tensors)."""
    specs = {t.name: list(t.shape) for t in inputs}
    out = {}
    for name, value in feeds.items():
        value = np.asarray(value)
        shape = specs.get(name)
        if shape and len(shape) > 1 and isinstance(shape[1], int) and value.ndim > 1 and value.dtype.kind in "iu":
            length = shape[1]
            value = value[:, :length] if value.shape[1] >= length else np.pad(
                value, [(0, 0), (0, length - value.shape[1])] + [(0, 0)] * (value.ndim - 2))
        if shape and isinstance(shape[0], int) and value.ndim and value.shape[0] != shape[0]:
            reps = -(-shape[0] // value.shape[0])
            value = np.concatenate([value] * reps)[:shape[0]]
        out[name] = value
    return out


def static_runner(runner, inputs, outputs):
    """``runner`` wrapped in :class:`StaticShapeRunner` when the signature is static (a fixed
    batch, or a fixed token length), and its results checked against the signature
    (:class:`CheckedRunner`)."""
    wrapped = StaticShapeRunner(runner, inputs, outputs)
    return CheckedRunner(wrapped if wrapped.model_batch or wrapped.pad else runner, inputs, outputs)


def fit_static_batches(feeds: list[dict[str, np.ndarray]], inputs) -> list[dict[str, np.ndarray]]:
    """Calibration feeds (one sample or a few each) regrouped into feeds of exactly a static
    signature: the batched inputs' rows concatenated and cut into static-batch slices (the last
    filled up by repetition), token inputs padded/cut to the static length.  Unbatched inputs
    (a shared ``scale [1, 1]``) come from the first feed.  Feeds of a dynamic signature are
    returned as they are."""
    if not feeds:
        return feeds
    first = [t.shape[0] for t in inputs if t.shape]
    model_batch = first[0] if first and all(isinstance(d, int) for d in first) else None
    specs = {t.name: list(t.shape) for t in inputs}
    static_length = any(len(s) > 1 and isinstance(s[1], int) and np.dtype(t.dtype).kind in "iu"
                        for t, s in ((t, specs[t.name]) for t in inputs))
    if not model_batch and not static_length:
        return feeds
    if not model_batch:
        return [fit_static(f, inputs) for f in feeds]
    # fit lengths sample by sample first (captions of different lengths cannot be concatenated)
    fitted = [fit_static(f, [t.model_copy(update={"shape": ["batch", *t.shape[1:]]}) if t.shape else t
                             for t in inputs]) for f in feeds]
    batched = [n for n in fitted[0] if specs.get(n) and (isinstance(specs[n][0], str) or specs[n][0] == model_batch)]
    rows = {n: np.concatenate([f[n] for f in fitted]) for n in batched}
    total = len(next(iter(rows.values()))) if rows else model_batch
    out = []
    for start in range(0, total, model_batch):
        piece = dict(fitted[0])
        for name, value in rows.items():
            part = value[start:start + model_batch]
            if len(part) < model_batch:
                part = np.concatenate([part, np.repeat(part[-1:], model_batch - len(part), axis=0)])
            piece[name] = part
        out.append(piece)
    return out


def check_outputs(runner_name: str, inputs, outputs, feeds: dict[str, np.ndarray],
                  results: dict[str, np.ndarray]) -> None:
    """Raise :class:`OutputShapeError` when an output's symbolic dim (``batch``, ``sequence``)
    differs from the size the feeds gave that dim.  A runtime that computes a shape wrong (seen:
    OpenVINO's CPU plugin under flush-to-zero returned ``(0, 16)`` for a batch of 1) must give an
    error naming it, never a result."""
    bound: dict[str, int] = {}
    for spec in inputs:
        value = feeds.get(spec.name)
        if value is None:
            continue
        shape = np.shape(value)
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and axis < len(shape):
                bound.setdefault(dim, int(shape[axis]))
    for spec in outputs:
        value = results.get(spec.name)
        if value is None:
            continue
        shape = np.shape(value)
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and dim in bound and axis < len(shape) and shape[axis] != bound[dim]:
                raise OutputShapeError(
                    f"{runner_name} returned {spec.name} of shape {tuple(shape)}: axis {axis} ({dim}) should be "
                    f"{bound[dim]} for these inputs ({', '.join(f'{k} {tuple(np.shape(v))}' for k, v in feeds.items())})",
                    "the runtime computed a wrong shape; rerun with another backend (and report it)")


class CheckedRunner:
    """A runner whose every result is checked against the I/O signature (:func:`check_outputs`);
    every other attribute is the wrapped runner's."""

    def __init__(self, runner, inputs, outputs):
        self.runner, self.inputs, self.outputs = runner, list(inputs), list(outputs)

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = self.runner.run(feeds)
        check_outputs(self.runner.name, self.inputs, self.outputs, feeds, results)
        return results
