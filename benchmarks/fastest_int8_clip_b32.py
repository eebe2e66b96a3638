"""CLIP ViT-B/32, both towers, batch 1 and 8: the default ``quantize --int8`` (``--method auto``)
against torch eager and the strongest peers a user would pick on this CPU.

Peers, all built from the same weights:

* torch eager fp32 (transformers ``CLIPModel.get_image_features`` / ``get_text_features``);
* Optimum: ``optimum-cli export onnx`` + ``optimum-cli onnxruntime quantize`` with the CPU's best
  flag (``--avx512_vnni`` > ``--avx512`` > ``--avx2``), in its own venv (benchmarks/optimum_venv.sh);
* the fp32 ONNX (the ``convert`` output) on OpenVINO at its default precision (bf16 on AMX);
* OpenVINO + NNCF int8 by hand: ``nncf.quantize(model_type=TRANSFORMER)`` on the fp32 ONNX,
  compiled with OpenVINO's defaults.

Ours is the bundle ``mmdeploy quantize BUNDLE --int8`` writes (method auto: it measured its
candidates on this machine and chose), loaded through ``load_runner`` like any artifact.

Timing: one process, ``--threads`` threads everywhere, ONNX Runtime spinning off; the ONNX
Runtime / OpenVINO runners are interleaved in blocks (rotating order), torch eager runs in its
own blocks before and after (its OpenMP pool must not compete).  Random weights: fine for
latency, never for accuracy claims (cosine here is to torch fp32 on random inputs).  The
machine is shared: trust the ratios, and read the load average printed with them.

Also printed: a per-op profile of ours and of the best peer (OpenVINO PERF_COUNT / ONNX Runtime
profiling), the FLOPs and weight bytes per inference against the CPU's measured GEMM peaks
(fp32, bf16, int8 through torch/oneDNN), and the peak RSS of each loaded model against its
file size (a fresh subprocess per artifact).

    bash benchmarks/optimum_venv.sh .venv-optimum        # once (its own venv)
    python benchmarks/fastest_int8_clip_b32.py [--reuse] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _models import clip_b32, machine  # noqa: E402


def cosine(a, b) -> float:
    if np.shape(a)[-1] != np.shape(b)[-1]:  # Optimum's export stops at pooler_output (no projection)
        return float("nan")
    a, b = np.asarray(a, np.float64).reshape(len(a), -1), np.asarray(b, np.float64).reshape(len(b), -1)
    return float(np.mean((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def cpu_flags() -> dict:
    from mmdeploy.cpu import cpu_features

    return cpu_features()


def optimum_flag(features: dict) -> str:
    if features.get("vnni") and features.get("avx512"):
        return "--avx512_vnni"
    if features.get("avx512"):
        return "--avx512"
    return "--avx2"


# --------------------------------------------------------------------------- builds


def build(work: Path, ckpt: Path, optimum_venv: Path, flag: str, threads: int, calib: int) -> dict:
    from mmdeploy.stages.convert import convert

    built: dict = {}
    t = time.time()
    if not (work / "bundle" / "manifest.json").is_file():  # the convert output is kept between runs
        convert(ckpt, work / "bundle", progress=lambda m: print("[convert]", m))
    print(f"[build] convert {time.time() - t:.0f} s")
    built["quantize_s"] = build_ours(work, calib)
    for tower in ("vision", "text"):
        t = time.time()
        nncf_by_hand(work / "bundle" / tower, work / f"nncf-{tower}", calib)
        print(f"[build] nncf by hand ({tower}) {time.time() - t:.0f} s")
    built["optimum"] = optimum_int8(ckpt, work / "optimum", optimum_venv, flag)
    (work / "built.json").write_text(json.dumps(built))
    return built


def build_ours(work: Path, calib: int) -> float:
    """The default ``quantize --int8`` (method auto) of the convert output; seconds it took."""
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    shutil.rmtree(work / "int8", ignore_errors=True)
    t = time.time()
    quantize(work / "bundle", work / "int8", QuantizeOptions(metric="cosine", calib_limit=calib, latency_runs=0),
             log=lambda m: print("[quantize]", m))
    print(f"[build] quantize --int8 (auto) {time.time() - t:.0f} s")
    return time.time() - t


def _feeds(component: Path, batch: int) -> dict[str, np.ndarray]:
    from mmdeploy.artifact import load_reference, read_manifest

    feeds = load_reference(component)[0][0]
    m = read_manifest(component)
    out = {}
    for spec in m.inputs:
        v = feeds[spec.name][:1]
        out[spec.name] = np.ascontiguousarray(np.repeat(v, batch, axis=0))
    if "pixel_values" in out and batch > 1:  # distinct images
        out["pixel_values"] = np.random.default_rng(batch).standard_normal(out["pixel_values"].shape).astype(np.float32)
    return out


def nncf_by_hand(component: Path, out: Path, calib: int) -> None:
    """What a user does by hand: NNCF on the fp32 ONNX, model_type=TRANSFORMER, OpenVINO defaults."""
    import nncf
    import openvino as ov

    from mmdeploy.artifact import read_manifest

    m = read_manifest(component)
    model = ov.convert_model(str(component / m.metadata.get("model_file", "model.onnx")))
    rng = np.random.default_rng(1)
    base = _feeds(component, 1)
    data = []
    for _ in range(calib):
        f = dict(base)
        if "pixel_values" in f:
            f["pixel_values"] = rng.standard_normal(f["pixel_values"].shape).astype(np.float32)
        data.append(f)
    q = nncf.quantize(model, nncf.Dataset(data), subset_size=calib, model_type=nncf.ModelType.TRANSFORMER)
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(q, str(out / "model.xml"))


def optimum_int8(ckpt: Path, work: Path, venv: Path, flag: str, towers=("vision", "text")) -> dict | None:
    """Optimum's export and quantizer (its own venv), one model per tower."""
    cli = venv / "bin" / "optimum-cli"
    py = venv / "bin" / "python"
    if not cli.exists():
        print(f"[optimum] {cli} missing: run `bash benchmarks/optimum_venv.sh {venv}`; column skipped")
        return None
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for tower, cls in (("vision", "CLIPVisionModelWithProjection"), ("text", "CLIPTextModelWithProjection")):
        if tower not in towers:
            continue
        done = sorted((work / f"int8-{tower}").glob("*.onnx"))
        if done:
            files[tower] = str(done[0])
            continue
        hf = work / f"hf-{tower}"
        subprocess.run([str(py), "-c", f"import transformers as t; t.{cls}.from_pretrained({str(ckpt)!r})"
                        f".save_pretrained({str(hf)!r})"], check=True, capture_output=True, text=True, timeout=900)
        exported, quantized = work / f"onnx-{tower}", work / f"int8-{tower}"
        try:
            subprocess.run([str(cli), "export", "onnx", "--model", str(hf), "--task", "feature-extraction",
                            str(exported)], check=True, capture_output=True, text=True, timeout=1800)
            subprocess.run([str(cli), "onnxruntime", "quantize", "--onnx_model", str(exported), flag, "-o",
                            str(quantized)], check=True, capture_output=True, text=True, timeout=1800)
        except subprocess.CalledProcessError as exc:
            print(f"[optimum] {tower}: failed: {exc.stderr[-800:]}")
            continue
        files[tower] = str(sorted(quantized.glob("*.onnx"))[0])
    return files


