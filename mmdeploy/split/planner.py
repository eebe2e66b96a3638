"""Choosing where to cut (Neurosurgeon): edge compute + transfer + cloud compute, per candidate.

The component is cut into segments at its block boundaries (segment 0: inputs → block 0,
segment k: block k-1 → block k, the last: block N-1 → outputs).  A **profile** holds each
segment's time on one target: measured here with ONNX Runtime at the target's thread count, or,
when the target cannot be measured here, a roofline estimate from its target profile
(``mmdeploy/targets/profiles/*.yaml``: peak GFLOP/s and memory bandwidth), labelled ``estimated``.  Profiles are JSON files and can be saved and reused.

For a cut after block k::

    edge_ms  = sum(segments[0..k]) on the edge profile
    link_ms  = rtt + (bytes crossing k + output bytes) * 8 / bandwidth
    cloud_ms = sum(segments[k+1..]) on the cloud profile

plus the two extremes: edge-only (everything on the device, nothing sent) and cloud-only (the
inputs sent, everything in the cloud).
"""

from __future__ import annotations

import json
import platform
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from mmdeploy.errors import InputError
from mmdeploy.split import partition

_CPU_RE = re.compile(r"^(?:cpu|local)(?:-(\d+)t)?(-int8)?$")


class SegmentTime(BaseModel):
    name: str  # "block:0" ... "head"
    ms: float
    gflop: float = 0.0


class Profile(BaseModel):
    """Per-segment latency of one component on one target."""

    target: str
    kind: str  # "measured" | "estimated"
    threads: int | None = None
    machine: str = ""
    component: str = ""
    model_sha256: str = ""
    runs: int = 0
    segments: list[SegmentTime] = Field(default_factory=list)

    def total(self) -> float:
        return sum(s.ms for s in self.segments)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.model_dump_json(indent=2) + "\n")
        return path


# --------------------------------------------------------------------------- units


def parse_bandwidth(text: str | float) -> float:
    """'20Mbps' / '1.5 Gbps' / '800kbps' / a number of Mbit/s → bits per second."""
    if isinstance(text, (int, float)):
        value, unit = float(text), "mbps"
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmg]?bps|[kmg]bit/s)?\s*", text.lower())
        if not match:
            raise InputError(f"bad bandwidth {text!r}", "write it like 20Mbps, 800kbps or 1Gbps")
        value, unit = float(match.group(1)), (match.group(2) or "mbps").replace("bit/s", "bps")
    if value <= 0:
        raise InputError(f"bandwidth must be positive, got {text!r}", "e.g. 20Mbps")
    return value * {"bps": 1, "kbps": 1e3, "mbps": 1e6, "gbps": 1e9}[unit]


def parse_ms(text: str | float) -> float:
    """'40ms' / '0.04s' / a number of milliseconds → milliseconds."""
    if isinstance(text, (int, float)):
        return float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*(ms|s|us)?\s*", text.lower())
    if not match:
        raise InputError(f"bad duration {text!r}", "write it like 20ms or 0.1s")
    return float(match.group(1)) * {"ms": 1.0, None: 1.0, "s": 1e3, "us": 1e-3}[match.group(2)]


# --------------------------------------------------------------------------- segments


@dataclass
class Segment:
    name: str
    inputs: list[str]
    outputs: list[str]
    model: Any  # onnx.ModelProto


@dataclass
class Segmentation:
    graph: partition.Graph
    blocks: list[partition.Block]
    cuts: list[partition.CutAnalysis]  # one per block
    segments: list[Segment]


