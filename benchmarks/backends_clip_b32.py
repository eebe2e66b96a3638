"""CLIP ViT-B/32 towers (random weights from CLIPConfig() defaults): conversion time per backend
and batch-1 latency side by side, in one process.

    python benchmarks/backends_clip_b32.py [--towers vision,text] [--targets ...] [--runs 30]
                                           [--threads 2] [--quick]

Each tower is exported once to ONNX (with PyTorch reference outputs), then compiled through
``mmdeploy.stages.compile.compile_bundle`` exactly as ``convert --target`` does (conversion time from
each artifact's manifest; compile time also includes verification).  Latency: each runner timed
in its own block (warm-up, then ``--runs`` runs, median and p90), ONNX Runtime spinning off, the
same thread count everywhere; PyTorch eager is the 1.00x reference.  Results go to
``benchmarks/results/backends_clip_b32.{json,md}``.  Random weights: fine for speed and parity,
never for accuracy claims.  ``--quick`` uses a tiny config to check that the script runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmdeploy.artifact import ArtifactRef, Manifest, read_manifest, save_reference, write_manifest  # noqa: E402
from mmdeploy.models.base import Adapter, Component  # noqa: E402


def clip_towers(quick: bool):
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    if quick:
        config = CLIPConfig(text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=2, vocab_size=100, max_position_embeddings=16),
                            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                               num_attention_heads=2, image_size=32, patch_size=8),
                            projection_dim=16)
    else:
        config = CLIPConfig()  # ViT-B/32 image tower, 12-layer 512-wide text tower, seq 77
    model = CLIPModel(config).eval()
    size, seq, vocab = config.vision_config.image_size, config.text_config.max_position_embeddings, \
        config.text_config.vocab_size

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vision_model, self.visual_projection = model.vision_model, model.visual_projection

        def forward(self, pixel_values):
            return self.visual_projection(self.vision_model(pixel_values=pixel_values).pooler_output)

    class Text(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.text_model, self.text_projection = model.text_model, model.text_projection

        def forward(self, input_ids, attention_mask):
            out = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
            return self.text_projection(out.pooler_output)

    def images(batch, seed):
        rng = np.random.default_rng(seed)
        return {"pixel_values": rng.standard_normal((batch, 3, size, size)).astype(np.float32)}

    def texts(batch, seed):
        rng = np.random.default_rng(seed)
        ids = rng.integers(1, vocab - 2, size=(batch, seq)).astype(np.int64)
        ids[:, -1] = vocab - 1
        return {"input_ids": ids, "attention_mask": np.ones((batch, seq), dtype=np.int64)}

    text_axes = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    return {
        "vision": Component("vision", Vision().eval(), ["pixel_values"], ["image_embeds"],
                            {"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}}, images, modality="image"),
        "text": Component("text", Text().eval(), ["input_ids", "attention_mask"], ["text_embeds"],
                          {**text_axes, "text_embeds": {0: "batch"}}, texts, modality="text"),
    }


class BenchAdapter(Adapter):
    family = "clip"

    def __init__(self, components):
        super().__init__(Path("."))
        self._components = components

    def components(self):
        return self._components


def export_tower(component: Component, out: Path) -> float:
    """torch.onnx.export into an ONNX component artifact with reference outputs; seconds."""
    import torch

    from mmdeploy.backends.torch import TorchRunner
    from mmdeploy.export.onnx import io_signature, load_onnx

    out.mkdir(parents=True)
    sample = component.make_inputs(1, 0)
    start = time.perf_counter()
    with torch.inference_mode():
        torch.onnx.export(component.module, tuple(torch.from_numpy(sample[n]) for n in component.input_names),
                          str(out / "model.onnx"), input_names=component.input_names,
                          output_names=component.output_names, dynamic_axes=component.dynamic_axes,
                          opset_version=17, dynamo=False)
    seconds = time.perf_counter() - start
    ref = TorchRunner(component)
    save_reference(out, [(f, ref.run(f)) for f in (component.make_inputs(1, 1), component.make_inputs(2, 2))])
    inputs, outputs = io_signature(load_onnx(out / "model.onnx"))
    write_manifest(out, Manifest(kind="component", name=component.name, family="clip", format="onnx",
                                 inputs=inputs, outputs=outputs,
                                 metadata={"model_file": "model.onnx", "component": component.name}))
    return seconds


def time_runner(runner, feeds, runs: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        runner.run(feeds)
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        runner.run(feeds)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {"median_ms": statistics.median(samples), "p90_ms": samples[int(0.9 * (len(samples) - 1))],
            "min_ms": samples[0], "runs": runs}


def machine() -> dict:
    cpu = platform.processor()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "load_avg_at_start": os.getloadavg(),
            "python": platform.python_version(), "platform": platform.platform()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--towers", default="vision,text")
    parser.add_argument("--targets", default="onnxruntime,openvino,tflite,tensorrt")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny config: check the script runs")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--render", type=Path, help="only re-render the markdown of a results JSON")
    args = parser.parse_args()
    if args.render:
        args.render.with_suffix(".md").write_text(markdown(json.loads(args.render.read_text())))
        print(args.render.with_suffix(".md").read_text())
        return

    import torch

    from mmdeploy.artifact import tool_versions
    from mmdeploy.backends import load_runner
    from mmdeploy.backends.torch import TorchRunner
    from mmdeploy.stages.compile import compile_bundle, parse_targets

    torch.set_num_threads(args.threads)
    os.environ["MMDEPLOY_THREADS"] = str(args.threads)
    specs = parse_targets(args.targets)
    towers = args.towers.split(",")
    components = clip_towers(args.quick)
    work = Path(tempfile.mkdtemp(prefix="bench-b32-"))
    result = {"model": "CLIP tiny (quick)" if args.quick else "CLIP ViT-B/32 (CLIPConfig defaults, random weights)",
              "machine": machine(), "threads": args.threads,
              "tools": tool_versions("torch", "onnxruntime", "openvino", "litert-torch", "ai-edge-litert"),
              "towers": {}}
    try:
        refs = []
        for tower in towers:
            seconds = export_tower(components[tower], work / tower)
            result["towers"][tower] = {"onnx_export_s": round(seconds, 2), "artifacts": {}}
            refs.append(ArtifactRef(path=tower, component=tower, format="onnx"))
            print(f"[{tower}] ONNX export {seconds:.1f}s", flush=True)
        write_manifest(work, Manifest(kind="model", name="clip-b32", family="clip", artifacts=refs))

        adapter = BenchAdapter(components)
        for spec in specs:  # one target at a time so each compile is timed on its own
            start = time.perf_counter()
            made = compile_bundle(work, [spec], {"threads": args.threads, "evaluate": False}, adapter=adapter)
            elapsed = time.perf_counter() - start
            for ref in made:
                manifest = read_manifest(work / ref.path)
                report = manifest.passes[-1].report
                outputs = manifest.parity.get("outputs", {})
                result["towers"][ref.component]["artifacts"][ref.path] = {
                    "target": spec.backend, "precision": spec.precision, "format": manifest.format,
                    "convert_s": report.get("convert_s"), "compile_s_all_towers": round(elapsed, 2),
                    "max_abs": max((m["max_abs"] for m in outputs.values()), default=None),
                    "cosine": min((m["cosine"] for m in outputs.values()), default=None),
                    "size_mb": round(sum(f.stat().st_size for f in (work / ref.path).iterdir()
                                         if f.name not in ("reference.npz", "manifest.json")) / 1e6, 1),
                }
                print(f"[{ref.path}] compiled ({manifest.format}) convert_s={report.get('convert_s')}", flush=True)

        for tower in towers:
            feeds = components[tower].make_inputs(1, 5)
            entry = result["towers"][tower]
            entry["torch_eager"] = time_runner(TorchRunner(components[tower], threads=args.threads), feeds, args.runs)
            base = entry["torch_eager"]["median_ms"]
            for path, art in entry["artifacts"].items():
                if art["format"] == "tensorrt-bundle":
                    art["latency"] = None
                    continue
                runner = load_runner(work / path, threads=args.threads)
                art["latency"] = time_runner(runner, feeds, args.runs)
                art["latency"]["speedup_vs_torch"] = round(base / art["latency"]["median_ms"], 2)
                del runner
                print(f"[{path}] {art['latency']['median_ms']:.1f} ms", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    args.results.mkdir(parents=True, exist_ok=True)
    name = "backends_clip_b32" + ("_quick" if args.quick else "")
    (args.results / f"{name}.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.results / f"{name}.md").write_text(markdown(result))
    print(markdown(result))


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Backends: {result['model']}", "",
             f"Machine: {m['cpu']}, {m['cores']} cores, load average at start {m['load_avg_at_start']}; "
             f"{result['threads']} threads; batch 1; median of the runs, one process, each runner in its "
             "own block. Shared machine: compare ratios within this table, not absolute times. "
             "PyTorch eager suffers most when the 2 cores are oversubscribed (its OpenMP workers wait "
             "at barriers for descheduled threads), so ratios are also given against ONNX Runtime "
             "(spinning off).", ""]
    for tower, entry in result["towers"].items():
        torch_ms = entry.get("torch_eager", {}).get("median_ms")
        lines += [f"## {tower} tower (ONNX export {entry['onnx_export_s']} s)", "",
                  "| artifact | convert s | max abs err | min cosine | size MB | median ms | p90 ms | vs torch "
                  "| vs onnxruntime |",
                  "|---|---|---|---|---|---|---|---|---|"]
        ort = next((a["latency"]["median_ms"] for a in entry["artifacts"].values()
                    if a["target"] == "onnxruntime" and a.get("latency")), None)
        if torch_ms:
            lines.append(f"| torch eager | - | - | - | - | {torch_ms:.1f} | "
                         f"{entry['torch_eager']['p90_ms']:.1f} | 1.00x | "
                         f"{f'{ort / torch_ms:.2f}x' if ort else '-'} |")
        for path, art in entry["artifacts"].items():
            lat = art.get("latency")
            err = "-" if art["max_abs"] is None else f"{art['max_abs']:.1e}"
            cos = "-" if art["cosine"] is None else f"{art['cosine']:.6f}"
            conv = "-" if art["convert_s"] is None else f"{art['convert_s']:.1f}"
            vs_ort = f"{ort / lat['median_ms']:.2f}x" if lat and ort else "-"
            timing = (f"{lat['median_ms']:.1f} | {lat['p90_ms']:.1f} | {lat['speedup_vs_torch']:.2f}x | {vs_ort}"
                      if lat else "not built here (TensorRT-ready bundle) | - | - | -")
            lines.append(f"| {path} | {conv} | {err} | {cos} | {art['size_mb']} | {timing} |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
