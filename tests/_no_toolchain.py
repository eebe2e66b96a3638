"""Run Python in a subprocess where the toolchain cannot be imported: a ``sys.meta_path`` finder
raises ImportError for torch, transformers, onnx, onnxsim and safetensors (as in a runtime-only
``pip install mmdeploy``).  Extra modules to block (``onnxruntime`` for the TFLite-only path) may
be named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TOOLCHAIN = ("torch", "transformers", "onnx", "onnxsim", "safetensors")
ROOT = Path(__file__).resolve().parent.parent

PRELUDE = '''
import sys
_BLOCKED = set({blocked!r})
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in _BLOCKED:
            raise ImportError(f"{{name}} is blocked (runtime-only install)", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
def _leaked():
    return sorted(m for m in _BLOCKED if m in sys.modules)
'''


def run_python(code: str, *args: str, block: tuple[str, ...] = (), timeout: int = 300) -> subprocess.CompletedProcess:
    """``code`` run with the toolchain (and ``block``) unimportable; ``_leaked()`` is defined in it."""
    prelude = PRELUDE.format(blocked=tuple(TOOLCHAIN) + tuple(block))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", prelude + code, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)


def run_cli(*args: str, block: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`mmdeploy ARGS` with the toolchain unimportable."""
    return run_python("from mmdeploy.cli import main\nmain(sys.argv[1:])", *args, block=block)
