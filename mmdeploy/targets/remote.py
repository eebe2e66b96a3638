"""Remote targets over SSH, with the system ``ssh`` binary and a worker that needs no install.

1. ``probe``: the host sends ONE self-contained file (:mod:`mmdeploy.targets.device_worker`,
   python >= 3.8 + numpy + the runtime; no mmdeploy, torch or transformers) into a fresh work
   folder on the device and runs ``probe``: board model, L4T release, memory, nvpmodel mode,
   clocks, OS, python, numpy and runtime versions, free disk.  A generic target (``jetson``,
   ``rpi``) takes the detected board's profile.
2. The host prepares each component for the device's runtime (OpenVINO IR / .tflite compiled
   here; for TensorRT the ONNX and build settings, the engine being built on the device), its
   inputs as ``.npz`` and, with ``--accuracy``, the evaluation inputs and the host's reference
   outputs; one tar goes over ssh; ``run`` times it there and prints JSON.
3. The host turns the device's samples into the usual result records (the same statistics,
   size, budgets) plus the device's own numbers (trtexec, tegrastats), and removes the folder.

Keys, known_hosts and jump hosts are the user's ssh configuration; ``BatchMode=yes`` turns a
missing key into an error instead of a password prompt.  Errors name the host and what to
install or fix: exit 2 for the device's setup, 1 when the benchmark ran and failed there.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import uuid
from pathlib import Path

import numpy as np

from mmdeploy.errors import InputError, MMDeployError
from mmdeploy.targets import config_hint

WORKER = Path(__file__).with_name("device_worker.py")
WORKER_NAME = "mmdeploy_device_worker.py"
MIN_PYTHON = (3, 8)
INSTALL = {
    "onnxruntime": "pip install onnxruntime",
    "openvino": "pip install openvino",
    "tflite": "pip install tflite-runtime (or ai-edge-litert)",
    "tensorrt": "JetPack's TensorRT (sudo apt install nvidia-tensorrt: trtexec and python3-libnvinfer)",
}
RUNTIME_DISTS = {"onnxruntime": ("onnxruntime",), "openvino": ("openvino",),
                 "tflite": ("tflite-runtime", "ai-edge-litert"), "tensorrt": ("tensorrt",)}
HOT_C = 95.0  # junction temperatures above this are where Jetson modules start throttling


class RemoteError(MMDeployError):
    """The device ran the benchmark and it failed there (exit 1: not the user's input)."""

    exit_code = 1


def _split_host(host: str, port: int) -> tuple[str, int]:
    """``user@addr:2222`` -> (``user@addr``, 2222)."""
    if host.count(":") == 1 and host.rsplit(":", 1)[1].isdigit():
        addr, p = host.rsplit(":", 1)
        return addr, int(p)
    return host, port


class SSH:
    def __init__(self, profile, connect_timeout: int = 10):
        if not profile.host:
            raise InputError(f"target {profile.name} runs on a remote device but no host is configured",
                             f"pass --host user@address[:port], or set host: in {config_hint(profile)} "
                             f"(or use --estimate for a roofline ESTIMATE)")
        if shutil.which("ssh") is None:
            raise InputError("the ssh client is not installed", "install OpenSSH (e.g. apt-get install openssh-client)")
        self.profile = profile
        self.host, self.port = _split_host(profile.host, profile.port)
        # ssh keeps the first value given for an option: the profile's own options come first
        self.options = ["-p", str(self.port)]
        for opt in profile.ssh_options:
            self.options += ["-o", opt]
        if profile.identity_file:
            self.options += ["-i", str(Path(profile.identity_file).expanduser())]
        self.options += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                         "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR"]

    def run(self, command: str, stdin: bytes | None = None, timeout: float | None = None):
        return subprocess.run(["ssh", *self.options, self.host, command], input=stdin,
                              capture_output=True, timeout=timeout)

    def connection_error(self, proc) -> InputError:
        """ssh's own failure (exit 255) as one line naming the host and what to fix."""
        lines = proc.stderr.decode(errors="replace").strip().splitlines() if proc is not None else []
        why = lines[-1] if lines else ("timed out" if proc is None else f"ssh exit {proc.returncode}")
        where = f"{self.host} port {self.port}"
        if "Permission denied" in why or "publickey" in why:
            return InputError(f"{where} refused the SSH key: {why}",
                              "add your public key to ~/.ssh/authorized_keys on the device, or pass --identity "
                              f"FILE (identity_file: in {config_hint(self.profile)})")
        return InputError(f"cannot reach target {self.profile.name} at {where} over SSH: {why}",
                          f"check host/port (--host user@address:port or host: in {config_hint(self.profile)}) "
                          "and that `ssh` logs in without a password (keys, known_hosts)")

    def check(self) -> None:
        """Fail early, naming what to configure, when the device cannot be reached."""
        try:
            proc = self.run("true", timeout=60)
        except subprocess.TimeoutExpired:
            proc = None
        if proc is None or proc.returncode != 0:
            raise self.connection_error(proc)