# --------------------------------------------------------------------------- runners


class OV:
    """An OpenVINO model at OpenVINO's default precision (what a user gets), ``threads`` threads."""

    def __init__(self, path, threads: int, profile: bool = False):
        import openvino as ov

        cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"}
        if profile:
            cfg["PERF_COUNT"] = True
        core = ov.Core()
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", cfg)
        self.request = self.compiled.create_infer_request()
        self.names = {p.get_any_name(): p for p in self.compiled.inputs}

    def run(self, feeds):
        ins = {}
        for name, port in self.names.items():
            key = next((k for k in feeds if k in port.get_names()), name)
            ins[port] = np.ascontiguousarray(feeds[key], dtype=port.get_element_type().to_dtype())
        r = self.request.infer(ins)
        return {o.get_any_name(): np.array(r[o]) for o in self.compiled.outputs}


class ORT:
    def __init__(self, path, threads: int, profile: str | None = None):
        import onnxruntime as ort

        from mmdeploy.backends.onnxruntime import session_options

        opts = session_options(threads, spinning=False)
        if profile:
            opts.enable_profiling = True
            opts.profile_file_prefix = profile
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, feeds):
        out = self.session.run(None, {k: feeds[k] for k in self.inputs if k in feeds})
        return {o.name: v for o, v in zip(self.session.get_outputs(), out)}


