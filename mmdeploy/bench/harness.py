"""The benchmark harness: times Runners, nothing else.

Measurement hygiene:

* each component is loaded through :func:`mmdeploy.backends.load_runner` (ONNX Runtime's
  intra-op spinning is off there), warmed up, then timed with ``perf_counter_ns`` around
  ``Runner.run`` only; raw samples are kept;
* one artifact is timed at a time; with ``blocks > 1`` the timed runs are split into blocks
  interleaved across artifacts (A B C A B C ...), so slow drifts of a shared machine (a
  neighbour's job starting) hit every artifact alike -- use it for relative budgets;
* CPU count, affinity, governor and load average are recorded with the results.

A local profile with ``also_runs`` (``cpu``) benches every format it can run side by side: a
bundle's ``vision`` (ONNX Runtime), ``vision-openvino`` and ``vision-tflite`` are three rows of
one table; a backend not installed here is skipped with a warning.
"""

from __future__ import annotations

import os
import platform
import resource
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmdeploy.errors import BackendUnavailable, InputError

SCHEMA = "mmdeploy.bench"
SCHEMA_VERSION = 1


@dataclass
class BenchSettings:
    warmup: int = 10
    iters: int | None = 100
    duration: float | None = None  # seconds of timed runs per artifact (instead of iters)
    batch: int = 1
    sequence: int | None = None  # --sequence: token inputs timed at this length (else the reference's)
    threads: int | None = None
    blocks: int = 1
    accuracy: bool = False
    accuracy_limit: int | None = None
    eval_data: str | None = None  # --eval: the user's set for --accuracy (recorded in the document)
    isolated_memory: bool = True  # peak RSS per artifact from its own process (else process-wide)

    def check(self) -> None:
        if self.warmup < 0:
            raise InputError(f"--warmup {self.warmup} is negative", "pass 0 or more")
        if self.duration is None and (self.iters is None or self.iters < 1):
            raise InputError("--iters must be at least 1", "or pass --duration SECONDS")
        if self.duration is not None and self.duration <= 0:
            raise InputError(f"--duration {self.duration} must be positive", "pass seconds, e.g. 10")
        if self.batch < 1:
            raise InputError(f"--batch {self.batch} must be at least 1", "pass 1 or more")
        if self.sequence is not None and self.sequence < 1:
            raise InputError(f"--sequence {self.sequence} must be at least 1", "pass a token count, e.g. 128")
        if self.blocks < 1:
            raise InputError(f"--blocks {self.blocks} must be at least 1", "pass 1 or more")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads {self.threads} must be at least 1", "omit it for the default")


@dataclass
class Item:
    """One component artifact to time."""

    artifact: str  # label of the ARTIFACT argument (its directory name, made unique)
    path: Path  # the component directory
    bundle: Path | None
    model: str
    component: str
    manifest: Any
    runner: Any = None
    run_dir: Path | None = None  # the directory actually loaded (after a compile for the target)
    feeds: dict = field(default_factory=dict)
    input_source: str = ""
    samples_ns: list[int] = field(default_factory=list)
    result: dict = field(default_factory=dict)
    backend: str | None = None  # the runtime that runs it (None: the target's, after prepare)
    estimated_for: Path | None = None  # --estimate: the compiled artifact this ONNX sibling stands for


# --------------------------------------------------------------------------- discovery


def _pick(refs: list, target) -> Any:
    """Of a bundle's artifacts for one component (ONNX plus compiled ``vision-openvino``...),
    the one the target runs, else the ONNX one (compiled for the target on the fly)."""
    formats = target.formats() if target is not None else ("onnx",)
    return (next((r for r in refs if r.format in formats), None)
            or next((r for r in refs if r.format == "onnx"), None) or refs[0])


def _chosen(refs: list, target, every_format: bool) -> list:
    """The refs of one component to bench: the one the target runs (:func:`_pick`), or, for a
    profile that runs every format (``cpu``), each one it runs as shipped."""
    if every_format:
        runnable = [r for r in refs if target.runtime_for(r.format)]
        if runnable:
            return runnable
    return [_pick(refs, target)]