def _device_error(ssh: SSH, proc, profile, workdir: str) -> MMDeployError:
    """The worker's ``error[setup|run]: ...`` line (or ssh's / the shell's) as an error."""
    if proc.returncode == 255:
        return ssh.connection_error(proc)
    err = proc.stderr.decode(errors="replace").strip().splitlines()
    last = err[-1] if err else f"exit {proc.returncode}"
    fix = f"fix the device's setup (python: {profile.python}, runtime: {profile.backend}; {config_hint(profile)})"
    if last.startswith("error[setup]: "):
        return InputError(f"on {ssh.host}: {last[len('error[setup]: '):]}", fix)
    if last.startswith("error[run]: "):
        return RemoteError(f"benchmark on {ssh.host} failed: {last[len('error[run]: '):]}",
                           "see the message; the device's work folder was removed")
    if "No space left on device" in last or "Disk quota exceeded" in last:
        return InputError(f"on {ssh.host}: the disk holding {workdir} is full ({last})",
                          f"free space on the device, or set workdir: in {config_hint(profile)}")
    if proc.returncode == 127 or "not found" in last or ("No such file" in last and profile.python in last):
        return InputError(f"on {ssh.host}: {profile.python} was not found ({last})",
                          f"install python3 (>= 3.8) with numpy there, or pass --device-python PATH "
                          f"(python: in {config_hint(profile)})")
    return RemoteError(f"benchmark on {ssh.host} failed: {last}", fix)


# --------------------------------------------------------------------------- probe and profile


def probe(ssh: SSH, profile, workdir: str) -> dict:
    """Ship the worker into ``workdir`` and run ``probe`` there."""
    q = shlex.quote(workdir)
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in profile.env.items())
    cmd = (f"mkdir -p {q} && cat > {q}/{WORKER_NAME} && cd {q} && "
           f"{env} {shlex.quote(profile.python)} {WORKER_NAME} probe .")
    proc = ssh.run(cmd, stdin=WORKER.read_bytes(), timeout=120)
    if proc.returncode != 0:
        raise _device_error(ssh, proc, profile, workdir)
    try:
        info = json.loads(proc.stdout.decode(errors="replace"))
    except json.JSONDecodeError:
        raise RemoteError(f"the device {ssh.host} did not answer the probe with JSON",
                          f"run `{profile.python} {WORKER_NAME} probe .` there by hand") from None
    version = tuple(int(x) for x in info.get("python", "0.0").split(".")[:2])
    if version < MIN_PYTHON:
        raise InputError(f"on {ssh.host}: {profile.python} is Python {info.get('python')}; the device worker "
                         "needs 3.8 or newer", "install python3.8+ there and pass --device-python PATH")
    return info


def apply_board(profile, info: dict, extra_dirs=None):
    """(profile to run with, board record): a generic profile becomes the detected board's."""
    from mmdeploy.targets import board_profiles
    from mmdeploy.targets.boards import identify

    board = identify(info, kind=profile.name if profile.boards else None)
    if profile.boards:
        chosen = next((p for p in board_profiles(profile, extra_dirs) if p.name == board["profile"]), None)
        if chosen is not None:
            chosen = chosen.model_copy(update={"host": profile.host})
            return chosen, board
        board["applied"] = f"{profile.name} (generic: board not recognised)"
        return profile, board
    board["applied"] = profile.name
    return profile, board


