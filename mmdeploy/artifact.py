"""Artifact directories and their manifests.

An artifact is a directory holding its files plus ``manifest.json``.  Two kinds exist:

* ``component``: one deployable network in one format (an ONNX graph, an OpenVINO IR, a
  ``.tflite`` file, a TensorRT bundle or engine, one half of a split...).  It may carry
  ``reference.npz``: inputs and PyTorch outputs used to verify every later stage.
* ``model``: a bundle (what ``convert``/``quantize`` write at ``--output``) whose manifest lists
  its component artifacts (sub-directories) and the model-level metadata (family, head,
  preprocessing files).

Manifests are written last and atomically; whole outputs are built in a temporary sibling
directory and renamed into place, so a crashed run never leaves something that looks complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmdeploy import __version__
from mmdeploy.errors import InputError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
REFERENCE_NAME = "reference.npz"
LOG_DIR = "logs"  # a command's library output (mmdeploy.logs); not part of any artifact


class TensorSpec(BaseModel):
    """One input or output: name, numpy dtype name, shape with symbolic dims as strings."""

    name: str
    dtype: str
    shape: list[int | str]


class FileEntry(BaseModel):
    sha256: str
    bytes: int


class PassRecord(BaseModel):
    """A pass applied to produce this artifact: its name, typed params and what it changed."""

    name: str
    params: dict[str, Any] = Field(default_factory=dict)
    report: dict[str, Any] = Field(default_factory=dict)


class ArtifactRef(BaseModel):
    """An entry of a model bundle: a component artifact in a sub-directory."""

    path: str
    component: str
    format: str
    precision: str = "fp32"
    target: str | None = None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")

    schema_version: int = SCHEMA_VERSION
    kind: Literal["component", "model"] = "component"
    name: str
    family: str | None = None
    format: str | None = None  # onnx, openvino, tflite, tensorrt-bundle, tensorrt, ...
    precision: str = "fp32"
    target: str | None = None
    created_by: str = f"mmdeploy {__version__}"
    source: dict[str, Any] | None = None  # {"path", "sha256"}
    parent: dict[str, Any] | None = None  # {"path", "manifest_sha256"}
    passes: list[PassRecord] = Field(default_factory=list)
    tools: dict[str, str] = Field(default_factory=dict)
    inputs: list[TensorSpec] = Field(default_factory=list)
    outputs: list[TensorSpec] = Field(default_factory=list)
    parity: dict[str, Any] = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ArtifactRef] = Field(default_factory=list)  # kind == "model" only
    files: dict[str, FileEntry] = Field(default_factory=dict)


# --------------------------------------------------------------------------- hashing


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(path: str | Path) -> str:
    """sha256 of a file, or of a directory's files (relative names and contents, sorted)."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in _files(path):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def _files(directory: Path) -> list[Path]:
    """The files of an artifact directory, sorted; its top-level ``logs/`` excluded."""
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and p.relative_to(directory).parts[0] != LOG_DIR)


def tool_versions(*packages: str) -> dict[str, str]:
    """Installed versions of the given distributions (plus mmdeploy and python)."""
    import platform

    found = {"mmdeploy": __version__, "python": platform.python_version()}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found


# --------------------------------------------------------------------------- manifests


def write_manifest(directory: str | Path, manifest: Manifest) -> Manifest:
    """Hash every file under ``directory`` into the manifest and write it atomically, last."""
    directory = Path(directory)
    files = {}
    for file in _files(directory):
        rel = file.relative_to(directory).as_posix()
        if rel == MANIFEST_NAME:  # sub-artifacts' manifests are hashed like any other file
            continue
        files[rel] = FileEntry(sha256=sha256_file(file), bytes=file.stat().st_size)
    manifest.files = files
    fd, tmp = tempfile.mkstemp(prefix=".manifest.", dir=directory)
    with os.fdopen(fd, "w") as fh:
        fh.write(manifest.model_dump_json(indent=2))
        fh.write("\n")
    os.replace(tmp, directory / MANIFEST_NAME)
    return manifest


