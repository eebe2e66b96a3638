"""Target profiles: named YAML files saying where and how an artifact runs.

A profile names its backend, precision, threads, and how to reach the device (``remote``,
``host``, ``port``, ``python``, ``workdir``), plus roofline figures (``peak_gflops``,
``memory_bandwidth_gbs``) for ``--estimate``.  Profiles are read, later ones overriding earlier
ones of the same name, from:

1. the profiles shipped in ``mmdeploy/targets/profiles/``;
2. ``~/.config/mmdeploy/targets/*.yaml`` (``$XDG_CONFIG_HOME`` honoured);
3. each directory in ``$MMDEPLOY_TARGETS_PATH`` (``os.pathsep``-separated);
4. ``--targets-dir DIR`` on the command line.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from mmdeploy.errors import InputError

SHIPPED = Path(__file__).parent / "profiles"
BACKENDS = ("onnxruntime", "openvino", "tflite", "tensorrt")
# manifest "format" each backend runs
BACKEND_FORMATS = {"onnxruntime": ("onnx",), "openvino": ("openvino",), "tflite": ("tflite",),
                   "tensorrt": ("tensorrt", "tensorrt-bundle")}


class TargetProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    backend: str
    precision: str = "fp32"
    threads: int | None = None
    remote: bool = False
    host: str | None = None  # user@address
    port: int = 22
    identity_file: str | None = None
    ssh_options: list[str] = Field(default_factory=list)  # extra `-o Key=Value` for ssh/scp
    python: str = "python3"  # the device's interpreter (python >= 3.8 with numpy and the runtime)
    workdir: str = "/tmp/mmdeploy-bench"
    env: dict[str, str] = Field(default_factory=dict)  # environment on the device
    compile: dict[str, Any] = Field(default_factory=dict)  # options for the backend's compile()
    quantize_preference: list[str] = Field(default_factory=list)  # quantize --method auto without a measurement
    peak_gflops: float | None = None
    peak_int8_gops: float | None = None  # for integer MatMul/Conv in --estimate (None: peak_gflops)
    memory_bandwidth_gbs: float | None = None
    launch_overhead_ms: float = 0.0  # per-inference runtime overhead added to --estimate
    boards: list[str] = Field(default_factory=list)  # generic profile: boards detected over SSH
    also_runs: list[str] = Field(default_factory=list)  # other backends the device runs as shipped
    source: str | None = None  # file it was read from (filled in)

    def formats(self) -> tuple[str, ...]:
        return BACKEND_FORMATS.get(self.backend, ())

    def runtime_for(self, fmt: str) -> str | None:
        """The backend (the profile's own, else one of ``also_runs``) that runs ``fmt`` as shipped."""
        for backend in [self.backend, *self.also_runs]:
            if fmt in BACKEND_FORMATS.get(backend, ()):
                return backend
        return None

    @property
    def runs_every_format(self) -> bool:
        """A local profile with ``also_runs`` benches every artifact format it can run, side by side
        (``cpu``: ONNX Runtime, OpenVINO and TFLite rows in one table)."""
        return not self.remote and bool(self.also_runs)

    @property
    def kind(self) -> str | None:
        """``jetson`` / ``rpi`` for a generic profile (the prefix its boards share)."""
        return self.name if self.boards else None


def config_hint(profile: TargetProfile) -> str:
    """The user's config file for a profile, for hints: the file it came from unless that is
    one shipped inside the package, then where the user's own copy goes."""
    source = Path(profile.source) if profile.source else None
    if source is not None and SHIPPED.resolve() not in source.resolve().parents:
        return str(source)
    return f"~/.config/mmdeploy/targets/{profile.name}.yaml"


def search_dirs(extra: list[str | Path] | None = None) -> list[Path]:
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    dirs = [SHIPPED, config / "mmdeploy" / "targets"]
    dirs += [Path(p) for p in os.environ.get("MMDEPLOY_TARGETS_PATH", "").split(os.pathsep) if p]
    dirs += [Path(p) for p in extra or []]
    return dirs


def load_profile(path: str | Path) -> TargetProfile:
    from mmdeploy.config import load_yaml, validate

    doc = load_yaml(path, "target profile")
    if isinstance(doc.data, dict):
        doc.data.setdefault("name", Path(path).stem)
    profile = validate(TargetProfile, doc, "target profile")
    if profile.backend not in BACKENDS:
        raise InputError(f"{doc.where(('backend',))}: unknown backend {profile.backend!r}",
                         "valid backends: " + ", ".join(BACKENDS))
    profile.source = str(path)
    return profile


def list_targets(extra_dirs: list[str | Path] | None = None) -> dict[str, TargetProfile]:
    """All profiles by name (later directories override earlier ones)."""
    for d in extra_dirs or []:
        if not Path(d).is_dir():
            raise InputError(f"--targets-dir {d} is not a directory", "pass a folder of *.yaml profiles")
    found: dict[str, TargetProfile] = {}
    for d in search_dirs(extra_dirs):
        if not d.is_dir():
            continue
        for file in sorted(list(d.glob("*.yaml")) + list(d.glob("*.yml"))):
            profile = load_profile(file)
            found[profile.name] = profile
    return found


def get_target(name: str, extra_dirs: list[str | Path] | None = None,
               host: str | None = None, python: str | None = None,
               identity: str | Path | None = None) -> TargetProfile:
    """The profile called ``name``; ``--host``, ``--device-python`` and ``--identity`` override
    its host, python and identity_file.  InputError listing names."""
    targets = list_targets(extra_dirs)
    if name not in targets:
        raise InputError(f"unknown target {name!r}", "valid targets: " + ", ".join(sorted(targets))
                         + " (add your own in ~/.config/mmdeploy/targets/ or --targets-dir)")
    profile = targets[name].model_copy(deep=True)
    if host:
        profile.host = host
        profile.remote = True
    if python:
        profile.python = python
    if identity:
        if not Path(identity).expanduser().is_file():
            raise InputError(f"--identity {identity} does not exist", "pass the private key file ssh should use")
        profile.identity_file = str(identity)
    for board in profile.boards:
        if board not in targets:
            raise InputError(f"{profile.source}: board {board!r} of target {name} has no profile",
                             "valid targets: " + ", ".join(sorted(targets)))
    return profile


def board_profiles(profile: TargetProfile, extra_dirs: list[str | Path] | None = None) -> list[TargetProfile]:
    """The board profiles of a generic profile (``jetson``: every Jetson), each with the
    generic one's connection settings; ``[profile]`` for a specific one."""
    if not profile.boards:
        return [profile]
    dirs = list(extra_dirs or [])
    if profile.source and Path(profile.source).parent.resolve() != SHIPPED.resolve():
        dirs.append(Path(profile.source).parent)  # a user's generic profile sees its sibling boards
    targets = list_targets(dirs)
    keep = {"host", "port", "identity_file", "ssh_options", "python", "workdir", "env"}
    return [targets[b].model_copy(update={k: getattr(profile, k) for k in keep} | {"remote": True}, deep=True)
            for b in profile.boards]