def has_runtime(info: dict, runtime: str) -> bool:
    """Whether the probed device has ``runtime`` (TensorRT: its python module or trtexec)."""
    have = info.get("runtimes", {})
    if runtime == "tensorrt" and (have.get("tensorrt") or info.get("trtexec")):
        return True
    return any(d in have for d in RUNTIME_DISTS[runtime])


def check_runtime(ssh: SSH, profile, info: dict, runtimes: set[str]) -> None:
    """numpy and every runtime the items need, before anything large is copied."""
    if not info.get("numpy"):
        raise InputError(f"on {ssh.host}: numpy is not installed for {profile.python}",
                         "install it there (pip install numpy, or sudo apt install python3-numpy), or pass "
                         "--device-python PATH of an interpreter that has it")
    for rt in sorted(runtimes):
        if has_runtime(info, rt):
            continue
        raise InputError(f"on {ssh.host}: the {rt} runtime is not installed for {profile.python}",
                         f"install it there: {INSTALL[rt]}; or pass --device-python PATH of an interpreter that has it")


# --------------------------------------------------------------------------- staging


def _reference_dir(item) -> Path:
    """The host's reference for accuracy: the bundle's ONNX of the component, else the item."""
    from mmdeploy.artifact import read_manifest

    if item.manifest.format == "onnx" or item.bundle is None:
        return item.path
    for ref in read_manifest(item.bundle).artifacts:
        if ref.component == item.component and ref.format == "onnx":
            return Path(item.bundle) / ref.path
    return item.path


def _runtime_for(fmt: str, profile) -> str | None:
    from mmdeploy.targets import BACKEND_FORMATS

    for backend in [profile.backend, *profile.also_runs]:
        if fmt in BACKEND_FORMATS.get(backend, ()):
            return backend
    return None


def stage(items, settings, profile, payload: Path, scratch: Path) -> list[dict]:
    """Write each item's files, inputs and request entry under ``payload/items/<i>``."""
    from mmdeploy.artifact import REFERENCE_NAME, read_manifest
    from mmdeploy.bench import harness

    entries = []
    for i, item in enumerate(items):
        runtime = _runtime_for(item.manifest.format, profile)
        if runtime is not None and item.manifest.format != "tensorrt-bundle":
            run_dir = item.path
        elif profile.backend == "tensorrt":
            run_dir = item.path if item.manifest.format == "tensorrt-bundle" else _trt_bundle(item, profile, scratch)
            runtime = "tensorrt"
        else:
            run_dir, runtime = harness.prepare(item, profile, scratch), profile.backend
        item.run_dir = run_dir
        manifest = read_manifest(run_dir)
        dest = payload / "items" / str(i)
        shutil.copytree(run_dir, dest, ignore=shutil.ignore_patterns(REFERENCE_NAME, "*.plan", "timing.cache"))
        feeds, source = harness.make_feeds(item.path, item.manifest, settings.batch, settings.sequence)
        dtypes = {s.name: s.dtype for s in manifest.inputs}
        feeds = {k: np.asarray(v, dtype=dtypes[k]) if dtypes.get(k) not in (None, "float", "int") else v
                 for k, v in feeds.items()}
        np.savez(dest / "feeds.npz", **feeds)
        meta = manifest.metadata
        size = harness.model_bytes(run_dir)
        entry = {"id": str(i), "host_side": {"format": manifest.format, "precision": manifest.precision,
                                             "size_bytes": size}, "label": f"{item.artifact}/{item.component}", "runtime": runtime,
                 "inputs": f"items/{i}/feeds.npz", "input_source": source, "shapes": harness.shapes_of(feeds),
                 "sequence": harness.sequence_of(feeds, item.manifest),
                 "input_names": meta.get("input_names") or [s.name for s in manifest.inputs],
                 "output_names": meta.get("output_names") or [s.name for s in manifest.outputs],
                 "pad": meta.get("pad_inputs"), "inference_precision": meta.get("inference_precision")}
        if runtime == "tensorrt":
            from mmdeploy.backends.tensorrt import trtexec_command

            build = json.loads((run_dir / "build_settings.json").read_text())
            entry["model"] = f"items/{i}/{build['onnx']}"
            entry["tensorrt"] = {"settings": build, "trtexec_args": trtexec_command(
                build["onnx"], build["profiles"], build["precision"], build["workspace_mb"])[1:]}
        else:
            entry["model"] = f"items/{i}/{meta.get('model_file', 'model.onnx')}"
        entries.append(entry)
    return entries