def collect(paths: list[str | Path], components: list[str] | None = None, target=None,
            every_format: bool | None = None) -> list[Item]:
    """The component artifacts of each ARTIFACT path (a bundle or one component).

    ``every_format`` (default: the target's ``runs_every_format``) yields one item per format a
    component has (``vision``, ``vision-openvino``, ``vision-tflite``) instead of one per component."""
    if every_format is None:
        every_format = bool(target is not None and target.runs_every_format)
    from mmdeploy.artifact import bundle_dir, read_manifest

    if not paths:
        raise InputError("no artifact given", "pass a directory written by `mmdeploy convert` or `quantize`")
    items: list[Item] = []
    labels: set[str] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"artifact {path} does not exist", "pass a directory written by `mmdeploy convert`")
        manifest = read_manifest(path)
        label = path.resolve().name
        n = 2
        while label in labels:
            label, n = f"{path.resolve().name}-{n}", n + 1
        labels.add(label)
        if manifest.kind == "model":
            grouped: dict[str, list] = {}
            for ref in manifest.artifacts:
                grouped.setdefault(ref.component, []).append(ref)
            chosen = [r for refs in grouped.values() for r in _chosen(refs, target, every_format)]
            pairs = [(path / r.path, read_manifest(path / r.path), r.component) for r in chosen]
            bundle, model = path, manifest.name
        else:
            bundle = bundle_dir(path)
            comp = manifest.metadata.get("component") or manifest.name
            model = manifest.name
            if bundle is not None:
                parent = read_manifest(bundle)
                model = parent.name
                comp = next((r.component for r in parent.artifacts if r.path == path.resolve().name), comp)
            pairs = [(path, manifest, comp)]
        for comp_dir, comp_manifest, comp_name in pairs:
            if components and comp_name not in components:
                continue
            items.append(Item(label, Path(comp_dir), bundle, model, comp_name, comp_manifest))
    if not items:
        raise InputError(f"no component {','.join(components or [])} in {', '.join(map(str, paths))}",
                         "check --components against the bundle's manifest")
    return items


def runnable(items: list[Item], target) -> tuple[list[Item], list[str]]:
    """Drop the items whose runtime is not installed here (a profile running every format only:
    elsewhere a missing runtime stays an error); returns (items, warnings)."""
    if target is None or not target.runs_every_format:
        return items, []
    from mmdeploy.backends import get_backend

    status: dict[str, tuple[bool, str]] = {}
    kept, warnings = [], []
    for item in items:
        backend = target.runtime_for(item.manifest.format)
        if backend is None or backend == target.backend:
            kept.append(item)
            continue
        if backend not in status:
            try:
                status[backend] = get_backend(backend).available()
            except ModuleNotFoundError as exc:
                status[backend] = (False, f"{exc.name} is not installed")
        ok, why = status[backend]
        if ok:
            kept.append(item)
        else:
            warnings.append(f"{item.artifact}/{item.path.name}: skipped, {backend} is not available here ({why})")
    return kept, warnings


def identity(item: Item) -> dict:
    """What a result is, independent of where its files lie: matched against a --baseline."""
    from mmdeploy.artifact import read_manifest

    source = {}
    try:
        source = (read_manifest(item.bundle).source if item.bundle is not None else item.manifest.source) or {}
    except Exception:  # noqa: BLE001 - an identity is best effort; the label still identifies
        source = {}
    return {"source_sha256": source.get("sha256"), "source_path": source.get("path"),
            # the component's folder in its bundle (vision, vision-tflite); a lone folder's name is its label
            "artifact_name": item.path.name if item.bundle is not None else None}


# --------------------------------------------------------------------------- inputs


def make_feeds(comp_dir: Path, manifest, batch: int, sequence: int | None = None) -> tuple[dict[str, np.ndarray], str]:
    """Inputs from ``reference.npz`` (first case, re-batched) or synthesized from the specs;
    ``sequence``: token inputs (integer inputs whose axis 1 is dynamic) resized to that length."""
    from mmdeploy.artifact import load_reference

    cases = load_reference(comp_dir)
    if cases and cases[0][0]:
        feeds = {k: rebatch(v, batch) for k, v in cases[0][0].items()}
        return (feeds if sequence is None else resize_sequence(feeds, manifest, sequence, comp_dir)), "reference.npz"
    if not manifest.inputs:
        raise InputError(f"{comp_dir}: no reference.npz and no input specs in the manifest",
                         "re-create the artifact with `mmdeploy convert`")
    rng = np.random.default_rng(0)
    feeds = {}
    seq = sequence or int(manifest.metadata.get("seq_len", 16))
    for spec in manifest.inputs:
        shape = [d if isinstance(d, int) and d > 0 else (batch if i == 0 else seq)
                 for i, d in enumerate(spec.shape)]
        dtype = np.dtype(spec.dtype if spec.dtype not in ("float", "int") else spec.dtype + "32")
        if np.issubdtype(dtype, np.integer):
            feeds[spec.name] = (np.ones(shape, dtype) if "mask" in spec.name
                                else rng.integers(1, 50, size=shape).astype(dtype))
        elif dtype == np.bool_:
            feeds[spec.name] = np.ones(shape, dtype)
        else:
            feeds[spec.name] = rng.standard_normal(shape).astype(dtype)
    return (feeds if sequence is None else resize_sequence(feeds, manifest, sequence, comp_dir)), "synthesized"


