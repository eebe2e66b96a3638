"""Harness repeatability: p50 of the same artifact across N separate `mmdeploy bench` runs.

Target (issue 7): every run's p50 within ±3 % of the runs' mean on an idle machine.

    python benchmarks/repeatability.py                    # CLIP ViT-B/32 image tower, random weights
    python benchmarks/repeatability.py --model chain      # a small MatMul chain (seconds)

Each run is its own process (`python -m mmdeploy bench ... --json`), as a user would run it.
The artifact is built here, offline: CLIPConfig() defaults with random weights (latency only).
Writes benchmarks/results/repeatability.json and prints a table; exit 1 if the target is missed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def build_b32(directory: Path) -> Path:
    """CLIP ViT-B/32 image tower as an mmdeploy component artifact (model.onnx + manifest)."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    from mmdeploy.artifact import Manifest, TensorSpec, save_reference, write_manifest

    class Vision(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            out = self.model.get_image_features(pixel_values=pixel_values)
            return getattr(out, "pooler_output", out)

    torch.manual_seed(0)
    model = Vision(CLIPModel(CLIPConfig())).eval()
    x = torch.randn(1, 3, 224, 224)
    directory.mkdir(parents=True)
    torch.onnx.export(model, (x,), str(directory / "model.onnx"), input_names=["pixel_values"],
                      output_names=["image_embeds"], dynamic_axes={"pixel_values": {0: "batch"}},
                      opset_version=17, dynamo=False)
    with torch.no_grad():
        y = model(x).numpy()
    save_reference(directory, [({"pixel_values": x.numpy()}, {"image_embeds": y})])
    write_manifest(directory, Manifest(
        kind="component", name="vision", format="onnx",
        inputs=[TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, 224, 224])],
        outputs=[TensorSpec(name="image_embeds", dtype="float32", shape=["batch", 512])],
        metadata={"model_file": "model.onnx", "component": "vision", "note": "random weights, latency only"}))
    return directory


def build_chain(directory: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from _bench_models import component

    return component(directory, layers=24)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", choices=["b32", "chain"], default="b32")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--tolerance", type=float, default=0.03)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "repeatability.json")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        artifact = (build_b32 if args.model == "b32" else build_chain)(Path(tmp) / args.model)
        print(f"built {args.model} artifact in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        runs = []
        for i in range(args.runs):
            cmd = [sys.executable, "-m", "mmdeploy", "bench", str(artifact), "--json", "--iters", str(args.iters),
                   "--warmup", str(args.warmup)] + (["--threads", str(args.threads)] if args.threads else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
            doc = json.loads(proc.stdout)
            r = doc["results"][0]
            runs.append({"run": i + 1, "p50_ms": r["p50_ms"], "p90_ms": r["p90_ms"], "p99_ms": r["p99_ms"],
                         "mean_ms": r["mean_ms"], "std_ms": r["std_ms"], "loadavg": doc["machine"]["loadavg"]})
            print(f"run {i + 1}: p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  "
                  f"load {doc['machine']['loadavg']}", file=sys.stderr)
    p50 = np.array([r["p50_ms"] for r in runs])
    mean = p50.mean()
    worst = float(np.max(np.abs(p50 - mean)) / mean)
    result = {"model": args.model, "runs": runs, "p50_mean_ms": float(mean),
              "max_deviation": worst, "tolerance": args.tolerance, "passed": worst <= args.tolerance,
              "machine": doc["machine"], "settings": doc["settings"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{args.model}: p50 over {args.runs} runs = " + ", ".join(f"{x:.3f}" for x in p50)
          + f" ms; max deviation from mean {worst:.2%} (target ±{args.tolerance:.0%}) -> "
          + ("PASS" if result["passed"] else "MISS"))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