def _trt_bundle(item, profile, scratch: Path) -> Path:
    """A TensorRT-ready bundle (ONNX + build settings) made here; the engine is built there."""
    from mmdeploy.backends import get_backend

    if item.manifest.format != "onnx":
        raise InputError(f"{item.path} is a {item.manifest.format} artifact; TensorRT on {profile.name} "
                         "builds its engine from ONNX", "pass the ONNX bundle (convert/quantize output)")
    out = scratch / f"{item.artifact}-{item.component}-tensorrt"
    out.mkdir(parents=True)
    # a reduced-precision ONNX (quantize's Q/DQ int8, an fp16 graph) is built at its own precision
    precision = item.manifest.precision if item.manifest.precision in ("fp16", "int8") else profile.precision
    options = {"precision": precision, "component": item.component, **profile.compile, "trt_build": False}
    get_backend("tensorrt").compile(item.path, out, options)
    return out


class _Recorder:
    """A host Runner that keeps every call's feeds and outputs (the device replays the feeds)."""

    def __init__(self, runner):
        self.runner, self.calls = runner, []
        self.name = getattr(runner, "name", "host")
        self.input_names, self.output_names = runner.input_names, runner.output_names

    def run(self, feeds):
        out = self.runner.run(feeds)
        self.calls.append(({k: np.asarray(v) for k, v in feeds.items()}, out))
        return out


class _Replayer:
    """Returns the device's outputs for the recorded calls, in order."""

    def __init__(self, outputs: list[dict], template):
        self.outputs = iter(outputs)
        self.name = "device"
        self.input_names, self.output_names = template.input_names, template.output_names

    def run(self, feeds):
        return next(self.outputs)


def record_accuracy(items, settings, entries, payload: Path):
    """Run the adapter's evaluation on the host's reference runners, recording each call; the
    recorded inputs and outputs of benched components go to the device."""
    from mmdeploy.backends import load_runner
    from mmdeploy.bench.accuracy import measure

    recorders: dict[tuple, _Recorder] = {}

    def loader(item, path=None):
        runner = load_runner(_reference_dir(item) if item is not None else path, threads=settings.threads)
        if item is None:
            return runner
        recorders[(item.artifact, item.component)] = rec = _Recorder(runner)
        return rec

    host = measure(items, loader, limit=settings.accuracy_limit)
    for item, entry in zip(items, entries):
        rec = recorders.get((item.artifact, item.component))
        if rec is None:
            continue
        arrays = {"calls": np.asarray(len(rec.calls))}
        for n, (feeds, out) in enumerate(rec.calls):
            arrays.update({f"in/{n}/{k}": v for k, v in feeds.items()})
            arrays.update({f"ref/{n}/{k}": np.asarray(v) for k, v in out.items()})
        np.savez_compressed(payload / "items" / entry["id"] / "accuracy.npz", **arrays)
        entry["accuracy"] = f"items/{entry['id']}/accuracy.npz"
    return host, recorders


def replay_accuracy(items, settings, recorders, device_outputs: dict[str, list[dict]], entries, host_records):
    """The adapter's task metric on the device's outputs (same calls, same order)."""
    from mmdeploy.backends import load_runner
    from mmdeploy.bench.accuracy import measure

    by_key = {(it.artifact, it.component): e["id"] for it, e in zip(items, entries)}

    def loader(item, path=None):
        if item is None:
            return load_runner(path, threads=settings.threads)
        key = (item.artifact, item.component)
        return _Replayer(device_outputs[by_key[key]], recorders[key])

    records = measure(items, loader, limit=settings.accuracy_limit)
    host = {r["artifact"]: r for r in host_records}
    for r in records:
        h = host.get(r["artifact"], {})
        r["evaluated_on"] = "device"
        r["host_value"] = h.get("value")
    return records