def _token_inputs(manifest) -> dict[str, Any]:
    """{name: axis-1 dim} of the token inputs: integer (or bool) inputs of rank >= 2 whose axis 0
    is the batch (input_ids, attention_mask, token_type_ids ...)."""
    out = {}
    for spec in manifest.inputs or []:
        kind = str(spec.dtype)
        if len(spec.shape) >= 2 and (kind.startswith(("int", "uint")) or kind == "bool"):
            out[spec.name] = spec.shape[1]
    return out


def resize_sequence(feeds: dict[str, np.ndarray], manifest, sequence: int, comp_dir: Path) -> dict[str, np.ndarray]:
    """Token inputs at ``sequence`` tokens (the ids repeated, masks all ones), as trtexec
    ``--shapes`` / benchmark_app ``-shape``; a graph with a fixed, different length is refused."""
    tokens = _token_inputs(manifest)
    fixed = {n: d for n, d in tokens.items() if isinstance(d, int) and d > 0 and d != sequence}
    if fixed:
        name, dim = next(iter(fixed.items()))
        raise InputError(f"{comp_dir.name}: input {name} has a fixed length of {dim} tokens; --sequence {sequence} "
                         "cannot be timed on it", f"pass --sequence {dim}, or leave this component out with --components")
    out = dict(feeds)
    for name in tokens:
        if name not in out:
            continue
        value = np.asarray(out[name])
        if "mask" in name:
            out[name] = np.ones((value.shape[0], sequence) + value.shape[2:], value.dtype)
        else:
            reps = -(-sequence // max(value.shape[1], 1))
            out[name] = np.concatenate([value] * reps, axis=1)[:, :sequence]
    return out


def shapes_of(feeds: dict[str, np.ndarray]) -> dict[str, list[int]]:
    """The shapes timed, per input (stated in every result)."""
    return {k: [int(d) for d in np.shape(v)] for k, v in feeds.items()}


def sequence_of(feeds: dict[str, np.ndarray], manifest) -> int | None:
    """The token count timed (axis 1 of the token inputs), None for a component without tokens."""
    lengths = {int(np.shape(feeds[n])[1]) for n in _token_inputs(manifest) if n in feeds}
    return lengths.pop() if len(lengths) == 1 else None


def rebatch(value: np.ndarray, batch: int) -> np.ndarray:
    value = np.asarray(value)
    if value.ndim == 0 or value.shape[0] == batch:
        return value
    reps = -(-batch // value.shape[0])
    return np.concatenate([value] * reps, axis=0)[:batch]


# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:
    from mmdeploy import cpu

    """What the numbers were measured on: CPU model, counts, governor, load, runtimes."""
    from mmdeploy.artifact import tool_versions

    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    governor = "unknown"
    gov_file = Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if gov_file.is_file():
        try:
            governor = gov_file.read_text().strip()
        except OSError:
            pass
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        affinity = os.cpu_count()
    try:
        import psutil

        mem_gb = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # pragma: no cover
        mem_gb = None
    return {
        "hostname": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu_model": cpu_model,
        "cpu_class": cpu.cpu_class(),  # vnni / no-vnni: what budgets with `cpu:` are scoped by
        "cpu_tags": sorted(cpu.cpu_tags()),
        "int8_isa": cpu.int8_isa(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "governor": governor,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "memory_gb": mem_gb,
        "tools": tool_versions("onnxruntime", "onnx", "openvino", "ai-edge-litert", "tflite-runtime",
                               "tensorrt", "numpy"),
    }


def _rss_mb() -> float:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover
        return float("nan")


def _peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024


_PROBE = "MMDEPLOY_MEMORY_PROBE "


def _own_peak_rss_mb() -> float:
    """This process's peak RSS since it started.  On Linux ``ru_maxrss`` survives exec (a child
    starts at its parent's peak), so read the address space's high-water mark, VmHWM, instead."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return _peak_rss_mb()


def isolated_memory(run_dir: Path, source_dir: Path, batch: int, threads: int | None,
                    sequence: int | None = None) -> dict | None:
    """Peak RSS of a fresh process that loads ``run_dir`` and runs it once on ``batch`` inputs.

    This is one artifact's memory alone: the bench process's own peak (``ru_maxrss``) only grows,
    so it includes every artifact loaded before.  Returns ``{"peak_rss_mb", "baseline_rss_mb",
    "peak_rss_delta_mb"}`` (baseline: the probe process with the runtime imported, before the
    load), or None when the probe could not run.
    """
    import json
    import subprocess
    import sys

    import mmdeploy

    root = str(Path(mmdeploy.__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    code = "from mmdeploy.bench.harness import _memory_probe; _memory_probe()"
    try:
        done = subprocess.run([sys.executable, "-c", code, str(run_dir), str(source_dir), str(batch),
                               str(threads or 0), str(sequence or 0)], capture_output=True, text=True, timeout=600,
                              env=env)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(_PROBE):
            return json.loads(line[len(_PROBE):])
    return None


def _memory_probe() -> None:
    """The child of :func:`isolated_memory` (argv: run_dir source_dir batch threads sequence)."""
    import json
    import sys

    from mmdeploy.artifact import read_manifest
    from mmdeploy.backends import FORMATS, get_backend, load_runner

    run_dir, source_dir, batch, threads = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    sequence = int(sys.argv[5]) if len(sys.argv) > 5 and int(sys.argv[5]) > 0 else None
    get_backend(FORMATS[read_manifest(run_dir).format]).available()  # import the runtime first
    feeds, _ = make_feeds(source_dir, read_manifest(source_dir), batch, sequence)
    baseline = _rss_mb()
    runner = load_runner(run_dir, **({"threads": threads} if threads else {}))
    runner.run(feeds)
    peak = _own_peak_rss_mb()
    print(_PROBE + json.dumps({"peak_rss_mb": peak, "baseline_rss_mb": baseline,
                               "peak_rss_delta_mb": peak - baseline}), flush=True)


# --------------------------------------------------------------------------- running


def prepare(item: Item, target, workdir: Path) -> Path:
    """The directory to load for ``target``: the artifact, or one compiled from it."""
    from mmdeploy.backends import get_backend

    fmt = item.manifest.format
    if target is None or fmt in target.formats():
        return item.path
    if target.runs_every_format and target.runtime_for(fmt):
        return item.path  # run as shipped by its own runtime (an `also_runs` backend)
    if fmt != "onnx":
        raise InputError(f"{item.path} is a {fmt} artifact; target {target.name} runs "
                         f"{'/'.join(target.formats())}", "pass the ONNX bundle or a matching target")
    try:
        backend = get_backend(target.backend)
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(f"backend {target.backend} is not in this build ({exc.name})",
                                 "update mmdeploy") from None
    backend.require()
    out = workdir / f"{item.artifact}-{item.component}-{target.backend}"
    out.mkdir(parents=True)
    options = {"precision": target.precision, "component": item.component, **target.compile}
    if item.manifest.precision != "fp32":
        # a quantized/fp16 graph compiled as-is: the compile check against the PyTorch reference
        # must use the reduced-precision tolerance (cosine), not the fp32 atol
        options.setdefault("atol", 1e6)
        options.setdefault("min_cosine", 0.99)
    if target.backend == "tflite" and item.bundle is not None:  # converts from the torch module
        try:
            from mmdeploy.artifact import read_manifest
            from mmdeploy.stages.compile import adapter_from_source

            adapter = adapter_from_source(read_manifest(item.bundle))
            if adapter is not None:
                options["torch_component"] = adapter.components().get(item.component)
        except ImportError:
            pass
    backend.compile(item.path, out, options)
    return out


def _load(item: Item, settings: BenchSettings, target) -> None:
    from mmdeploy.artifact import read_manifest
    from mmdeploy.backends import load_runner

    threads = settings.threads or (target.threads if target else None)
    rss0 = _rss_mb()
    t0 = time.perf_counter_ns()
    item.runner = load_runner(item.run_dir, threads=threads)
    load_ms = (time.perf_counter_ns() - t0) / 1e6
    item.feeds, item.input_source = make_feeds(item.path, item.manifest, settings.batch, settings.sequence)
    t0 = time.perf_counter_ns()
    item.runner.run(item.feeds)
    first_ms = (time.perf_counter_ns() - t0) / 1e6
    run_manifest = read_manifest(item.run_dir)
    from mmdeploy.backends import FORMATS

    item.result = {
        "artifact": item.artifact, "path": str(item.path), "model": item.model,
        "component": item.component, "format": run_manifest.format,
        "backend": FORMATS.get(run_manifest.format, run_manifest.format),
        "precision": run_manifest.precision, "runner": getattr(item.runner, "name", "?"),
        **identity(item),
        "batch": settings.batch, "threads": threads, "input_source": item.input_source,
        "shapes": shapes_of(item.feeds), "sequence": sequence_of(item.feeds, item.manifest),
        "load_ms": load_ms, "first_inference_ms": first_ms, "rss_delta_mb": _rss_mb() - rss0,
    }


def _time_block(item: Item, iters: int | None, seconds: float | None,
                progress: Callable[[int], None] | None) -> None:
    run, feeds, samples = item.runner.run, item.feeds, item.samples_ns
    clock = time.perf_counter_ns
    end = clock() + int(seconds * 1e9) if seconds else None
    count = 0
    while (count < iters) if end is None else (clock() < end):
        t0 = clock()
        run(feeds)
        samples.append(clock() - t0)
        count += 1
        if progress and count % 10 == 0:
            progress(10)
    if progress and count % 10:
        progress(count % 10)


def model_bytes(directory: Path) -> int:
    """Bytes of what is deployed: the artifact's files except its manifest and reference.npz."""
    from mmdeploy.artifact import REFERENCE_NAME, read_manifest

    return sum(e.bytes for rel, e in read_manifest(directory).files.items() if rel != REFERENCE_NAME)


def _finish(item: Item) -> dict:
    from mmdeploy.bench.stats import summarize

    samples_ms = [s / 1e6 for s in item.samples_ns]
    result = dict(item.result)
    result.update(summarize(samples_ms))
    size = model_bytes(item.run_dir)
    result["size_bytes"] = size
    result["size_mb"] = size / 1e6
    mean_s = result["mean_ms"] / 1e3
    result["runs_per_s"] = 1.0 / mean_s if mean_s > 0 else float("inf")
    result["throughput_per_s"] = result["batch"] / mean_s if mean_s > 0 else float("inf")
    result["peak_rss_mb"] = _peak_rss_mb()  # replaced by the artifact's own when measured apart
    result["peak_rss_scope"] = "process"
    result["samples_ms"] = samples_ms
    return result


def _measure_memory(items: list[Item], results: list[dict], settings: BenchSettings, target) -> None:
    """Each artifact's peak RSS from its own process, after the timing (nothing runs beside it)."""
    if not settings.isolated_memory:
        return
    threads = settings.threads or (target.threads if target else None)
    for item, result in zip(items, results):
        probe = isolated_memory(item.run_dir, item.path, settings.batch, threads, settings.sequence)
        if probe is not None:
            result.update(probe, peak_rss_scope="artifact", process_peak_rss_mb=result["peak_rss_mb"])


def run_items(items: list[Item], settings: BenchSettings, target=None,
              progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """Load, warm up and time every item; returns one result dict per item (schema fields)."""
    settings.check()
    workdir = Path(tempfile.mkdtemp(prefix="mmdeploy-bench-"))
    try:
        for item in items:
            item.run_dir = prepare(item, target, workdir)
        per_block_iters = None if settings.iters is None else max(1, settings.iters // settings.blocks)
        per_block_s = settings.duration / settings.blocks if settings.duration else None
        total = None if per_block_s else per_block_iters * settings.blocks

        def ticker(item: Item):
            if progress is None:
                return None
            return lambda n: progress(f"{item.artifact}/{item.component}", n, total or 0)

        if settings.blocks == 1:  # one artifact loaded and timed at a time
            results = []
            for item in items:
                _load(item, settings, target)
                for _ in range(settings.warmup):
                    item.runner.run(item.feeds)
                _time_block(item, per_block_iters, per_block_s, ticker(item))
                results.append(_finish(item))
                item.runner = None  # release before the next artifact loads
            _measure_memory(items, results, settings, target)
            return results
        for item in items:  # interleaved blocks: all loaded, timed A B C A B C ...
            _load(item, settings, target)
            for _ in range(settings.warmup):
                item.runner.run(item.feeds)
        for _ in range(settings.blocks):
            for item in items:
                _time_block(item, per_block_iters, per_block_s, ticker(item))
        results = [_finish(item) for item in items]
        for item in items:
            item.runner = None
        _measure_memory(items, results, settings, target)
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def document(results: list[dict], settings: BenchSettings, target=None, accuracy=None,
             estimate: bool = False, machine: dict | None = None) -> dict:
    """The versioned JSON document (see docs/bench-json-schema.md)."""
    from datetime import datetime, timezone

    from mmdeploy import __version__

    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mmdeploy_version": __version__,
        "kind": "estimate" if estimate else "measurement",
        "machine": machine if machine is not None else machine_info(),
        "target": target.model_dump() if target is not None else None,
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "results": results,
        "accuracy": accuracy or [],
        "budgets": [],
        "passed": True,
    }
