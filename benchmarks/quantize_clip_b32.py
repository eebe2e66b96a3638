"""CLIP ViT-B/32 image tower, batch 1: mmdeploy --int8 vs torch eager fp32 vs Optimum's int8.

Targets (issue #4): the ``--int8`` artifact ≥ 3.5× faster than torch eager fp32 and ≥ 1.4×
faster than ``optimum-cli onnxruntime quantize --avx2`` output, embedding cosine ≥ 0.99.

Random weights (CLIPVisionConfig defaults = ViT-B/32): fine for latency, never for accuracy
claims.  Everything is timed in one process, each artifact in its own block of runs (warm-up,
then ``--runs`` timed runs, median), ONNX Runtime intra-op spinning off, ``--threads`` threads
everywhere.  The ONNX Runtime artifacts are interleaved run by run (``--runs`` × ``--rounds``
each) so that all see the same background load and their ratios are paired; torch eager runs in
two blocks of its own, before and after (its OpenMP pool must not compete with ORT's threads).
The machine is shared: trust ratios, not absolute times, and note the load average printed.

    python benchmarks/quantize_clip_b32.py                  # builds/uses .venv-optimum if present
    bash benchmarks/optimum_venv.sh .venv-optimum           # once, for the Optimum column

Optimum runs in its own venv (it pins transformers 4.x): its exporter writes the same tower
(CLIPVisionModel: no final 768→512 projection, <0.1 % of the FLOPs) and its quantizer's AVX2
config quantizes it.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def build_model(seed: int = 0):
    import torch
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    return CLIPVisionModelWithProjection(CLIPVisionConfig()).eval()


class Tower:
    """pixel_values -> image_embeds as a torch module (for export and eager timing)."""

    def __new__(cls, model):
        import torch

        class _Tower(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.m = model

            def forward(self, pixel_values):
                return self.m(pixel_values=pixel_values).image_embeds

        return _Tower().eval()


def export_component(tower, x, out: Path, fusable: bool) -> Path:
    """A component artifact (model.onnx + manifest + reference) as `mmdeploy convert` writes it."""
    import torch

    from mmdeploy.artifact import Manifest, TensorSpec, save_reference, write_manifest
    from mmdeploy.models.attention import fusable_attention

    out.mkdir(parents=True)
    ctx = fusable_attention(tower) if fusable else _Null()
    with torch.no_grad(), ctx:
        torch.onnx.export(tower, (torch.from_numpy(x),), str(out / "model.onnx"), input_names=["pixel_values"],
                          output_names=["image_embeds"], opset_version=17, dynamo=False,
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
        ref = tower(torch.from_numpy(x)).numpy()
    save_reference(out, [({"pixel_values": x}, {"image_embeds": ref})])
    write_manifest(out, Manifest(kind="component", name="vision", format="onnx", family="clip",
                                 inputs=[TensorSpec(name="pixel_values", dtype="float32", shape=["batch", 3, 224, 224])],
                                 outputs=[TensorSpec(name="image_embeds", dtype="float32", shape=["batch", 512])],
                                 metadata={"model_file": "model.onnx"}))
    return out


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def optimum_int8(model, work: Path, venv: Path) -> Path | None:
    """Optimum's export + `optimum-cli onnxruntime quantize --avx2`, in its own venv."""
    cli = venv / "bin" / "optimum-cli"
    if not cli.exists():
        print(f"[optimum] {cli} missing: run `bash benchmarks/optimum_venv.sh {venv}`; column skipped")
        return None
    hf = work / "hf"
    model.save_pretrained(hf)
    exported, quantized = work / "optimum-onnx", work / "optimum-int8"
    subprocess.run([str(cli), "export", "onnx", "--model", str(hf), "--task", "feature-extraction", str(exported)],
                   check=True, capture_output=True, text=True, timeout=900)
    subprocess.run([str(cli), "onnxruntime", "quantize", "--onnx_model", str(exported), "--avx2", "-o",
                    str(quantized)], check=True, capture_output=True, text=True, timeout=900)
    files = sorted(quantized.glob("*.onnx"))
    return files[0]


