"""`mmdeploy demo`: the whole available pipeline on the bundled demo model, narrated.

Each step calls the same library functions the commands use and records what it did; a step
whose backend is not installed is reported as skipped with the reason, not hidden.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

DEMO = "demo:tiny-clip"


@dataclass
class StepResult:
    step: str
    status: str  # ok | skipped | failed
    summary: str
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)


def _zero_shot(bundle: Path, component_dirs: dict[str, Path] | None = None) -> float:
    """Zero-shot top-1 of the demo eval set through the given artifacts (default: the ONNX towers)."""
    from mmdeploy.backends import load_runner
    from mmdeploy.models import adapter_for_bundle

    adapter = adapter_for_bundle(bundle)
    dirs = component_dirs or {c: bundle / c for c in adapter.task_components()}
    return adapter.evaluate({c: load_runner(d) for c, d in dirs.items()}).value


def step_convert(output: Path, say) -> StepResult:
    from mmdeploy.artifact import read_manifest
    from mmdeploy.stages.convert import convert

    bundle = output / "convert"
    convert(DEMO, bundle, progress=say)
    task = read_manifest(bundle).parity["task"]
    return StepResult("convert", "ok",
                      f"vision+text → ONNX; zero-shot top-1 PyTorch {task['reference_value']:.1%}, "
                      f"ONNX {task['value']:.1%} (agreement {task['top1_agreement']:.1%})",
                      details={"bundle": str(bundle), "task": task})


def step_compile(output: Path, say) -> StepResult:
    from mmdeploy.artifact import read_manifest
    from mmdeploy.stages.compile import compile_artifact, list_targets

    available = {row["target"] for row in list_targets() if row["available"]}
    targets = [t for t in ("openvino", "tflite") if t in available] + ["tensorrt"]
    compiled = output / "compile"
    compile_artifact(output / "convert", targets, compiled)
    agreement = {}
    for ref in read_manifest(compiled).artifacts:
        task = read_manifest(compiled / ref.path).parity.get("task")
        if ref.component == "vision" and task:
            agreement[ref.path] = task
    text = ", ".join(f"{p.removeprefix('vision-')} {t['value']:.1%} (agrees {t['agreement_with_pytorch']:.1%})"
                     for p, t in agreement.items())
    skipped = [t for t in ("openvino", "tflite") if t not in available]
    summary = f"zero-shot top-1 per backend: {text}; TensorRT-ready bundle + compatibility report"
    if skipped:
        summary += f" (not installed: {', '.join(skipped)})"
    return StepResult("compile", "ok", summary, details={"bundle": str(compiled), "task": agreement})


def _quantize(bundle: Path, out: Path, say) -> dict:
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    manifest = quantize(bundle, out, QuantizeOptions(precision="int8"), log=say)
    return manifest.metadata["quantize"]


def step_quantize(output: Path, say) -> StepResult:
    summary = _quantize(output / "convert", output / "int8", say)
    acc = summary["accuracy"]
    sizes = ", ".join(f"{c['component']} {c['size_fp32'] / 1e6:.2f} → {c['size_quantized'] / 1e6:.2f} MB"
                      for c in summary["components"])
    kept = len(summary["float_blocks"])
    return StepResult("quantize", "ok",
                      f"int8 ({summary['method']}): zero-shot {acc['fp32']:.1f} % → {acc['value']:.1f} % "
                      f"(drop {acc['drop']:.2f} pp, budget {acc['budget']} pp); {sizes}; "
                      f"{kept} block(s) kept in float", details=summary)


def step_prune(output: Path, say) -> StepResult:
    from mmdeploy.stages.convert import convert
    from mmdeploy.stages.prune import prune

    say("pruning 30 % of the attention heads and MLP channels, with a short distillation")
    report = prune(DEMO, output / "pruned-checkpoint", "heads,mlp", 0.3, recover_steps=150,
                   recover_lr=5e-4, batch_size=32, latency_runs=10)
    convert(output / "pruned-checkpoint", output / "pruned", progress=say)
    summary = _quantize(output / "pruned", output / "pruned-int8", say)
    metric = report.get("metric") or {}
    params = report["params"]
    return StepResult("prune", "ok",
                      f"heads+mlp 0.3: params {params['before']['total']:,} → {params['after']['total']:,}; "
                      f"zero-shot {metric.get('before', 0):.1%} → {metric.get('after', 0):.1%} after "
                      f"recovery; → convert → int8 {summary['accuracy']['value']:.1f} %",
                      details={"prune": report, "quantize": summary})


def step_eval(output: Path, say) -> StepResult:
    """fp32 / int8 / pruned side by side on the demo's held-out shapes, as `mmdeploy eval` shows them."""
    from mmdeploy.stages.eval import run_eval

    names = [("convert", "fp32"), ("int8", "int8"), ("pruned", "pruned"), ("pruned-int8", "pruned-int8")]
    present = [(output / d, n) for d, n in names if (output / d / "manifest.json").is_file()]
    doc = run_eval([p for p, _ in present], "builtin:demo-shapes", threads=2, names=[n for _, n in present],
                   log=say)
    cells = []
    for r in doc["results"]:
        m = r["metrics"]["acc1"]
        cells.append(f"{r['artifact']} {100 * m['value']:.1f} % [{100 * m['ci95'][0]:.1f}, {100 * m['ci95'][1]:.1f}]")
    return StepResult("eval", "ok", f"acc1 on {doc['data']['n']} held-out shapes (`mmdeploy eval ... "
                      f"--data builtin:demo-shapes`): " + "; ".join(cells), details=doc)