def segment(graph: partition.Graph) -> Segmentation:
    """Segments between consecutive block boundaries (extracted with onnx.utils.Extractor)."""
    from onnx.utils import Extractor

    found = partition.blocks(graph)
    if not found:
        raise InputError("no encoder blocks found in this graph: the planner has no candidate cuts",
                         "cut at a tensor name with --at TENSOR_NAME")
    cuts = [partition.analyse_cut(graph, [b.tensor]) for b in found]
    extractor = Extractor(graph.model)
    segments = []
    previous = list(graph.inputs)
    boundaries = [c.crossing for c in cuts] + [list(graph.outputs)]
    for i, crossing in enumerate(boundaries):
        outputs = [t for t in crossing if t not in previous]
        inputs = previous
        model = extractor.extract_model(inputs, outputs)
        name = f"block:{i}" if i < len(cuts) else "head"
        segments.append(Segment(name, inputs, outputs, model))
        previous = crossing
    return Segmentation(graph, found, cuts, segments)


def chain_values(seg: Segmentation, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every boundary tensor's value for ``feeds`` (runs the full graph once with extra outputs)."""
    import onnx

    wanted = sorted({t for c in seg.cuts for t in c.crossing if t not in feeds})
    model = onnx.ModelProto()
    model.CopyFrom(seg.graph.model)
    known = {o.name for o in model.graph.output}
    for name in wanted:
        if name not in known:
            model.graph.output.append(seg.graph.value_info[name])
    runner = _runner(model)
    values = dict(feeds)
    values.update(runner.run({k: v for k, v in feeds.items() if k in runner.input_names}))
    return values


def _runner(model, threads: int | None = None, name: str = "onnxruntime"):
    """An ORT runner for an in-memory ModelProto (written to a temporary file, removed once loaded)."""
    import os
    import tempfile

    import onnx

    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner

    fd, path = tempfile.mkstemp(suffix=".onnx", prefix="mmdeploy-split-")
    os.close(fd)
    try:
        onnx.save(model, path)
        return OnnxRuntimeRunner(path, threads=threads, name=name)
    finally:
        os.unlink(path)


def cut_bytes(seg: Segmentation, values: dict[str, np.ndarray], compress: str = "none") -> list[int]:
    """Bytes per inference (per sample) crossing each block cut, after compression."""
    batch = max(1, int(next(iter(values[i] for i in seg.graph.inputs)).shape[0]))
    result = []
    for cut in seg.cuts:
        total = 0
        for t in cut.crossing:
            v = np.asarray(values[t])
            n = v.nbytes // batch
            if t not in cut.from_inputs and v.dtype == np.float32 and compress == "fp16":
                n //= 2
            elif t not in cut.from_inputs and v.dtype == np.float32 and compress == "int8":
                n = n // 4 + 5
            total += n
        result.append(int(total))
    return result


def io_bytes(seg: Segmentation, values: dict[str, np.ndarray]) -> tuple[int, int]:
    batch = max(1, int(np.asarray(values[seg.graph.inputs[0]]).shape[0]))
    return (sum(np.asarray(values[i]).nbytes for i in seg.graph.inputs) // batch,
            sum(np.asarray(values[o]).nbytes for o in seg.graph.outputs) // batch)


def segment_gflops(seg: Segmentation, feeds: dict[str, np.ndarray]) -> list[float]:
    """GFLOP of each segment for one sample (MatMul, Gemm, Conv; shapes from ORT's symbolic inference)."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(seg.graph.model)
    del model.graph.value_info[:]
    for inp in model.graph.input:
        if inp.name in feeds:
            dims = inp.type.tensor_type.shape.dim
            for d, size in zip(dims, (1,) + tuple(feeds[inp.name].shape[1:])):
                d.Clear()
                d.dim_value = int(size)
    inferred = partition.infer_shapes(model)
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 0 for d in v.type.tensor_type.shape.dim]
        shapes[v.name] = dims
    for t in inferred.graph.initializer:
        shapes[t.name] = list(t.dims)

    def flops(node) -> float:
        out = shapes.get(node.output[0], [])
        if not out or 0 in out:
            return 0.0
        if node.op_type in ("MatMul", "Gemm"):
            a = shapes.get(node.input[0], [])
            k = (a[-2] if node.op_type == "Gemm" and any(x.name == "transA" and x.i for x in node.attribute)
                 else a[-1]) if a else 0
            return 2.0 * float(np.prod(out)) * k
        if node.op_type == "Conv":
            w = shapes.get(node.input[1], [])
            return 2.0 * float(np.prod(out)) * float(np.prod(w[1:])) if w else 0.0
        return 0.0

    result = []
    for s in seg.segments:
        names = {n.name for n in s.model.graph.node}
        total = sum(flops(n) for n in inferred.graph.node if n.name in names)
        result.append(total / 1e9)
    return result


# --------------------------------------------------------------------------- profiles


def time_runner(runner, feeds: dict[str, np.ndarray], runs: int = 10, warmup: int = 2) -> list[float]:
    """Milliseconds per run, each run timed alone (a small local loop; the bench harness does more)."""
    for _ in range(warmup):
        runner.run(feeds)
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        runner.run(feeds)
        samples.append((time.perf_counter() - t0) * 1e3)
    return samples


def machine() -> str:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cpus, {platform.system()}"


def int8_dynamic(model):
    """The model with int8 weights (onnxruntime.quantization.quantize_dynamic, per-channel QInt8):
    the "-int8" targets, e.g. a cloud that serves the quantized artifact."""
    import os
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="mmdeploy-split-q-") as tmp:
        src, dst = os.path.join(tmp, "in.onnx"), os.path.join(tmp, "out.onnx")
        onnx.save(model, src)
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        return onnx.load(dst)


def measure_profile(seg: Segmentation, values: dict[str, np.ndarray], target: str, threads: int | None,
                    runs: int = 10, gflops: list[float] | None = None, int8: bool = False) -> Profile:
    """Time each segment alone with ONNX Runtime (``threads`` intra-op threads, no spinning)."""
    times = []
    for s in seg.segments:
        runner = _runner(int8_dynamic(s.model) if int8 else s.model, threads=threads, name=s.name)
        feeds = {k: values[k] for k in runner.input_names}
        times.append(float(np.median(time_runner(runner, feeds, runs=runs))))
        del runner
    gflops = gflops or [0.0] * len(times)
    return Profile(target=target, kind="measured", threads=threads, machine=machine(), runs=runs,
                   segments=[SegmentTime(name=s.name, ms=t, gflop=g) for s, t, g in zip(seg.segments, times, gflops)])


def segment_weight_bytes(seg: Segmentation) -> list[int]:
    return [sum(int(np.prod(t.dims)) * onnx_itemsize(t.data_type) for t in s.model.graph.initializer)
            for s in seg.segments]


def onnx_itemsize(elem_type: int) -> int:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(elem_type).itemsize


def estimate_profile(seg: Segmentation, target, gflops: list[float]) -> Profile:
    """Roofline estimate per segment from a target profile (``mmdeploy/targets``): the larger of
    FLOPs / peak_gflops and weight bytes / memory bandwidth, as ``mmdeploy.targets.estimate`` does
    for whole models.  A lower bound for an ideal runtime, labelled ``estimated``."""
    from mmdeploy.targets.estimate import LABEL

    if not target.peak_gflops or not target.memory_bandwidth_gbs:
        raise InputError(f"target {target.name} has no peak_gflops / memory_bandwidth_gbs to estimate from",
                         f"add them to its profile ({target.source}) or measure it and pass the saved .json")
    segments = []
    for s, g, nbytes in zip(seg.segments, gflops, segment_weight_bytes(seg)):
        ms = max(g / target.peak_gflops * 1e3, nbytes / (target.memory_bandwidth_gbs * 1e9) * 1e3)
        segments.append(SegmentTime(name=s.name, ms=ms, gflop=g))
    return Profile(target=target.name, kind="estimated", threads=target.threads,
                   machine=f"{LABEL}: {target.peak_gflops:g} GFLOP/s, {target.memory_bandwidth_gbs:g} GB/s "
                           f"({target.description or target.backend})", segments=segments)


def local_target(target: str) -> tuple[int | None, bool] | None:
    """(threads, int8) for a target measured here (``cpu``, ``cpu-2t``, ``cpu-4t-int8``), else None."""
    match = _CPU_RE.match(target.strip().lower())
    if not match:
        return None
    return (int(match.group(1)) if match.group(1) else None), bool(match.group(2))


def get_profile(target: str, seg: Segmentation, values: dict[str, np.ndarray], gflops: list[float],
                runs: int = 10) -> Profile:
    """A profile for ``target``: a saved JSON file, a local CPU measurement (``cpu-Nt[-int8]`` or a
    local onnxruntime target profile), or a roofline estimate from a target profile (remote or
    other backends: ``rpi5``, ``jetson-orin-nano``...)."""
    path = Path(target)
    if target.endswith(".json"):
        if not path.is_file():
            raise InputError(f"profile {target} does not exist", "save one with --save-profiles DIR")
        try:
            profile = Profile.model_validate(json.loads(path.read_text()))
        except ValueError as exc:
            raise InputError(f"{target} is not a profile ({str(exc).splitlines()[0]})",
                             "save one with --save-profiles DIR") from None
        names = [s.name for s in seg.segments]
        if [s.name for s in profile.segments] != names:
            raise InputError(f"profile {target} has segments {[s.name for s in profile.segments]} "
                             f"but this component has {names}", "re-profile this component")
        return profile
    local = local_target(target)
    if local is not None:
        return measure_profile(seg, values, target, local[0], runs=runs, gflops=gflops, int8=local[1])
    from mmdeploy.targets import get_target, list_targets

    try:
        profile = get_target(target)
    except InputError:
        raise InputError(f"unknown target {target!r}",
                         "use cpu-Nt or cpu-Nt-int8 (measured here with N threads), a saved profile .json, "
                         "or a target profile: " + ", ".join(sorted(list_targets()))) from None
    if profile.backend == "onnxruntime" and not profile.remote:  # runs here: measure it
        return measure_profile(seg, values, target, profile.threads, runs=runs, gflops=gflops,
                               int8=profile.precision == "int8")
    return estimate_profile(seg, profile, gflops)


# --------------------------------------------------------------------------- planning


def plan(edge: Profile, cloud: Profile, cut_bytes_list: list[int], input_bytes: int, output_bytes: int,
         bandwidth_bps: float, rtt_ms: float) -> dict[str, Any]:
    """Rows for every strategy and the choice (lowest total; ``best_split`` among real cuts)."""

    def link(nbytes: int) -> float:
        return rtt_ms + (nbytes + output_bytes) * 8 / bandwidth_bps * 1e3

    e = [s.ms for s in edge.segments]
    c = [s.ms for s in cloud.segments]
    rows = [{"strategy": "edge-only", "at": None, "bytes": 0, "edge_ms": sum(e), "link_ms": 0.0, "cloud_ms": 0.0}]
    for k, nbytes in enumerate(cut_bytes_list):
        rows.append({"strategy": "split", "at": f"block:{k}", "bytes": nbytes, "edge_ms": sum(e[:k + 1]),
                     "link_ms": link(nbytes), "cloud_ms": sum(c[k + 1:])})
    rows.append({"strategy": "cloud-only", "at": None, "bytes": input_bytes, "edge_ms": 0.0,
                 "link_ms": link(input_bytes), "cloud_ms": sum(c)})
    for r in rows:
        r["total_ms"] = r["edge_ms"] + r["link_ms"] + r["cloud_ms"]
    choice = min(rows, key=lambda r: r["total_ms"])
    best_split = min((r for r in rows if r["strategy"] == "split"), key=lambda r: r["total_ms"])
    estimated = [p.target for p in (edge, cloud) if p.kind == "estimated"]
    return {"bandwidth_mbps": bandwidth_bps / 1e6, "rtt_ms": rtt_ms, "rows": rows, "choice": choice,
            "best_split": best_split, "estimated": estimated,
            "edge": {"target": edge.target, "kind": edge.kind}, "cloud": {"target": cloud.target, "kind": cloud.kind}}


def sweep(edge: Profile, cloud: Profile, cut_bytes_list: list[int], input_bytes: int, output_bytes: int,
          bandwidths_mbps: list[float], rtt_ms: float) -> list[dict[str, Any]]:
    rows = []
    for mbps in bandwidths_mbps:
        p = plan(edge, cloud, cut_bytes_list, input_bytes, output_bytes, mbps * 1e6, rtt_ms)
        by = {r["strategy"]: r for r in p["rows"] if r["strategy"] != "split"}
        rows.append({"bandwidth_mbps": mbps, "edge_only_ms": by["edge-only"]["total_ms"],
                     "cloud_only_ms": by["cloud-only"]["total_ms"], "best_split_ms": p["best_split"]["total_ms"],
                     "best_split_at": p["best_split"]["at"], "choice": p["choice"]["at"] or p["choice"]["strategy"],
                     "choice_ms": p["choice"]["total_ms"]})
    return rows


def sweep_markdown(rows: list[dict[str, Any]], title: str = "") -> str:
    lines = [f"# {title}", ""] if title else []
    lines += ["| bandwidth (Mbps) | edge-only ms | cloud-only ms | best split ms (cut) | choice |",
              "|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['bandwidth_mbps']:g} | {r['edge_only_ms']:.1f} | {r['cloud_only_ms']:.1f} | "
                     f"{r['best_split_ms']:.1f} ({r['best_split_at']}) | {r['choice']} |")
    return "\n".join(lines) + "\n"


def sweep_plot(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Latency vs bandwidth per strategy (log-x), as a PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["bandwidth_mbps"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(x, [r["edge_only_ms"] for r in rows], "o-", label="edge-only")
    ax.plot(x, [r["cloud_only_ms"] for r in rows], "s-", label="cloud-only")
    ax.plot(x, [r["best_split_ms"] for r in rows], "^-", label="best split")
    for r in rows:
        ax.annotate(r["best_split_at"], (r["bandwidth_mbps"], r["best_split_ms"]), fontsize=7,
                    textcoords="offset points", xytext=(3, 5))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bandwidth (Mbit/s)")
    ax.set_ylabel("end-to-end latency (ms)")
    import textwrap

    ax.set_title("\n".join(textwrap.wrap(title or "split planner", 70)), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plan_for_component(artifact: str | Path, component: str | None, edge_target: str, cloud_target: str,
                       compress: str = "none", runs: int = 10, save_profiles: str | Path | None = None):
    """Load a component, segment it, get both profiles; returns what ``plan``/``sweep`` need."""
    import onnx

    from mmdeploy.artifact import load_reference, sha256_file
    from mmdeploy.split.build import _random_feeds

    comp_dir, comp = partition.load_component(artifact, component)
    model_path = comp_dir / comp.metadata.get("model_file", "model.onnx")
    graph = partition.Graph(onnx.load(str(model_path)))
    seg = segment(graph)
    cases = load_reference(comp_dir)
    feeds = cases[0][0] if cases else _random_feeds([s.model_dump() for s in comp.inputs])
    feeds = {k: v[:1] for k, v in feeds.items() if k in graph.inputs}  # one sample
    values = chain_values(seg, feeds)
    gflops = segment_gflops(seg, feeds)
    profiles = []
    for target in (edge_target, cloud_target):
        profile = get_profile(target, seg, values, gflops, runs=runs)
        profile.component = comp.metadata.get("component") or comp_dir.name
        profile.model_sha256 = profile.model_sha256 or sha256_file(model_path)
        profiles.append(profile)
    if save_profiles:
        for role, profile in zip(("edge", "cloud"), profiles):
            profile.save(Path(save_profiles) / f"{role}.json")
    in_bytes, out_bytes = io_bytes(seg, values)
    return {"segmentation": seg, "edge": profiles[0], "cloud": profiles[1],
            "cut_bytes": cut_bytes(seg, values, compress), "input_bytes": in_bytes, "output_bytes": out_bytes,
            "component": profiles[0].component, "gflops": gflops}