def embed(outputs: dict, tower: str) -> np.ndarray:
    for key in (f"{'image' if tower == 'vision' else 'text'}_embeds", "image_embeds", "text_embeds"):
        if key in outputs:
            return outputs[key]
    return next(v for v in outputs.values() if v.ndim == 2)


def torch_tower(ckpt: Path, tower: str):
    import torch
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(ckpt)).eval()

    def run(feeds):
        with torch.no_grad():
            if tower == "vision":
                out = model.get_image_features(pixel_values=torch.from_numpy(feeds["pixel_values"]))
            else:
                out = model.get_text_features(**{k: torch.from_numpy(v) for k, v in feeds.items()})
        out = getattr(out, "pooler_output", out)
        return {"embeds": out.numpy()}

    return run


# --------------------------------------------------------------------------- measurements


def time_block(fn, runs: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return samples


def interleaved(runners: dict, feeds: dict, blocks: int, runs: int) -> dict[str, list[float]]:
    names = list(runners)
    for n in names:
        for _ in range(3):
            runners[n].run(feeds)
    samples = {n: [] for n in names}
    for b in range(blocks):
        for n in names[b % len(names):] + names[: b % len(names)]:
            for _ in range(runs):
                t = time.perf_counter()
                runners[n].run(feeds)
                samples[n].append((time.perf_counter() - t) * 1000)
    return samples


def ov_profile(path, feeds, threads: int, runs: int = 10, ours: dict | None = None) -> list[tuple[str, float]]:
    """Per node type: ms per inference.  ``ours``: the artifact's manifest metadata, profiled
    through mmdeploy's runner (shape-specialized, its precision) rather than OpenVINO's defaults."""
    if ours is not None:
        from mmdeploy.backends.openvino import OpenVINORunner

        r = OpenVINORunner(path, threads, inference_precision=ours.get("inference_precision", "f32"),
                           config={"PERF_COUNT": True})
    else:
        r = OV(path, threads, profile=True)
    totals: dict[str, float] = {}
    for _ in range(3):
        r.run(feeds)
    for _ in range(runs):
        r.run(feeds)
        for info in r.request.profiling_info:
            key = f"{info.node_type} [{info.exec_type}]"
            totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1000 / runs
    return sorted(totals.items(), key=lambda kv: -kv[1])


def ort_profile(path, feeds, threads: int, work: Path, runs: int = 10) -> list[tuple[str, float]]:
    r = ORT(path, threads, profile=str(work / "ortprof"))
    for _ in range(runs):
        r.run(feeds)
    prof = r.session.end_profiling()
    events = json.loads(Path(prof).read_text())
    totals: dict[str, float] = {}
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            op = e.get("args", {}).get("op_name", "?")
            totals[op] = totals.get(op, 0.0) + e["dur"] / 1000 / runs
    Path(prof).unlink(missing_ok=True)
    return sorted(totals.items(), key=lambda kv: -kv[1])


def gemm_peaks(threads: int) -> dict[str, float]:
    """GOP/s of a large GEMM on this CPU through torch/oneDNN: fp32, bf16 (AMX where present), int8."""
    import torch

    torch.set_num_threads(threads)
    n = 2048
    out = {}
    for name, make, mm in (
        ("fp32", lambda: torch.randn(n, n), torch.mm),
        ("bf16", lambda: torch.randn(n, n).to(torch.bfloat16), torch.mm),
        ("int8", lambda: torch.randint(-100, 100, (n, n), dtype=torch.int8), torch._int_mm),
    ):
        try:
            a, b = make(), make()
            mm(a, b)
            t = time.perf_counter()
            reps = 5
            for _ in range(reps):
                mm(a, b)
            out[name] = 2 * n ** 3 * reps / (time.perf_counter() - t) / 1e9
        except Exception as exc:  # noqa: BLE001 - a dtype without a kernel here
            out[name] = float("nan")
            print(f"[peak] {name}: {exc}")
    return out


def clip_flops(tower: str, seq: int) -> float:
    """Multiply-adds ×2 of one inference (CLIPConfig defaults): the projections, MLPs, attention."""
    if tower == "vision":
        d, layers, n, mlp = 768, 12, 50, 3072
        patch = 2 * 49 * 768 * 3 * 32 * 32
        proj = 2 * 768 * 512
    else:
        d, layers, n, mlp = 512, 12, seq, 2048
        patch, proj = 0, 2 * 512 * 512
    per_layer = 2 * n * d * 4 * d + 2 * 2 * n * d * mlp + 2 * 2 * n * n * d
    return float(patch + layers * per_layer + proj)


RSS_SNIPPET = r"""
import sys, json, numpy as np
def status():
    out = {}
    for line in open('/proc/self/status'):
        key, value = line.split(':', 1)
        if key in ('VmRSS', 'VmHWM', 'RssAnon', 'RssFile'):
            out[key] = int(value.split()[0]) * 1024
    return out
kind, path, feeds_path = sys.argv[1:4]
feeds = dict(np.load(feeds_path))
import onnxruntime, openvino as ov
from openvino import opset13 as ops
# load the runtimes' libraries and the CPU plugin first: count the model, not the libraries
p = ops.parameter([1, 4], np.float32)
ov.Core().compile_model(ov.Model([ops.relu(p)], [p]), 'CPU').create_infer_request().infer({0: np.zeros((1, 4), np.float32)})
onnxruntime.InferenceSession
base = status()
if kind == 'ours':
    from mmdeploy.backends import load_runner
    r = load_runner(path, threads=2)
else:
    core = ov.Core(); c = core.compile_model(core.read_model(path), 'CPU', {'INFERENCE_NUM_THREADS': 2})
    req = c.create_infer_request()
    r = type('R', (), {'run': lambda self, f: req.infer({p: f[k] for p, k in zip(c.inputs, f)})})()
r.run(feeds)
after = status()
print(json.dumps({'base': base['VmRSS'], 'peak': after['VmHWM'], 'after': after['VmRSS'],
                  'anon': after['RssAnon'] - base['RssAnon'], 'file': after['RssFile'] - base['RssFile']}))
"""


def peak_rss(kind: str, path: Path, feeds: dict, work: Path) -> dict:
    fp = work / "rss-feeds.npz"
    np.savez(fp, **feeds)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", RSS_SNIPPET, kind, str(path), str(fp)], capture_output=True,
                       text=True, env=env, timeout=600)
    if r.returncode:
        return {"error": r.stderr[-300:]}
    return json.loads(r.stdout.strip().splitlines()[-1])


