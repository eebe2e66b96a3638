#!/usr/bin/env bash
# CI latency regression on the demo model (<= 2 min on 2 shared cores).
# Converts demo:tiny-clip, quantizes it to static QDQ int8 (ONNX Runtime), then benches fp32 and
# int8 in ONE run with interleaved blocks and checks benchmarks/budgets.yaml: the int8 image
# tower must not be slower than the fp32 one (p50 ratio <= 1.0, Mann-Whitney U, alpha 0.01)
# and must stay under 0.75 MB.  Exit 0 pass, 1 budget failed, 2 bad input.
#   usage: benchmarks/ci_regression.sh [WORKDIR]     (MMDEPLOY_CI_SOURCE overrides the model)
set -euo pipefail
cd "$(dirname "$0")/.."
work="${1:-$(mktemp -d)}"
source="${MMDEPLOY_CI_SOURCE:-demo:tiny-clip}"
mkdir -p "$work"
rm -rf "$work/fp32" "$work/int8"
timeout 300 mmdeploy convert "$source" --output "$work/fp32" --components vision,text >/dev/null
timeout 300 mmdeploy quantize "$work/fp32" --output "$work/int8" --method ort-static >/dev/null
timeout 300 mmdeploy bench "$work/fp32" "$work/int8" --components vision --threads 1 \
  --warmup 20 --iters 600 --blocks 20 --budget benchmarks/budgets.yaml \
  --junit "$work/junit.xml" --report "$work/report"
