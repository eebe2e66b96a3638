#!/usr/bin/env bash
# Build a separate venv with Optimum (optimum-onnx), used only as a baseline by
# benchmarks/quantize_clip_b32.py.  Optimum pins transformers 4.x, so it can never share the
# project's environment and is not a project dependency.
#
#   bash benchmarks/optimum_venv.sh [VENV_DIR]      (default: .venv-optimum)
#
# torch is installed first and pinned: it resolves to the CPU wheel (see ENVIRONMENT.md); an
# unpinned torch would pull a multi-GB CUDA build.  optimum-onnx 0.1.x needs optimum~=2.1 and
# transformers>=4.36,<4.58.
set -euo pipefail
VENV="${1:-.venv-optimum}"
python3 -m venv "$VENV"
. "$VENV/bin/activate"
pip install -q --upgrade pip
pip install -q torch==2.13.0
pip install -q "optimum-onnx[onnxruntime]" "transformers>=4.45,<4.58" "onnx" "onnxruntime"
python - <<'PY'
from importlib import metadata
for name in ("torch", "transformers", "optimum", "optimum-onnx", "onnxruntime", "onnx"):
    print(f"{name} {metadata.version(name)}")
PY
echo "optimum venv ready: $VENV/bin/optimum-cli"
