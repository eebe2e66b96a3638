"""A model past ONNX's 2 GB limit, end to end: a ViT-H/14-sized CLIP image tower.

CLIPVisionModelWithProjection, hidden 1280, 32 layers, 16 heads, MLP 5120, patch 14, 224 px,
projection 1024 (~632M parameters, 2.5 GB in fp32), random weights, saved with `save_pretrained`
in two safetensors shards, as a user's checkpoint would be.  Each step is the real CLI in its own
process, under /usr/bin/time -v (wall time, peak RSS):

1. `convert` (export with external data + verification against PyTorch);
2. the default `quantize --int8` (bounded: --calib-limit 8 --latency-runs 0);
3. `compile --target openvino:fp32`;
4. the fp32 bundle copied with `cp -r` to another directory: `inspect` (every file's sha256) and
   `bench` (loads and runs it there).

Usage (the machine is shared: nice it; ~10 GB of disk in --work, removed afterwards):

    nice -n 10 python benchmarks/past_2gb_vit_h14.py [--work DIR] [--keep]

Writes benchmarks/past_2gb_vit_h14.md (and benchmarks/results/past_2gb_vit_h14.json).
Random weights: sizes, memory and time only, never accuracy claims.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _models import ROOT, clip_vit_h14_vision, machine

REPO = ROOT.parent


def _cpu_flags() -> str:
    flags = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            flags = line.split(":", 1)[1]
            break
    keep = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "amx_bf16")
    return " ".join(f for f in keep if f" {f} " in f" {flags} ")


def step(name: str, args: list[str], log_dir: Path) -> dict:
    """Run the CLI under /usr/bin/time -v; wall time, peak RSS and the exit status."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "mmdeploy", *map(str, args)]
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    print(f"== {name}: mmdeploy {' '.join(map(str, args))}", flush=True)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    (log_dir / f"{name}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    record = {"step": name, "command": "mmdeploy " + " ".join(map(str, args)), "rc": proc.returncode,
              "wall_s": round(wall, 1), "peak_rss_gb": round(int(rss.group(1)) / 1e6, 2) if rss else None}
    tail = [line for line in (proc.stdout + proc.stderr).splitlines()
            if line.strip() and not line.startswith("\t")][-3:]
    print(f"   rc {proc.returncode}, {wall:.0f} s, peak RSS {record['peak_rss_gb']} GB", flush=True)
    if proc.returncode:
        print("   " + "\n   ".join(tail), flush=True)
        record["tail"] = tail
    return record


