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
    for _, axis, dim, shape in _symbolic_dims(inputs, feeds):
        bound.setdefault(dim, int(shape[axis]))
    for spec, axis, dim, shape in _symbolic_dims(outputs, results):
        if dim in bound and shape[axis] != bound[dim]:
            raise OutputShapeError(
                f"{runner_name} returned {spec.name} of shape {tuple(shape)}: axis {axis} ({dim}) should be "
                f"{bound[dim]} for these inputs ({', '.join(f'{k} {tuple(np.shape(v))}' for k, v in feeds.items())})",
                "the runtime computed a wrong shape; rerun with another backend (and report it)")


def _symbolic_dims(specs, values: dict):
    """(spec, axis, dim name, value's shape) for every symbolic dim of ``specs`` that ``values`` has."""
    for spec in specs:
        value = values.get(spec.name)
        if value is None:
            continue
        shape = np.shape(value)
        for axis, dim in enumerate(spec.shape):
            if isinstance(dim, str) and axis < len(shape):
                yield spec, axis, dim, shape


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


# --------------------------------------------------------------------------- feeds vs the signature


def feed_limits(model_file: str | Path | None, inputs, max_sequence: int | None = None) -> dict[str, dict]:
    """What a signature's shapes do not say, per input: ``{"vocab": n}`` for an integer input that
    indexes an embedding table (n = the table's rows, read from the ONNX graph), ``{"max_dims":
    {axis: n}}`` for a ``sequence`` axis when the model has a maximum length (``max_sequence``:
    CLIP's 77, a BERT's ``max_position_embeddings``)."""
    limits: dict[str, dict] = {}
    if max_sequence:
        for t in inputs:
            axes = {i: int(max_sequence) for i, d in enumerate(t.shape) if d == "sequence"}
            if axes:
                limits.setdefault(t.name, {})["max_dims"] = axes
    try:
        import onnx  # the device runtime has no onnx: then the shapes alone are checked
    except ImportError:
        return limits
    if model_file is not None and Path(model_file).is_file():
        graph = onnx.load(str(model_file), load_external_data=False).graph
        tables = {i.name: list(i.dims) for i in graph.initializer}
        # the integer inputs, followed through ops that keep their values (``view(-1, L)``, casts)
        ids = {t.name: t.name for t in inputs if np.dtype(t.dtype).kind in "iu"}
        for node in graph.node:  # topologically sorted
            if node.op_type in ("Reshape", "Cast", "Flatten", "Squeeze", "Unsqueeze", "Identity") \
                    and node.input and node.input[0] in ids:
                for out in node.output:
                    ids[out] = ids[node.input[0]]
            elif node.op_type == "Gather" and len(node.input) == 2 and node.input[1] in ids \
                    and tables.get(node.input[0]):
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if axis == 0:
                    vocab, entry = int(tables[node.input[0]][0]), limits.setdefault(ids[node.input[1]], {})
                    entry["vocab"] = min(vocab, entry.get("vocab", vocab))
    return limits


def check_feeds(signature_inputs, feeds: dict[str, Any], limits: dict[str, dict] | None = None) -> None:
    """Raise InputError (one line) unless ``feeds`` fit the signature: the names, dtypes, ranks,
    fixed dims, the same size for a symbolic dim shared by several inputs (``batch``,
    ``sequence``), and ``limits`` (:func:`feed_limits`): integer ids within ``[0, vocab)``, a
    sequence no longer than the model's maximum.  Every runner, the server and the edge client
    call it before a runtime sees the feeds, so a runtime's own error text never reaches a user
    (and a negative id, which Gather wraps around, never gives a wrong answer)."""
    from mmdeploy.errors import InputError

    specs = {t.name: t for t in signature_inputs}
    limits = limits or {}
    unknown = sorted(set(feeds) - set(specs))
    if unknown:
        raise InputError(f"unknown input {unknown[0]!r}", "the model takes " + ", ".join(specs))
    missing = [n for n in specs if n not in feeds]
    if missing:
        raise InputError(f"missing input {missing[0]!r}", "the model takes " + ", ".join(specs))
    sizes: dict[str, tuple[str, int]] = {}
    for name, spec in specs.items():
        value = np.asarray(feeds[name])
        shape = value.shape
        if value.dtype != np.dtype(spec.dtype):
            raise InputError(f"{name}: datatype {value.dtype.name} given, {spec.dtype} expected",
                             f"send {name} as {spec.dtype}")
        want = [d if isinstance(d, int) and d > 0 else -1 for d in spec.shape]
        if len(shape) != len(spec.shape) or any(w > 0 and w != got for w, got in zip(want, shape)):
            raise InputError(f"{name}: shape {list(shape)} given, {want} expected",
                             "-1 is any size; the other dims are fixed")
        for axis, (dim, got) in enumerate(zip(spec.shape, shape)):
            if isinstance(dim, str) and dim:
                if dim in sizes and sizes[dim][1] != got:
                    other, size = sizes[dim]
                    raise InputError(f"{name}: {dim} {got} given, but {other} has {dim} {size}",
                                     f"give every input the same {dim}")
                sizes.setdefault(dim, (name, got))
            top = limits.get(name, {}).get("max_dims", {}).get(axis)
            if top is not None and got > top:
                raise InputError(f"{name}: {dim if isinstance(dim, str) else f'axis {axis}'} {got} given, "
                                 f"the model takes at most {top}", f"truncate {name} to {top}")
        vocab = limits.get(name, {}).get("vocab")
        if vocab is not None and value.size:
            low, high = int(value.min()), int(value.max())
            if low < 0 or high >= vocab:
                bad = low if low < 0 else high
                raise InputError(f"{name}: id {bad} is outside the vocabulary [0, {vocab})",
                                 f"send token ids from 0 to {vocab - 1}")