# --------------------------------------------------------------------------- run


def _pack(payload: Path) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for child in sorted(payload.iterdir()):
            tar.add(str(child), arcname=child.name)
    return buffer.getvalue()


def _result(item, entry: dict, dev: dict, settings, board: dict, host: str, threads=None) -> dict:
    from mmdeploy.bench.stats import summarize

    host_side = entry["host_side"]
    samples = [float(s) for s in dev.get("samples_ms") or []]
    trt = dev.get("trtexec") or {}
    if not samples and not trt.get("host_latency"):
        raise RemoteError(f"benchmark on {host} returned no timings for {entry['label']}",
                          "see trtexec's output on the device")
    r = {"artifact": item.artifact, "path": str(item.path), "model": item.model, "component": item.component,
         "format": "tensorrt" if entry["runtime"] == "tensorrt" else host_side["format"],
         "precision": host_side["precision"], "runner": f"{entry['runtime']} {dev.get('runtime_version') or ''}".strip(),
         "batch": settings.batch, "threads": threads, "input_source": entry["input_source"],
         "shapes": entry.get("shapes"), "sequence": entry.get("sequence"),
         "load_ms": dev.get("load_ms"), "first_inference_ms": dev.get("first_inference_ms") or (samples[0] if samples else None),
         "rss_delta_mb": None, "host": host, "board": board.get("profile") or board.get("identity"),
         "remote_path": entry["model"]}
    if samples:
        r.update(summarize(samples))
    else:  # trtexec without per-inference times (--exportTimes): its own summary
        lat = trt["host_latency"]
        r.update({"n": None, "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90", lat.get("p95")),
                  "p99_ms": lat.get("p99"), "mean_ms": lat.get("mean"), "std_ms": None,
                  "min_ms": lat.get("min"), "max_ms": lat.get("max"), "latency_source": "trtexec summary"})
    size = host_side["size_bytes"]
    r["size_bytes"], r["size_mb"] = size, size / 1e6
    mean_s = r["mean_ms"] / 1e3
    r["runs_per_s"] = 1.0 / mean_s if mean_s > 0 else float("inf")
    r["throughput_per_s"] = r["batch"] / mean_s if mean_s > 0 else float("inf")
    r["peak_rss_mb"] = dev.get("peak_rss_mb")
    r["samples_ms"] = samples
    if trt:
        r["trtexec"] = trt
        r["gpu_compute_p50_ms"] = (trt.get("gpu_compute") or {}).get("p50")
        r["h2d_mean_ms"] = (trt.get("h2d") or {}).get("mean")
        r["d2h_mean_ms"] = (trt.get("d2h") or {}).get("mean")
        if trt.get("throughput_qps"):
            r["throughput_per_s"] = trt["throughput_qps"] * settings.batch
    if dev.get("engine"):
        r["engine"] = dev["engine"]
    power = dev.get("power")
    if power:
        r["power"] = power
        for key in ("power_avg_mw", "power_peak_mw", "energy_per_inference_mj", "peak_temp_c",
                    "gpu_util_pct", "emc_util_pct"):
            r[key] = power.get(key)
    if dev.get("accuracy"):
        r["device_parity"] = dev["accuracy"]
    return r


def warnings_for(board: dict, results: list[dict], host: str) -> list[str]:
    """Clock and thermal warnings a Jetson user would want next to the numbers."""
    out = []
    if board.get("jetson_clocks") is False:
        out.append(f"{host}: clocks were not locked (jetson_clocks off, nvpmodel {board.get('nvpmodel') or '?'}): "
                   "DVFS moves latency between runs; run `sudo jetson_clocks` before benchmarking")
    for r in results:
        p = r.get("power") or {}
        lo, hi = p.get("gpu_mhz_min"), p.get("gpu_mhz_max")
        if lo and hi and lo < 0.9 * hi:
            out.append(f"{host}: {r['artifact']}/{r['component']}: the GPU clock sagged to {lo:.0f} MHz "
                       f"(max {hi:.0f}) under load: the board throttled during the run")
        if (r.get("peak_temp_c") or 0) >= HOT_C:
            out.append(f"{host}: {r['artifact']}/{r['component']}: peak temperature {r['peak_temp_c']:.1f} C: "
                       "thermal throttling likely; improve cooling or lower the nvpmodel mode")
    return out