def step_bench(output: Path, say) -> StepResult:
    from mmdeploy.bench import bench
    from mmdeploy.bench.harness import BenchSettings

    doc = bench([output / "convert", output / "int8"], BenchSettings(warmup=10, iters=200, blocks=4, threads=1),
                components=["vision"])
    rows = {f"{r['model']}/{r['precision']}": r for r in doc["results"]}
    text = ", ".join(f"{r['precision']} p50 {r['p50_ms']:.2f} ms" for r in doc["results"])
    return StepResult("bench", "ok", f"vision tower, 1 thread, interleaved blocks: {text} "
                      f"({doc.get('machine', {}).get('cpu', 'this machine')})", details={"results": list(rows)})


def step_split(output: Path, say) -> StepResult:
    from mmdeploy.artifact import load_reference
    from mmdeploy.split.build import split_component
    from mmdeploy.split.hybrid import HybridRunner
    from mmdeploy.split.server import make_server, start_in_thread

    split_dir = output / "split"
    manifest = split_component(output / "convert", split_dir, component="vision", at="block:1")
    feeds, expected = load_reference(output / "convert" / "vision")[0]
    server = make_server(split_dir, port=0)
    start_in_thread(server)
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        got = HybridRunner(split_dir, url).run(feeds)
    finally:
        server.shutdown()
        server.server_close()
    error = max(float(abs(got[k] - v).max()) for k, v in expected.items())
    offline = HybridRunner(split_dir, url, timeout=0.5, retries=0)  # the server is gone now
    fallback = offline.run(feeds)
    fallback_error = max(float(abs(fallback[k] - v).max()) for k, v in expected.items())
    metrics = offline.metrics()
    return StepResult("split", "ok",
                      f"vision cut after block 1 ({manifest.metadata['bytes_per_inference']:,} bytes cross per "
                      f"image), cloud half served by KServe's model server: max error {error:.1e}; with the server "
                      f"stopped the local fallback answered ({metrics.get('fallback', 0)} fallback, "
                      f"max error {fallback_error:.1e})",
                      details={"split": str(split_dir), "fallback_metrics": metrics})


STEPS: list[Callable[[Path, Callable[[str], None]], StepResult]] = [
    step_convert, step_compile, step_quantize, step_prune, step_eval, step_bench, step_split]


def run_demo(output: Path, progress: Callable[[str], None] | None = None) -> list[StepResult]:
    say = progress or (lambda msg: None)
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for step in STEPS:
        start = time.perf_counter()
        result = step(output, say)
        result.seconds = round(time.perf_counter() - start, 1)
        results.append(result)
    return results
