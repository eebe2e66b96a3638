"""Planner quality: does the planner's cut match the best *measured* cut over a bandwidth sweep?

Model: the CLIP ViT-B/32 image tower built from ``CLIPConfig()`` defaults (random weights: fine for
latency, never for accuracy), exported once with torch.onnx.export (opset 17, dynamo=False).
Edge = ONNX Runtime with ``--edge-threads`` (1), cloud = ``--cloud-threads`` (2), optionally with
int8 weights (``--cloud-int8``: a stronger cloud target when extra threads do not help on a busy
shared machine): on one machine, in one process, intra-op spinning off, each runner timed in its
own block of runs.

1. The planner profiles every segment (block) on both sides and plans each bandwidth.
2. Every strategy (edge-only, a cut after each block, cloud-only) is then *measured* end to end:
   the real edge half, a simulated link (sleep for rtt + bytes*8/bandwidth, both directions'
   payloads), the real cloud half; median of ``--e2e-runs``.
3. Pass when, at every bandwidth, the planner's choice measures within 10 % of the best measured
   strategy and no worse than edge-only or cloud-only (same 10 % noise allowance).

    python benchmarks/split_planner.py --sweep --out benchmarks/results/split_planner
    python benchmarks/split_planner.py --layers 2 --image-size 64 --e2e-runs 2   # quick smoke run

Timings on a shared CPU are noisy: compare the ratios within one run, and say which machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def build_component(work: Path, layers: int, image_size: int) -> Path:
    """A component artifact (model.onnx + reference.npz + manifest) of the B/32 image tower."""
    from mmdeploy.artifact import Manifest, TensorSpec, read_manifest, save_reference, write_manifest

    comp = work / f"vision-b32-l{layers}-{image_size}"
    if (comp / "manifest.json").is_file():
        read_manifest(comp)
        return comp
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig()
    config.vision_config.num_hidden_layers = layers
    config.vision_config.image_size = image_size
    model = CLIPModel(config).eval()

    class Vision(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.m = model

        def forward(self, pixel_values):
            return self.m.get_image_features(pixel_values=pixel_values).pooler_output

    comp.mkdir(parents=True, exist_ok=True)
    x = torch.randn(1, 3, image_size, image_size)
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.onnx.export(Vision(), (x,), str(comp / "model.onnx"), input_names=["pixel_values"],
                          output_names=["image_embeds"], opset_version=17, dynamo=False,
                          dynamic_axes={"pixel_values": {0: "batch"}, "image_embeds": {0: "batch"}})
        ref = Vision()(x).numpy()
    print(f"exported the image tower in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    save_reference(comp, [({"pixel_values": x.numpy()}, {"image_embeds": ref})])
    write_manifest(comp, Manifest(kind="component", name="vision", family="clip", format="onnx",
                                  inputs=[TensorSpec(name="pixel_values", dtype="float32",
                                                     shape=["batch", 3, image_size, image_size])],
                                  outputs=[TensorSpec(name="image_embeds", dtype="float32",
                                                      shape=["batch", config.projection_dim])],
                                  metadata={"model_file": "model.onnx", "component": "vision"}))
    return comp


def link_ms(nbytes: int, out_bytes: int, bps: float, rtt_ms: float) -> float:
    return rtt_ms + (nbytes + out_bytes) * 8 / bps * 1e3


def measure_e2e(edge, cloud, feeds, crossings, sleep_ms: float, runs: int) -> float:
    """Median wall time of edge half → sleep (simulated link) → cloud half."""
    from mmdeploy.split.build import cloud_feeds

    samples = []
    for i in range(runs + 1):  # one warm-up
        t0 = time.perf_counter()
        payload = feeds
        if edge is not None:
            out = edge.run(feeds)
            payload = cloud_feeds(crossings, out, feeds) if crossings else out
        if cloud is not None:
            time.sleep(sleep_ms / 1e3)
            cloud.run(payload)
        if i:
            samples.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(samples))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmdeploy-split-bench"))
    ap.add_argument("--out", type=Path, default=None, help="write results.json, sweep.md (and sweep.png with --sweep)")
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--bandwidths", default="1,5,20,100,1000", help="Mbit/s")
    ap.add_argument("--rtt", type=float, default=10.0, help="round-trip time, ms")
    ap.add_argument("--edge-threads", type=int, default=1)
    ap.add_argument("--cloud-threads", type=int, default=2)
    ap.add_argument("--compress", default="none", choices=["none", "fp16", "int8"], help="compression at the cut")
    ap.add_argument("--cloud-int8", action="store_true",
                    help="a stronger cloud: it runs int8 (dynamic, per-channel) weights; measured, not estimated")
    ap.add_argument("--runs", type=int, default=10, help="profiling runs per segment")
    ap.add_argument("--e2e-runs", type=int, default=3, help="measured end-to-end runs per strategy and bandwidth")
    ap.add_argument("--sweep", action="store_true", help="also plot latency vs bandwidth per strategy")
    args = ap.parse_args(argv)

    import onnx

    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner
    from mmdeploy.split import partition, planner

    bandwidths = [float(b) for b in args.bandwidths.split(",")]
    comp = build_component(args.work, args.layers, args.image_size)
    edge_t = f"cpu-{args.edge_threads}t"
    cloud_t = f"cpu-{args.cloud_threads}t" + ("-int8" if args.cloud_int8 else "")
    cloud_model = planner.int8_dynamic if args.cloud_int8 else (lambda m: m)
    t0 = time.perf_counter()
    inputs = planner.plan_for_component(comp, None, edge_t, cloud_t, compress=args.compress, runs=args.runs)
    print(f"profiled {len(inputs['edge'].segments)} segments on both sides in {time.perf_counter() - t0:.1f} s "
          f"(edge total {inputs['edge'].total():.1f} ms, cloud total {inputs['cloud'].total():.1f} ms)", file=sys.stderr)
    plans = {bw: planner.plan(inputs["edge"], inputs["cloud"], inputs["cut_bytes"], inputs["input_bytes"],
                              inputs["output_bytes"], bw * 1e6, args.rtt) for bw in bandwidths}

    # ------------------------------------------------------------------ measure every strategy
    feeds = {"pixel_values": np.random.default_rng(0).standard_normal(
        (1, 3, args.image_size, args.image_size)).astype(np.float32)}
    in_b, out_b = inputs["input_bytes"], inputs["output_bytes"]
    graph = partition.Graph(onnx.load(str(comp / "model.onnx")))
    measured: dict[str, dict[float, float]] = {}
    full_edge = OnnxRuntimeRunner(comp / "model.onnx", threads=args.edge_threads)
    edge_only = measure_e2e(full_edge, None, feeds, None, 0, 3 * args.e2e_runs)  # no link: same at every bandwidth
    measured["edge-only"] = {bw: edge_only for bw in bandwidths}
    del full_edge
    full_cloud = planner._runner(cloud_model(onnx.load(str(comp / "model.onnx"))), threads=args.cloud_threads)
    measured["cloud-only"] = {bw: measure_e2e(None, full_cloud, feeds, None, link_ms(in_b, out_b, bw * 1e6, args.rtt),
                                              args.e2e_runs) for bw in bandwidths}
    del full_cloud
    for k, block in enumerate(partition.blocks(graph)):
        cut = partition.analyse_cut(graph, [block.tensor])
        edge_m, cloud_m, crossings = partition.extract_halves(graph, cut, args.compress)
        edge = planner._runner(edge_m, threads=args.edge_threads)
        cloud = planner._runner(cloud_model(cloud_m), threads=args.cloud_threads)
        cross = [c.as_dict() for c in crossings]
        nbytes = inputs["cut_bytes"][k]
        at = f"block:{k}"
        measured[at] = {bw: measure_e2e(edge, cloud, feeds, cross, link_ms(nbytes, out_b, bw * 1e6, args.rtt),
                                        args.e2e_runs) for bw in bandwidths}
        del edge, cloud
        print(f"measured {at}", file=sys.stderr)

    # ------------------------------------------------------------------ compare
    rows, ok = [], True
    for bw in bandwidths:
        p = plans[bw]
        choice = p["choice"]["at"] or p["choice"]["strategy"]
        best = min(measured, key=lambda s: measured[s][bw])
        chosen_ms, best_ms = measured[choice][bw], measured[best][bw]
        within = chosen_ms <= 1.10 * best_ms
        not_worse = chosen_ms <= 1.10 * min(measured["edge-only"][bw], measured["cloud-only"][bw])
        ok &= within and not_worse
        rows.append({"bandwidth_mbps": bw, "choice": choice, "predicted_ms": p["choice"]["total_ms"],
                     "chosen_measured_ms": chosen_ms, "best_measured": best, "best_measured_ms": best_ms,
                     "ratio_to_best": chosen_ms / best_ms, "edge_only_ms": measured["edge-only"][bw],
                     "cloud_only_ms": measured["cloud-only"][bw], "within_10pct": within,
                     "not_worse_than_extremes": not_worse})
    header = (f"CLIP ViT-B/32 image tower ({args.layers} layers, {args.image_size}px, random weights); "
              f"edge {edge_t}, cloud {cloud_t}, rtt {args.rtt:g} ms, compress {args.compress}; "
              f"machine: {planner.machine()}")
    lines = [f"# split planner: {header}", "",
             "| Mbps | planner choice | predicted ms | measured ms | best measured (ms) | ratio | edge-only ms | cloud-only ms | ok |",
             "|---:|---|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['bandwidth_mbps']:g} | {r['choice']} | {r['predicted_ms']:.1f} | {r['chosen_measured_ms']:.1f} | "
                     f"{r['best_measured']} ({r['best_measured_ms']:.1f}) | {r['ratio_to_best']:.3f} | "
                     f"{r['edge_only_ms']:.1f} | {r['cloud_only_ms']:.1f} | "
                     f"{'yes' if r['within_10pct'] and r['not_worse_than_extremes'] else 'NO'} |")
    table = "\n".join(lines) + "\n"
    print(table)
    result = {"header": header, "rows": rows, "measured": {s: {str(b): v for b, v in m.items()} for s, m in measured.items()},
              "edge_profile": inputs["edge"].model_dump(), "cloud_profile": inputs["cloud"].model_dump(),
              "cut_bytes": inputs["cut_bytes"], "input_bytes": in_b, "output_bytes": out_b, "passed": ok}
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(result, indent=2))
        (args.out / "sweep.md").write_text(table)
        if args.sweep:
            sweep_rows = planner.sweep(inputs["edge"], inputs["cloud"], inputs["cut_bytes"], in_b, out_b,
                                       bandwidths, args.rtt)
            for r, m in zip(sweep_rows, rows):  # plot the measured values next to the planned ones
                r["edge_only_ms"], r["cloud_only_ms"] = m["edge_only_ms"], m["cloud_only_ms"]
                r["best_split_ms"] = min(measured[s][m["bandwidth_mbps"]] for s in measured if s.startswith("block:"))
                r["best_split_at"] = min((s for s in measured if s.startswith("block:")),
                                         key=lambda s: measured[s][m["bandwidth_mbps"]])
            planner.sweep_plot(sweep_rows, args.out / "sweep.png", "measured: " + header.split(";")[0])
        print(f"wrote {args.out}", file=sys.stderr)
    print("PASS" if ok else "FAIL: the planner's choice is not within 10 % of the best measured strategy")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