def _machine(info: dict, board: dict) -> dict:
    tools = {"python": info.get("python"), "numpy": info.get("numpy"), **info.get("runtimes", {})}
    return {"hostname": info.get("hostname"), "system": f"{info.get('os') or '?'} (kernel {info.get('kernel')})",
            "arch": info.get("arch"), "cpu_model": info.get("cpu_model"), "cpu_count": info.get("cpu_count"),
            "cpu_affinity": info.get("cpu_count"), "governor": info.get("governor", "unknown"),
            "loadavg": info.get("loadavg"),
            "memory_gb": board.get("memory_gb"), "tools": {k: v for k, v in tools.items() if v},
            "board": board}


def run_remote(items, settings, profile, keep: bool = False, timeout: float | None = None,
               skip_missing: bool = False, also_runs: tuple[str, ...] = ()) -> dict:
    """Bench the harness ``items`` on the profile's device; returns the bench JSON document.

    ``skip_missing``: an item whose runtime the device lacks, or that fails there, is left out
    (``doc["skipped"]``: label -> one line) instead of failing the run; ``also_runs``: runtimes the device is asked
    to run as shipped besides the (board) profile's (the device agent's candidates)."""
    from mmdeploy.bench import harness

    ssh = SSH(profile)
    ssh.check()
    workdir = f"{profile.workdir.rstrip('/')}/{uuid.uuid4().hex[:12]}"
    scratch = Path(tempfile.mkdtemp(prefix="mmdeploy-remote-"))
    skipped: dict[str, str] = {}
    try:
        info = probe(ssh, profile, workdir)
        run_profile, board = apply_board(profile, info)
        if also_runs:
            extra = [r for r in also_runs if r != run_profile.backend and r not in run_profile.also_runs]
            run_profile = run_profile.model_copy(update={"also_runs": [*run_profile.also_runs, *extra]})
        payload = scratch / "payload"
        payload.mkdir()
        entries = stage(items, settings, run_profile, payload, scratch / "build")
        if skip_missing:
            check_runtime(ssh, run_profile, info, set())  # numpy
            keep_ids = [k for k, e in enumerate(entries) if has_runtime(info, e["runtime"])]
            for k, e in enumerate(entries):
                if k not in keep_ids:
                    skipped[e["label"]] = (f"the {e['runtime']} runtime is not installed for {profile.python} on "
                                           f"{ssh.host} ({INSTALL[e['runtime']]})")
                    shutil.rmtree(payload / "items" / e["id"])
            items, entries = [items[k] for k in keep_ids], [entries[k] for k in keep_ids]
            if not entries:
                return {"results": [], "skipped": skipped, "warnings": [],
                        "remote": {"host": ssh.host, "port": ssh.port, "workdir": workdir, "python": profile.python},
                        "device": {"host": ssh.host, "board": board, "probe": info}}
        check_runtime(ssh, run_profile, info, {e["runtime"] for e in entries})
        host_acc, recorders = (record_accuracy(items, settings, entries, payload) if settings.accuracy
                               else (None, {}))
        request = {"settings": {"warmup": settings.warmup, "iters": settings.iters or 0,
                                "duration": settings.duration, "threads": settings.threads or run_profile.threads,
                                "batch": settings.batch},
                   "board": board.get("profile") or "unknown", "items": entries, "keep_going": skip_missing}
        (payload / "request.json").write_text(json.dumps(request))
        blob = _pack(payload)
        free = info.get("free_bytes")
        if free is not None and free < 2 * len(blob) + (64 << 20):
            raise InputError(f"on {ssh.host}: only {free / 1e6:.0f} MB free where {workdir} lives; the benchmark "
                             f"needs about {2 * len(blob) / 1e6 + 64:.0f} MB",
                             f"free space on the device, or set workdir: in {config_hint(profile)}")
        q = shlex.quote(workdir)
        proc = ssh.run(f"tar -C {q} -xzf -", stdin=blob, timeout=600)
        if proc.returncode != 0:
            raise _device_error(ssh, proc, run_profile, workdir)
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in profile.env.items())
        proc = ssh.run(f"cd {q} && {env} {shlex.quote(profile.python)} {WORKER_NAME} run .", timeout=timeout)
        if proc.returncode != 0:
            raise _device_error(ssh, proc, run_profile, workdir)
        try:
            dev = json.loads(proc.stdout.decode(errors="replace"))
        except json.JSONDecodeError:
            raise RemoteError(f"the device {ssh.host} did not return a JSON document",
                              f"run `{profile.python} {WORKER_NAME} run DIR` there by hand") from None
        device_outputs = {}
        for d in dev["results"]:
            if d.get("accuracy_file"):
                got = ssh.run(f"cat {q}/{shlex.quote(d['accuracy_file'])}", timeout=600)
                with np.load(io.BytesIO(got.stdout)) as z:
                    calls: dict[int, dict] = {}
                    for key in z.files:
                        _, n, name = key.split("/", 2)
                        calls.setdefault(int(n), {})[name] = z[key]
                device_outputs[d["id"]] = [calls[n] for n in sorted(calls)]
    finally:
        if not keep:
            try:
                ssh.run(f"rm -rf {shlex.quote(workdir)}", timeout=120)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(scratch, ignore_errors=True)
    by_id = {d["id"]: d for d in dev["results"]}
    if skip_missing:  # an item that failed there is skipped with the device's one line
        for e in entries:
            if by_id[e["id"]].get("error"):
                skipped[e["label"]] = f"failed on {ssh.host}: {by_id[e['id']]['error']}"
        kept = [(item, e) for item, e in zip(items, entries) if not by_id[e["id"]].get("error")]
        items, entries = [k[0] for k in kept], [k[1] for k in kept]
    threads = request["settings"]["threads"]
    results = [_result(item, e, by_id[e["id"]], settings, board, ssh.host, threads)
               for item, e in zip(items, entries)]
    accuracy = None
    if settings.accuracy:
        accuracy = replay_accuracy(items, settings, recorders, device_outputs, entries, host_acc)
    doc = harness.document(results, settings, run_profile, accuracy=accuracy, machine=_machine(dev["device"], board))
    doc["remote"] = {"host": ssh.host, "port": ssh.port, "workdir": workdir, "python": profile.python}
    doc["device"] = {"host": ssh.host, "board": board, "probe": dev["device"]}
    doc["warnings"] = warnings_for(board, results, ssh.host)
    if skip_missing:
        doc["skipped"] = skipped
    return doc