def _files(directory: Path) -> dict[str, int]:
    return {str(p.relative_to(directory)): p.stat().st_size for p in sorted(directory.rglob("*")) if p.is_file()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/mmdeploy-past-2gb"))
    parser.add_argument("--keep", action="store_true", help="keep the bundles in --work")
    args = parser.parse_args()
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    logs = work / "logs"
    logs.mkdir(parents=True)

    start = time.perf_counter()
    source = clip_vit_h14_vision()
    build_s = time.perf_counter() - start
    weights = sum(p.stat().st_size for p in source.glob("*.safetensors"))
    print(f"checkpoint {source}: {weights / 1e9:.2f} GB in {len(list(source.glob('*.safetensors')))} shards "
          f"(built/cached in {build_s:.0f} s)", flush=True)

    bundle, int8, ov, moved = work / "vit-h14", work / "vit-h14-int8", work / "vit-h14-ov", work / "moved" / "vit-h14"
    steps = [step("convert", ["convert", source, "-o", bundle], logs)]
    if steps[-1]["rc"] == 0:
        steps.append(step("quantize", ["quantize", bundle, "-o", int8, "--int8", "--calib-limit", "8",
                                       "--latency-runs", "0"], logs))
        steps.append(step("compile-openvino", ["compile", bundle, "-o", ov, "--target", "openvino:fp32"], logs))
        moved.parent.mkdir(parents=True)
        t = time.perf_counter()
        subprocess.run(["cp", "-r", str(bundle), str(moved)], check=True)
        steps.append({"step": "cp -r", "command": f"cp -r {bundle} {moved}", "rc": 0,
                      "wall_s": round(time.perf_counter() - t, 1), "peak_rss_gb": None})
        steps.append(step("inspect-moved", ["inspect", moved], logs))
        steps.append(step("bench-moved", ["bench", moved, "--iters", "3", "--warmup", "1"], logs))

    result = {"benchmark": "past_2gb_vit_h14", "machine": machine(), "cpu_flags": _cpu_flags(),
              "checkpoint": {"path": str(source), "safetensors_bytes": weights, "shards": 2},
              "steps": steps}
    for name, directory in (("convert", bundle), ("quantize", int8), ("compile-openvino", ov)):
        if (directory / "manifest.json").is_file():
            result.setdefault("files", {})[name] = _files(directory)
    if (int8 / "manifest.json").is_file():
        q = json.loads((int8 / "manifest.json").read_text())["metadata"]["quantize"]
        result["quantize"] = {"method": q["method"], "components": q["components"], "accuracy": q["accuracy"]}
    if (bundle / "vision" / "manifest.json").is_file():
        m = json.loads((bundle / "vision" / "manifest.json").read_text())
        result["convert_parity"] = {k: v for k, v in m["parity"]["outputs"].items()}
        result["convert_passes"] = [{"name": p["name"], "report": p.get("report")} for p in m["passes"]]
    if (ov / "vision-openvino" / "manifest.json").is_file():
        result["openvino_parity"] = json.loads((ov / "vision-openvino" / "manifest.json").read_text())["parity"]

    out = ROOT / "results" / "past_2gb_vit_h14.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    (ROOT / "past_2gb_vit_h14.md").write_text(report(result))
    print(f"wrote {out} and {ROOT / 'past_2gb_vit_h14.md'}")
    if not args.keep:
        shutil.rmtree(work)


def report(r: dict) -> str:
    gb = r["checkpoint"]["safetensors_bytes"] / 1e9
    lines = ["# A model past 2 GB: ViT-H/14-sized CLIP image tower", "",
             f"`benchmarks/past_2gb_vit_h14.py` on {r['machine']['cpu']} ({r['machine']['cores']} cores; "
             f"{r['cpu_flags']}), one run on a shared machine, niced.",
             f"CLIPVisionModelWithProjection (hidden 1280, 32 layers, 16 heads, MLP 5120, patch 14, 224 px, "
             f"projection 1024), random weights: {gb:.2f} GB fp32 in 2 safetensors shards.", "",
             "| step | wall s | peak RSS GB | × fp32 weights | rc |", "|---|---:|---:|---:|---:|"]
    for s in r["steps"]:
        ratio = f"{s['peak_rss_gb'] / gb:.2f}" if s.get("peak_rss_gb") else "-"
        lines.append(f"| `{s['command'].replace(str(Path('/tmp')), '/tmp')}` | {s['wall_s']} | "
                     f"{s.get('peak_rss_gb') or '-'} | {ratio} | {s['rc']} |")
    if "files" in r:
        lines += ["", "Files (bytes):", ""]
        for name, files in r["files"].items():
            big = {k: v for k, v in files.items() if v > 1_000_000}
            lines.append(f"- {name}: " + ", ".join(f"`{k}` {v:,}" for k, v in big.items()))
    if "quantize" in r:
        q = r["quantize"]
        for c in q["components"]:
            lines += ["", f"quantize: method `{q['method']}`, {c['component']}: {c['size_fp32']:,} → "
                          f"{c['size_quantized']:,} bytes ({c['size_quantized'] / c['size_fp32']:.1%} of fp32), "
                          f"cosine {c['cosine']} (guard: {q['accuracy']['metric']} ≥ {q['accuracy']['budget']})"]
    if "convert_parity" in r:
        lines += ["", "convert parity vs PyTorch: " + ", ".join(
            f"{k} max abs {v['max_abs']:.2e}, cosine {v.get('min_cosine', v.get('cosine'))}"
            for k, v in r["convert_parity"].items())]
    if "openvino_parity" in r:
        p = r["openvino_parity"]
        lines += ["", "OpenVINO fp32 IR parity vs PyTorch: " + ", ".join(
            f"{k} max abs {v['max_abs']:.2e}" for k, v in p.get("outputs", {}).items())]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
