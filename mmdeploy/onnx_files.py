"""An ONNX model as files: ``model.onnx`` plus the external-data files its tensors point to.

Past protobuf's 2 GB limit (ViT-H/14, ViT-bigG, EVA towers) a model cannot be one file: its
weights live in external data beside the graph.  Every stage that copies, hashes, sizes or
rewrites a model goes through these helpers, so none copies ``model.onnx`` alone.  The graph is
read without its weights (``load_external_data=False``); weights are moved tensor by tensor, so
no helper holds a second full copy of the model in memory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

# protobuf refuses messages of 2 GiB; leave room for the graph itself
PROTOBUF_LIMIT = 2**31 - 1
INLINE_LIMIT = 1_900_000_000


def _tensors(model):
    from onnx.external_data_helper import _get_all_tensors

    return _get_all_tensors(model)


def _location(tensor) -> str | None:
    from onnx.external_data_helper import uses_external_data

    if not uses_external_data(tensor):
        return None
    for entry in tensor.external_data:
        if entry.key == "location":
            return entry.value
    return None


def load_graph(path: str | Path):
    """The ModelProto without its external weights (cheap for any size)."""
    import onnx

    return onnx.load(str(path), load_external_data=False)


def data_files(path: str | Path, model=None) -> list[Path]:
    """The external-data files of the ONNX file at ``path`` (relative to its folder), sorted; [] when
    its weights are inline."""
    path = Path(path)
    model = model if model is not None else load_graph(path)
    names = sorted({loc for t in _tensors(model) if (loc := _location(t))})
    return [path.parent / name for name in names]


def has_external_data(path: str | Path) -> bool:
    return bool(data_files(path))


def model_bytes(path: str | Path) -> int:
    """Bytes of the graph file and its external data."""
    path = Path(path)
    return path.stat().st_size + sum(f.stat().st_size for f in data_files(path) if f.is_file())


def folder_bytes(path: str | Path) -> int:
    """Bytes of every file under a folder (a work directory's build, before any manifest)."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def copy_model(src: str | Path, dest: str | Path) -> Path:
    """Copy an ONNX file with its external-data files; ``dest`` is a folder or a file path.  A
    renamed graph keeps the data files' names (the graph records them)."""
    src, dest = Path(src), Path(dest)
    target = dest / src.name if dest.is_dir() else dest
    files = data_files(src)
    shutil.copy2(src, target)
    for file in files:
        out = target.parent / file.relative_to(src.parent)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, out)
    return target


def consolidate(path: str | Path, location: str | None = None) -> list[str]:
    """Move every external tensor of ``path`` into one data file (``model.onnx.data``), streaming
    tensor by tensor, and delete the old per-tensor files (torch.onnx.export writes one file per
    weight past 2 GB).  Returns the data file names now used."""
    path = Path(path)
    model = load_graph(path)
    old = data_files(path, model)
    location = location or path.name + ".data"
    if not old or [f.name for f in old] == [location]:
        return [f.name for f in old]
    _gather(model, path.parent, path, location)
    for file in old:
        if file.name != location and file.is_file():
            file.unlink()
    return [location]


def save_with_data(model, src_dir: str | Path, path: str | Path) -> list[str]:
    """Save ``model`` (a graph whose external tensors point into ``src_dir``, e.g. one half of a
    split) at ``path`` with its own ``<name>.data``, copying only the tensors it uses."""
    import onnx

    path = Path(path)
    if not any(_location(t) for t in _tensors(model)):
        onnx.save(model, str(path))
        return []
    location = path.name + ".data"
    _gather(model, Path(src_dir), path, location)
    return [location]


def _gather(model, src_dir: Path, path: Path, location: str) -> None:
    """Write the external tensors of ``model`` (read from ``src_dir``) into ``path.parent/location``
    one by one, point the graph at it and save the graph at ``path``."""
    import onnx

    target = path.parent / (location + ".tmp")
    offset = 0
    with open(target, "wb") as out:
        for tensor in _tensors(model):
            loc = _location(tensor)
            if not loc:
                continue
            info = {e.key: e.value for e in tensor.external_data}
            with open(src_dir / loc, "rb") as src:
                src.seek(int(info.get("offset", 0)))
                length = int(info["length"]) if "length" in info else None
                pad = (-offset) % 4096  # aligned like onnx's own writer
                out.write(b"\0" * pad)
                offset += pad
                written = _copy_stream(src, out, length)
            del tensor.external_data[:]
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(written))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += written
    onnx.save(model, str(path))
    os.replace(target, path.parent / location)


def _copy_stream(src, out, length: int | None, chunk: int = 1 << 24) -> int:
    written = 0
    while length is None or written < length:
        block = src.read(chunk if length is None else min(chunk, length - written))
        if not block:
            break
        out.write(block)
        written += len(block)
    return written


def externalize(path: str | Path, size_threshold: int = 1024) -> list[str]:
    """Rewrite an inline model with its tensors in ``model.onnx.data`` (small models: tests, and
    users who ask for the external form)."""
    import onnx

    path = Path(path)
    if has_external_data(path):
        return consolidate(path)
    model = onnx.load(str(path))
    location = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=size_threshold)
    match_mode(path)
    return [location]


def match_mode(path: str | Path) -> None:
    """onnx creates data files 0600; give them the graph file's mode (the user's umask)."""
    path = Path(path)
    for file in data_files(path):
        if file.is_file():
            shutil.copymode(path, file)


def save(model, path: str | Path, external: bool | None = None) -> None:
    """Save a ModelProto whose weights are in memory; external data when asked or when it would
    not fit one protobuf."""
    import onnx

    path = Path(path)
    if external is None:
        external = model.ByteSize() > INLINE_LIMIT
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
        match_mode(path)
    else:
        onnx.save_model(model, str(path))


@contextlib.contextmanager
def checkable(model):
    """The model's external initializers swapped for empty stand-ins inside the block.

    onnx.checker on an in-memory model looks for its external-data files relative to the current
    directory; a graph built from a saved one (a split half, a graph with a preamble merged in)
    has none there yet.  Structure is what such a check is for; the weights are put back after."""
    stash = {}
    for i, tensor in enumerate(model.graph.initializer):
        if _location(tensor):
            import onnx

            stash[i] = onnx.TensorProto()
            stash[i].CopyFrom(tensor)
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            del tensor.dims[:]
            tensor.dims.append(0)
            tensor.raw_data = b""
    try:
        yield model
    finally:
        by_name = {t.name: t for t in stash.values()}
        for tensor in model.graph.initializer:
            if tensor.name in by_name:
                tensor.CopyFrom(by_name[tensor.name])


def restore_weights(merged, original) -> None:
    """Put ``original``'s external initializers back into ``merged`` (a model made from it inside
    :func:`checkable`)."""
    by_name = {t.name: t for t in original.graph.initializer if _location(t)}
    for tensor in merged.graph.initializer:
        if tensor.name in by_name:
            tensor.CopyFrom(by_name[tensor.name])


def check(path: str | Path) -> None:
    """onnx.checker on the file (the path form handles external data and models past 2 GB)."""
    import onnx

    onnx.checker.check_model(str(path))