def read_manifest(directory: str | Path) -> Manifest:
    directory = Path(directory)
    if not directory.exists():
        raise InputError(f"{directory} does not exist", "pass an artifact directory written by mmdeploy")
    path = directory / MANIFEST_NAME if directory.is_dir() else directory
    if not path.is_file():
        raise InputError(
            f"{directory} is not an mmdeploy artifact (no {MANIFEST_NAME})",
            "pass a directory written by `mmdeploy convert`, `compile` or `quantize`",
        )
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (ValueError, ValidationError) as exc:
        raise InputError(f"{path} is not a valid manifest: {str(exc).splitlines()[0]}",
                         "re-create the artifact") from None


def verify_files(directory: str | Path) -> list[str]:
    """Names of files whose sha256 no longer matches the manifest (missing ones included)."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    bad = []
    for rel, entry in manifest.files.items():
        file = directory / rel
        if not file.is_file() or sha256_file(file) != entry.sha256:
            bad.append(rel)
    return bad


def artifact_size(directory: str | Path) -> int:
    """Bytes of the artifact's files, manifest excluded."""
    return sum(e.bytes for e in read_manifest(directory).files.values())


def component_dirs(path: str | Path) -> list[tuple[Path, Manifest]]:
    """The component artifacts under ``path``: itself if it is one, else a bundle's entries."""
    path = Path(path)
    manifest = read_manifest(path)
    if manifest.kind == "component":
        return [(path, manifest)]
    return [(path / ref.path, read_manifest(path / ref.path)) for ref in manifest.artifacts]


def bundle_dir(component_dir: str | Path) -> Path | None:
    """The model bundle a component artifact lives in, if any (its parent with a model manifest)."""
    parent = Path(component_dir).resolve().parent
    try:
        if (parent / MANIFEST_NAME).is_file() and read_manifest(parent).kind == "model":
            return parent
    except InputError:
        pass
    return None


# --------------------------------------------------------------------------- atomic outputs


@contextlib.contextmanager
def atomic_output(final: str | Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary directory that is renamed to ``final`` when the block succeeds.

    On any exception the temporary directory is removed and ``final`` is left untouched.  An
    existing ``final`` is replaced only if it is an mmdeploy artifact (has a manifest) or empty,
    so a typo in ``--output`` never deletes a user's directory.
    """
    final = Path(final).absolute()
    if final.exists():
        if not final.is_dir():
            raise InputError(f"--output {final} exists and is a file", "choose a directory path")
        if any(final.iterdir()) and not (final / MANIFEST_NAME).is_file():
            raise InputError(
                f"--output {final} exists and is not an mmdeploy artifact",
                "choose a new or empty directory",
            )
        if not overwrite:
            raise InputError(f"--output {final} already exists", "remove it or pass --force")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


# --------------------------------------------------------------------------- reference data


def save_reference(directory: str | Path, cases: list[tuple[dict, dict]]) -> Path:
    """Store verification cases: ``[(feeds, outputs), ...]`` as numpy arrays in one .npz."""
    import numpy as np

    arrays = {}
    for i, (feeds, outputs) in enumerate(cases):
        for name, value in feeds.items():
            arrays[f"{i}/input/{name}"] = np.asarray(value)
        for name, value in outputs.items():
            arrays[f"{i}/output/{name}"] = np.asarray(value)
    path = Path(directory) / REFERENCE_NAME
    np.savez_compressed(path, **arrays)
    return path


def load_reference(directory: str | Path) -> list[tuple[dict, dict]]:
    """Read the cases written by :func:`save_reference` (empty list if there are none)."""
    import numpy as np

    path = Path(directory) / REFERENCE_NAME
    if not path.is_file():
        return []
    cases: dict[int, tuple[dict, dict]] = {}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            index, role, name = key.split("/", 2)
            feeds, outputs = cases.setdefault(int(index), ({}, {}))
            (feeds if role == "input" else outputs)[name] = data[key]
    return [cases[i] for i in sorted(cases)]