def _size(path: Path) -> int:
    path = Path(path)
    if path.is_dir():
        return sum(p.stat().st_size for p in path.iterdir() if p.suffix in (".onnx", ".bin", ".xml", ".data", ".tflite"))
    extra = [path.with_suffix(".bin")] if path.suffix == ".xml" else [Path(str(path) + ".data")]
    return path.stat().st_size + sum(p.stat().st_size for p in extra if p.is_file())


# --------------------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--runs", type=int, default=5, help="runs per block")
    ap.add_argument("--calib", type=int, default=8)
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--towers", default="vision,text")
    ap.add_argument("--work", type=Path, default=Path("/tmp/mmdeploy-bench-fastest"))
    ap.add_argument("--optimum-venv", type=Path, default=ROOT / ".venv-optimum")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--reuse", action="store_true", help="re-time the artifacts already in --work")
    ap.add_argument("--rebuild-ours", action="store_true",
                    help="with --reuse: quantize ours again (after a change to mmdeploy); the peers are kept")
    args = ap.parse_args(argv)

    import torch

    from mmdeploy.artifact import read_manifest
    from mmdeploy.backends import load_runner

    torch.set_num_threads(args.threads)
    cpu = cpu_flags()
    flag = optimum_flag(cpu["features"])
    ckpt = clip_b32()
    if not (args.reuse and (args.work / "built.json").is_file()):
        args.work.mkdir(parents=True, exist_ok=True)
        for item in args.work.iterdir():
            if item.name not in ("bundle", "optimum"):  # kept between runs (Optimum's own export: ours changes)
                shutil.rmtree(item) if item.is_dir() else item.unlink()
        build(args.work, ckpt, args.optimum_venv, flag, args.threads, args.calib)
    built = json.loads((args.work / "built.json").read_text())
    if args.reuse and args.rebuild_ours:
        built["quantize_s"] = build_ours(args.work, args.calib)
    missing = [t for t in ("vision", "text") if t not in (built.get("optimum") or {})]
    if args.reuse and missing and (args.optimum_venv / "bin" / "optimum-cli").exists():
        built["optimum"] = {**(built.get("optimum") or {}),
                            **(optimum_int8(ckpt, args.work / "optimum", args.optimum_venv, flag, missing) or {})}
    (args.work / "built.json").write_text(json.dumps(built))
    int8 = read_manifest(args.work / "int8")
    auto = int8.metadata["quantize"].get("auto", {})
    load = lambda: " ".join(Path("/proc/loadavg").read_text().split()[:3])  # noqa: E731
    report: dict = {"machine": machine(), "cpu": cpu, "threads": args.threads, "optimum_flag": flag,
                    "auto_chosen": auto.get("chosen"), "auto_candidates": auto.get("candidates"),
                    "load_before": load(), "rows": {}, "profiles": {}, "rss": {}}
    print(f"\nCPU: {cpu['model']}; features {cpu['features']}; threads {args.threads}; load {load()}")
    print(f"quantize --int8 (auto) chose: {auto.get('chosen')} — {auto.get('reason')}")
    for c in auto.get("candidates", []):
        print(f"  candidate {c['name']}: {c.get('latency_ms', '-')} ms, "
              f"{c.get('accuracy', {}).get('value', c.get('skipped', c.get('error')))}")
    peaks = gemm_peaks(args.threads)
    report["gemm_peak_gops"] = peaks
    print("GEMM peaks (GOP/s, 2048³, torch/oneDNN): " + ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()))

    for tower in args.towers.split(","):
        comp = args.work / "bundle" / tower
        fp32_onnx = comp / read_manifest(comp).metadata.get("model_file", "model.onnx")
        ours_dir = args.work / "int8" / tower
        ours_m = read_manifest(ours_dir)
        for batch in [int(b) for b in args.batches.split(",")]:
            feeds = _feeds(comp, batch)
            torch_run = torch_tower(ckpt, tower)
            ref = embed(torch_run(feeds), tower)
            runners = {
                f"mmdeploy --int8 (auto: {auto.get('chosen')})": load_runner(ours_dir, threads=args.threads),
                "OpenVINO fp32 ONNX, default precision": OV(fp32_onnx, args.threads),
                "OpenVINO + NNCF int8 by hand": OV(args.work / f"nncf-{tower}" / "model.xml", args.threads),
                "ORT fp32 (convert output)": ORT(fp32_onnx, args.threads),
            }
            opt = (built.get("optimum") or {}).get(tower)
            if opt:
                runners[f"Optimum ORT int8 {flag}"] = ORT(opt, args.threads)
            ours = next(iter(runners))
            cos = {n: cosine(ref, embed(r.run(feeds), tower)) for n, r in runners.items()}
            t_torch = time_block(lambda: torch_run(feeds), max(args.runs, 3))
            samples = interleaved(runners, feeds, args.blocks, args.runs)
            t_torch += time_block(lambda: torch_run(feeds), max(args.runs, 3))
            med = {n: float(np.median(s)) for n, s in samples.items()}
            med["torch eager fp32"] = float(np.median(t_torch))
            cos["torch eager fp32"] = 1.0
            peers = [n for n in med if n not in (ours, "torch eager fp32", "ORT fp32 (convert output)")]
            best_peer = min(peers, key=lambda n: med[n])
            seq = feeds.get("input_ids", np.zeros((1, 0))).shape[1]
            flops = clip_flops(tower, seq) * batch
            key = f"{tower} batch {batch}"
            rows = {n: {"median_ms": med[n], "x_torch": med["torch eager fp32"] / med[n], "cosine": cos[n],
                        "gops": flops / med[n] / 1e6} for n in med}
            report["rows"][key] = {"rows": rows, "best_peer": best_peer, "load": load(),
                                   "ours_vs_best_peer": med[best_peer] / med[ours],
                                   "ours_vs_torch": med["torch eager fp32"] / med[ours], "gflop": flops / 1e9}
            print(f"\n### {key} (load {load()}; {args.blocks}×{args.runs} runs interleaved; torch "
                  f"{len(t_torch)} runs in two blocks; {flops / 1e9:.1f} GFLOP per call)")
            print("| path | median ms | × torch eager | cosine to torch | GOP/s |\n|---|---|---|---|---|")
            for n in sorted(med, key=lambda n: med[n]):
                print(f"| {n} | {med[n]:.2f} | {rows[n]['x_torch']:.2f}× | {cos[n]:.5f} | {rows[n]['gops']:.0f} |")
            print(f"ours vs torch eager: {med['torch eager fp32'] / med[ours]:.2f}× (target ≥ 4×); ours vs best "
                  f"peer ({best_peer}): {med[best_peer] / med[ours]:.2f}× (target ≥ 1.3×)")
            if batch == 1:
                prof_ours = (ov_profile(ours_dir / ours_m.metadata["model_file"], feeds, args.threads,
                                        ours=ours_m.metadata)
                             if ours_m.format == "openvino" else
                             ort_profile(ours_dir / ours_m.metadata["model_file"], feeds, args.threads, args.work))
                prof_peer = (ov_profile(args.work / f"nncf-{tower}" / "model.xml", feeds, args.threads)
                             if "NNCF" in best_peer or "OpenVINO" in best_peer else [])
                if "fp32 ONNX" in best_peer:
                    prof_peer = ov_profile(fp32_onnx, feeds, args.threads)
                if best_peer.startswith("Optimum"):
                    prof_peer = ort_profile(opt, feeds, args.threads, args.work)
                report["profiles"][tower] = {"ours": prof_ours[:12], best_peer: prof_peer[:12]}
                for label, prof in (("ours", prof_ours), (best_peer, prof_peer)):
                    total = sum(v for _, v in prof) or 1
                    print(f"per-op profile, {label} ({total:.1f} ms summed): " + ", ".join(
                        f"{k} {100 * v / total:.0f} %" for k, v in prof[:8]))
                size = _size(ours_dir)
                rss = peak_rss("ours", ours_dir, feeds, args.work)
                rss_ov = peak_rss("ov", fp32_onnx, feeds, args.work)
                report["rss"][tower] = {"ours": rss, "ours_file_bytes": size, "ov_fp32_default": rss_ov,
                                        "ov_fp32_file_bytes": _size(fp32_onnx)}
                if "peak" in rss:
                    print(f"peak RSS of the loaded model (ours): {(rss['peak'] - rss['base']) / 1e6:.0f} MB for "
                          f"{size / 1e6:.0f} MB of files: {(rss['peak'] - rss['base']) / size:.2f}× (target ≤ 1.3×); "
                          f"after the first run {rss['anon'] / 1e6:.0f} MB anonymous + {rss['file'] / 1e6:.0f} MB "
                          "file-backed (the mapped weights file: clean pages the kernel can drop)")
                if "peak" in rss_ov:
                    print(f"  (OpenVINO fp32 ONNX default: {(rss_ov['peak'] - rss_ov['base']) / 1e6:.0f} MB for "
                          f"{_size(fp32_onnx) / 1e6:.0f} MB)")
                gops = flops / med[ours] / 1e6
                print(f"machine limit: ours at {gops:.0f} GOP/s = {100 * gops / peaks.get('int8', float('nan')):.0f} % of "
                      f"the int8 GEMM peak, {100 * gops / peaks['bf16']:.0f} % of bf16, "
                      f"{100 * gops / peaks['fp32']:.0f} % of fp32; weights {size / 1e6:.0f} MB per inference = "
                      f"{size / med[ours] / 1e6:.1f} GB/s")
    report["load_after"] = load()
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
