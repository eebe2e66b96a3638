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
import errno
import hashlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mmdeploy import __version__
from mmdeploy.errors import InputError, Terminated

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
    tmp = directory / f".manifest.{secrets.token_hex(4)}"
    try:
        with open(tmp, "x") as fh:  # plain open: the user's umask applies (mkstemp would give 0600)
            fh.write(manifest.model_dump_json(indent=2))
            fh.write("\n")
        os.replace(tmp, directory / MANIFEST_NAME)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
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
    except OSError as exc:
        raise InputError(f"{path} cannot be read ({exc.strerror or exc.__class__.__name__})",
                         "check the file's permissions") from None
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


def ensure_unmodified(directory: str | Path, force: bool = False, log=None) -> None:
    """Refuse an artifact whose files changed since its manifest was written (unless ``force``).

    A bundle's manifest hashes its components' files and manifests too, so one check covers all.
    """
    bad = verify_files(directory)
    if not bad:
        return
    names = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    if force:
        if log:
            log(f"warning: {directory}: files modified since written: {names} (--force)")
        return
    raise InputError(f"{directory}: {names} changed since the artifact was written (sha256 mismatch)",
                     "re-create the artifact, or pass --force to use it as it is")


def artifact_size(directory: str | Path) -> int:
    """Bytes of the model's own files: the manifest and ``reference.npz`` (verification data) excluded."""
    return sum(e.bytes for rel, e in read_manifest(directory).files.items()
               if Path(rel).name != REFERENCE_NAME)


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


def max_sequence(component_dir: str | Path) -> int | None:
    """The maximum text length recorded in the bundle a component lives in (CLIP's
    ``text_max_length``, an encoder's ``max_position_embeddings``); None if unknown."""
    bundle = bundle_dir(component_dir)
    meta = (read_manifest(bundle).metadata or {}) if bundle else {}
    value = meta.get("text_max_length") or (meta.get("config") or {}).get("max_position_embeddings")
    return value if isinstance(value, int) and value > 0 else None


# --------------------------------------------------------------------------- atomic outputs

# errno -> what a user reads: the cause of a failed write, named with its path
_DISK_CAUSES = {errno.EROFS: "the file system is read-only", errno.ENOSPC: "no space left on the device",
                errno.EDQUOT: "the disk quota is exceeded", errno.EACCES: "permission denied",
                errno.EPERM: "permission denied", errno.ENOTDIR: "a part of the path is a file, not a folder",
                errno.ENAMETOOLONG: "the name is too long"}
_DISK_HINTS = {errno.ENOSPC: "free some space or choose --output on another disk",
               errno.EDQUOT: "free some space or choose --output on another disk"}


def disk_error(exc: OSError, path: str | Path) -> InputError | None:
    """The one-line error for a write that failed because of the place (read-only, full, no
    permission...), naming the path; None for other OSErrors (they are not the user's to fix)."""
    cause = _DISK_CAUSES.get(exc.errno)
    if cause is None:
        return None
    where = exc.filename or path
    return InputError(f"cannot write {where}: {cause}" if where else f"a write failed: {cause}",
                      _DISK_HINTS.get(exc.errno, "choose --output in a writable folder"))