def time_block(fn, runs: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmdeploy-bench-quantize"))
    ap.add_argument("--optimum-venv", type=Path, default=ROOT / ".venv-optimum")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    ap.add_argument("--reuse", action="store_true", help="re-time the artifacts already in --work")
    args = ap.parse_args(argv)

    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    torch.set_num_threads(args.threads)
    reuse = args.reuse and (args.work / "built.json").is_file()
    if not reuse:
        shutil.rmtree(args.work, ignore_errors=True)
        args.work.mkdir(parents=True)
    model = build_model()
    tower = Tower(model)
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        ref = tower(torch.from_numpy(x)).numpy()
        ref_pooled = model.vision_model(pixel_values=torch.from_numpy(x)).pooler_output.numpy()

    # artifacts (the same seed and input rebuild the same ones)
    plain, fused, naive = args.work / "plain", args.work / "fused", args.work / "naive-dynamic.onnx"
    int8, int8_nofuse, int8_static = args.work / "int8", args.work / "int8-nofuse", args.work / "int8-static"
    int8_lngelu = args.work / "int8-lngelu"
    if reuse:
        opt_file = json.loads((args.work / "built.json").read_text()).get("optimum")
        opt_file = Path(opt_file) if opt_file else None
        if not int8_lngelu.exists():
            quantize(fused, int8_lngelu, QuantizeOptions(method="ort-dynamic", optimize=True, fuse_attention=False,
                                                         latency_runs=0, calib_limit=4), log=lambda m: None)
    else:
        t = time.time()
        export_component(tower, x, plain, fusable=False)
        export_component(tower, x, fused, fusable=True)
        quantize_dynamic(str(plain / "model.onnx"), str(naive), weight_type=QuantType.QInt8)
        quantize(fused, int8, QuantizeOptions(method="ort-dynamic", latency_runs=0, calib_limit=4),
                 log=lambda m: print("[quantize]", m))
        quantize(fused, int8_nofuse, QuantizeOptions(method="ort-dynamic", optimize=False, latency_runs=0,
                                                     calib_limit=4), log=lambda m: None)
        quantize(fused, int8_static, QuantizeOptions(latency_runs=0, calib_limit=4), log=lambda m: None)  # --int8
        quantize(fused, int8_lngelu, QuantizeOptions(method="ort-dynamic", optimize=True, fuse_attention=False,
                                                     latency_runs=0, calib_limit=4), log=lambda m: None)
        opt_file = optimum_int8(model, args.work / "optimum", args.optimum_venv)
        print(f"[build] artifacts in {time.time() - t:.0f} s")
        (args.work / "built.json").write_text(json.dumps({"optimum": str(opt_file) if opt_file else None}))
    paths = {
        "onnxruntime fp32 (plain export)": (plain / "model.onnx", "image_embeds"),
        "onnxruntime int8 naive quantize_dynamic": (naive, "image_embeds"),
        "mmdeploy --method ort-dynamic (Attention fused)": (int8 / "model.onnx", "image_embeds"),
        "mmdeploy --method ort-dynamic --no-optimize": (int8_nofuse / "model.onnx", "image_embeds"),
        "mmdeploy --int8 (default: ort-static QDQ)": (int8_static / "model.onnx", "image_embeds"),
        "mmdeploy --method ort-dynamic, LN/GELU fusions only": (int8_lngelu / "model.onnx", "image_embeds"),
    }
    if opt_file is not None:
        paths["optimum-cli quantize --avx2"] = (opt_file, "pooler_output")

    def torch_run():
        with torch.no_grad():
            tower(torch.from_numpy(x))

    rows = {"torch eager fp32": {"samples": [], "cosine": 1.0}}
    runners = {}
    for name, (path, out_name) in paths.items():
        r = OnnxRuntimeRunner(path, threads=args.threads, spinning=False)
        got = r.run({"pixel_values": x})[out_name]
        rows[name] = {"samples": [], "cosine": cosine(got, ref_pooled if out_name == "pooler_output" else ref),
                      "bytes": Path(path).stat().st_size}
        runners[name] = r
    # torch eager in its own blocks (its OpenMP pool would compete with ORT's threads), before
    # and after the ONNX Runtime runs; ORT sessions (spinning off) interleaved run by run, so
    # every artifact sees the same background load and the ratios are paired
    ort_names = [n for n in rows if n != "torch eager fp32"]
    feeds = {"pixel_values": x}
    for name in ort_names:
        time_block(lambda: runners[name].run(feeds), 0, warmup=5)
    rows["torch eager fp32"]["samples"] += time_block(torch_run, args.runs // 2 or 1)
    paired = {name: [] for name in ort_names}
    cpu = {name: [] for name in ort_names}  # process CPU time: robust to being descheduled
    for i in range(args.runs * args.rounds):
        order = ort_names[i % len(ort_names):] + ort_names[: i % len(ort_names)]
        for name in order:
            t, c = time.perf_counter(), time.process_time()
            runners[name].run(feeds)
            paired[name].append((time.perf_counter() - t) * 1000)
            cpu[name].append((time.process_time() - c) * 1000)
    rows["torch eager fp32"]["samples"] += time_block(torch_run, args.runs // 2 or 1)
    for name in ort_names:
        rows[name]["samples"] = paired[name]

    ours = "mmdeploy --int8 (default: ort-static QDQ)"
    opt = "optimum-cli quantize --avx2"
    base = float(np.median(rows["torch eager fp32"]["samples"]))
    for row in rows.values():
        row["median_ms"] = float(np.median(row["samples"]))
    speed_torch = base / rows[ours]["median_ms"]
    speed_opt = float(np.median(np.asarray(paired[opt]) / np.asarray(paired[ours]))) if opt in rows else None
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"\nmachine: {platform.processor() or platform.machine()}, {args.threads} threads, python "
          f"{platform.python_version()}, load average {' '.join(load)}; ORT: {args.runs * args.rounds} runs "
          f"each, interleaved; torch: {2 * (args.runs // 2 or 1)} runs in two blocks")
    print("| path | median ms | vs torch eager | cosine to torch | size MB |\n|---|---|---|---|---|")
    for name, row in rows.items():
        size = f"{row['bytes'] / 1e6:.1f}" if "bytes" in row else "-"
        print(f"| {name} | {row['median_ms']:.1f} | {base / row['median_ms']:.2f}× | {row['cosine']:.5f} | {size} |")
    print(f"\n--int8 vs torch eager fp32: {speed_torch:.2f}× (target ≥ 3.5×)")
    for name in ort_names:
        if name != ours:
            ratio = float(np.median(np.asarray(paired[name]) / np.asarray(paired[ours])))
            print(f"--int8 vs {name}: {ratio:.2f}× (median of paired per-run ratios)")
    if speed_opt is not None:
        print(f"target vs Optimum: ≥ 1.4×, measured {speed_opt:.2f}×")
    print("\nCPU time per inference (process time, all threads; insensitive to waiting for a core):")
    for name in ort_names:
        med = float(np.median(cpu[name]))
        rows[name]["cpu_ms"] = med
        print(f"  {name}: {med:.1f} ms CPU, {float(np.median(cpu[name])) / float(np.median(cpu[ours])):.2f}× --int8's")
    if args.json:
        args.json.write_text(json.dumps({
            "machine": platform.processor() or platform.machine(), "threads": args.threads, "runs": args.runs,
            "rows": {k: {kk: vv for kk, vv in v.items() if kk != "samples"} for k, v in rows.items()},
            "load_average": load, "speedup_vs_torch": speed_torch, "speedup_vs_optimum": speed_opt,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