def run_remote_hosts(items, settings, profile) -> dict:
    """``--host a,b,c``: the same benchmark on each device in parallel, one document with a row
    per board (results carry ``host`` and ``board``)."""
    from concurrent.futures import ThreadPoolExecutor

    hosts = [h.strip() for h in (profile.host or "").split(",") if h.strip()]
    if len(hosts) <= 1:
        return run_remote(items, settings, profile)
    import copy

    def one(host):
        try:
            return run_remote(copy.deepcopy(items), settings, profile.model_copy(update={"host": host}))
        except MMDeployError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=len(hosts)) as pool:
        docs = list(pool.map(one, hosts))
    failed = [(h, d) for h, d in zip(hosts, docs) if isinstance(d, MMDeployError)]
    if failed:
        host, exc = failed[0]
        more = f" (and {len(failed) - 1} more host(s))" if len(failed) > 1 else ""
        raise type(exc)(exc.message + more, exc.hint)
    doc = docs[0]
    doc["results"] = [r for d in docs for r in d["results"]]
    doc["accuracy"] = [dict(a, host=d["remote"]["host"]) for d in docs for a in d.get("accuracy") or []]
    doc["devices"] = [d["device"] for d in docs]
    doc["warnings"] = [w for d in docs for w in d.get("warnings", [])]
    doc["remote"] = {"host": ", ".join(d["remote"]["host"] for d in docs), "hosts": [d["remote"] for d in docs]}
    return doc
