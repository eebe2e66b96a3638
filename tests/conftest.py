"""Shared fixtures: tiny random checkpoints of each family and their converted bundles.

Built once per test session in a temporary directory; nothing is downloaded.  Every builder
behind them (models, checkpoints, hand-built bundles) lives in ``tests/builders.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from builders import tiny_clip_checkpoint, tiny_siglip_checkpoint  # noqa: E402


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return tiny_clip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-clip")


@pytest.fixture(scope="session")
def tiny_siglip_dir(tmp_path_factory) -> Path:
    return tiny_siglip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-siglip")


@pytest.fixture(scope="session")
def clip_bundle(tiny_clip_dir, tmp_path_factory) -> Path:
    """`mmdeploy convert` output of the tiny CLIP (treat as read-only)."""
    from mmdeploy.stages.convert import convert

    out = tmp_path_factory.mktemp("bundles") / "clip"
    convert(tiny_clip_dir, out)
    return out


@pytest.fixture(scope="session")
def siglip_bundle(tiny_siglip_dir, tmp_path_factory) -> Path:
    from mmdeploy.stages.convert import convert

    out = tmp_path_factory.mktemp("bundles") / "siglip"
    convert(tiny_siglip_dir, out)
    return out


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory) -> Path:
    """`mmdeploy convert demo:tiny-clip` output (treat as read-only)."""
    from mmdeploy.stages.convert import convert

    out = tmp_path_factory.mktemp("bundles") / "demo"
    convert("demo:tiny-clip", out)
    return out


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the real `mmdeploy` entry point in a subprocess; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "mmdeploy", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def invoke_cli(*args: str):
    """Run `mmdeploy.cli.main` in-process (fast: no new interpreter); same result shape as run_cli."""
    import contextlib
    import io

    from mmdeploy.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return subprocess.CompletedProcess(list(args), code, out.getvalue(), err.getvalue())


@pytest.fixture
def cli():
    """The CLI, in-process."""
    return invoke_cli


@pytest.fixture
def cli_subprocess():
    """The CLI as a user runs it: `python -m mmdeploy` in a new process."""
    return run_cli
