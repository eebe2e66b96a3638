#!/usr/bin/env bash
# CI latency regression on the demo model (<= 2 min on 2 shared cores).
# Converts demo:tiny-clip, quantizes it to int8 (ONNX Runtime dynamic), then benches fp32 and
# int8 in ONE run with interleaved blocks and checks benchmarks/budgets.yaml: the int8 image
# tower must stay faster than the fp32 one (p50 ratio <= 0.9, Mann-Whitney U, alpha 0.01), so
# a toolchain change that loses the int8 speed-up fails CI.  Exit 0 pass, 1 budget failed, 2 bad input.
#   usage: benchmarks/ci_regression.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
mkdir -p "$work"
export MMDEPLOY_THREADS="${MMDEPLOY_THREADS:-1}"
timeout 300 mmdeploy convert demo:tiny-clip --output "$work/fp32"
timeout 300 mmdeploy quantize "$work/fp32" --output "$work/int8" --method ort-dynamic --metric cosine --accuracy-budget 0.98
timeout 300 mmdeploy bench "$work/fp32" "$work/int8" --components vision --threads 1 \
  --warmup 20 --iters 400 --blocks 10 --budget benchmarks/budgets.yaml \
  --junit "$work/junit.xml" --report "$work/report"