def place_error(exc: BaseException, path: str | Path = "") -> InputError | None:
    """:func:`disk_error` for ``exc`` or any exception it was raised from (a stage that wrapped
    the OSError, a runtime that turned it into text: "[Errno 28] No space left on device")."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and disk_error(exc, path) is not None:
            return disk_error(exc, path)
        for code in (errno.ENOSPC, errno.EROFS, errno.EDQUOT):
            if f"[Errno {code}]" in str(exc) or os.strerror(code) in str(exc):
                return disk_error(OSError(code, os.strerror(code)), path)
        exc = exc.__cause__ or exc.__context__
    return None


def _umask() -> int:
    """The process's umask, read without changing it (Linux); 0o022 where it cannot be read."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def follow_umask(path: str | Path, directory: bool = False) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have under the user's umask."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def sigterm_raises(on_signal: Callable[[int], None] | None = None) -> Iterator[None]:
    """While the block runs, SIGTERM raises :class:`~mmdeploy.errors.Terminated` (a
    KeyboardInterrupt), so every ``finally`` and cleanup runs as on Ctrl-C.

    Installed only in the main thread and only over the default disposition: a handler the
    user's process installed (or an outer block's) is left alone; the previous one is restored.
    ``on_signal`` is told of SIGTERM and SIGINT first: a library may turn the interrupt into
    another error (an import that fails with "initialization failed"), and the CLI still exits
    130 / 143 saying so."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    mine = {}
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        mine[signal.SIGTERM] = (signal.SIG_DFL, Terminated)
    if on_signal is not None and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        mine[signal.SIGINT] = (signal.default_int_handler, KeyboardInterrupt)

    def handler(signum, frame):
        if on_signal is not None:
            on_signal(signum)
        raise mine[signum][1]()

    for sig in mine:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for sig, (previous, _) in mine.items():
            signal.signal(sig, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM while a cleanup runs (a second Ctrl-C must not leave half a
    temporary folder behind); the interrupt is raised once the block is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if caught:  # delivered again, now to the handler that was there before
            signal.raise_signal(caught[0])


def _remove(path: Path) -> None:
    with signals_deferred():
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def scratch_dir(prefix: str, dir: str | Path | None = None) -> Iterator[Path]:
    """A temporary directory (under $TMPDIR unless ``dir``) removed on every exit path: success,
    error, Ctrl-C and SIGTERM; a drop-in for ``tempfile.TemporaryDirectory(prefix=...)``."""
    with sigterm_raises():
        path = Path(tempfile.mkdtemp(prefix=prefix, dir=dir))
        try:
            yield path
        finally:
            _remove(path)


def _foreign_files(final: Path, manifest: Manifest | None) -> list[str]:
    """Files under ``final`` mmdeploy did not write: not in its manifest, not the manifest, not logs."""
    known = set(manifest.files) | {MANIFEST_NAME} if manifest else set()
    found = []
    for p in sorted(final.rglob("*")):
        rel = p.relative_to(final)
        if p.is_dir() or rel.parts[0] == LOG_DIR:
            continue
        if rel.as_posix() not in known:
            found.append(rel.as_posix())
    return found


def _names(items: list[str], limit: int = 3) -> str:
    return ", ".join(items[:limit]) + (f" and {len(items) - limit} more" if len(items) > limit else "")


def _origin(manifest: Manifest) -> tuple[str | None, str | None]:
    source = (manifest.source or {}).get("path")
    parent = (manifest.parent or {}).get("path")
    return (str(source) if source else None), (str(parent) if parent else None)


def check_output(final: str | Path, *, force: bool = False, source: str | Path | None = None,
                 parent: str | Path | None = None, format: str | None = None) -> Path:
    """Decide, before any work, whether ``final`` may be written; returns it as an absolute path.

    Allowed: a new path, an empty directory, or a complete mmdeploy artifact of the same kind
    (``format``) and origin (``source``: the checkpoint; ``parent``: the input artifact) -- only the
    fields given are compared.  Another artifact, or one whose files changed, needs ``force``.
    Files mmdeploy did not write are never deleted: the command stops and names them, even
    with ``force``.  The nearest existing folder must be writable (read-only, no permission:
    one line naming the path and the cause)."""
    final = Path(final).absolute()
    flag = "pass --force to replace it, or choose another --output"
    if final.exists() or final.is_symlink():
        if not final.is_dir():
            raise InputError(f"--output {final} exists and is a file", "choose a directory path")
        if any(final.iterdir()):
            manifest = None
            if (final / MANIFEST_NAME).is_file():
                try:
                    manifest = read_manifest(final)
                except InputError:
                    manifest = None
            foreign = _foreign_files(final, manifest)
            if foreign:
                what = "exists and is not an mmdeploy artifact" if manifest is None else "holds files mmdeploy did not write"
                raise InputError(f"--output {final} {what} ({_names(foreign)})",
                                 "choose a new or empty directory (mmdeploy never deletes files it did not "
                                 "write, even with --force)")
            missing = [rel for rel, e in manifest.files.items()
                       if not (final / rel).is_file() or (final / rel).stat().st_size != e.bytes]
            if missing and not force:
                raise InputError(f"--output {final} holds an incomplete or modified artifact "
                                 f"({_names(missing)} changed)", flag)
            have_source, have_parent = _origin(manifest)
            differs = []
            if format is not None and manifest.format != format:
                differs.append(f"a {manifest.format or manifest.kind} artifact, not {format}")
            if source is not None and have_source != str(source):
                differs.append(f"made from {have_source or 'another source'}, not {source}")
            if parent is not None and have_parent != str(parent):
                differs.append(f"made from {have_parent or 'another input'}, not {parent}")
            if differs and not force:
                raise InputError(f"--output {final} holds another artifact ({'; '.join(differs)})", flag)
    _check_writable(final)
    return final


def _check_writable(final: Path) -> None:
    """The nearest existing ancestor of ``final`` must be a writable folder."""
    probe = final.parent
    while not probe.exists():
        if probe.is_symlink():
            raise InputError(f"cannot write {final}: {probe} is a broken link", "choose --output in a writable folder")
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"cannot write {final}: {probe} is a file, not a folder", "choose another --output")
    if not os.access(probe, os.W_OK | os.X_OK):
        try:
            os.statvfs(probe)
            readonly = bool(os.statvfs(probe).f_flag & os.ST_RDONLY)
        except OSError:
            readonly = False
        cause = "the file system is read-only" if readonly else "permission denied"
        raise InputError(f"cannot write {final}: {cause} ({probe})", "choose --output in a writable folder")


@contextlib.contextmanager
def atomic_output(final: str | Path, *, force: bool = False, source: str | Path | None = None,
                  parent: str | Path | None = None, format: str | None = None) -> Iterator[Path]:
    """Yield a hidden work directory beside ``final`` that is renamed to ``final`` when the block
    succeeds.

    ``final`` is checked first (:func:`check_output`, same arguments).  On every other exit
    path -- an error, Ctrl-C, SIGTERM -- the work directory and any parent folders created for
    it are removed and ``final`` is left untouched.  A failed write because of the place (a
    read-only or full disk) becomes one line naming the path.  Directories and files follow the
    user's umask."""
    final = check_output(final, force=force, source=source, parent=parent, format=format)
    with sigterm_raises():
        created = []
        try:
            for folder in reversed([final.parent, *final.parent.parents]):
                if not folder.exists():
                    folder.mkdir()
                    created.append(folder)
            tmp = final.parent / f".{final.name}.partial-{secrets.token_hex(4)}"
            tmp.mkdir(0o777)  # the umask applies, as for any folder the user makes
        except OSError as exc:
            for folder in reversed(created):
                _rmdir(folder)
            raise (disk_error(exc, final) or exc) from None
        try:
            yield tmp
            if final.exists():
                check_output(final, force=force, source=source, parent=parent, format=format)  # changed meanwhile?
                trash = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
                os.replace(final, trash)
                os.replace(tmp, final)
                _remove(trash)
            else:
                os.replace(tmp, final)
        except BaseException as exc:
            _remove(tmp)
            for folder in reversed(created):
                _rmdir(folder)
            place = place_error(exc, final) if isinstance(exc, Exception) else None
            if place is not None:  # a full or read-only disk, however the stage reported it
                raise place from None
            raise


def _rmdir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        folder.rmdir()


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
    import zipfile

    cases: dict[int, tuple[dict, dict]] = {}
    try:
        with np.load(path, allow_pickle=False) as data:
            for key in data.files:
                index, role, name = key.split("/", 2)
                feeds, outputs = cases.setdefault(int(index), ({}, {}))
                (feeds if role == "input" else outputs)[name] = data[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:  # truncated, foreign or pickled
        raise InputError(f"{path} is not a readable reference file ({exc.__class__.__name__})",
                         "re-create the artifact (its verification data is damaged)") from None
    return [cases[i] for i in sorted(cases)]
