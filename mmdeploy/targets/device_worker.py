#!/usr/bin/env python3
"""mmdeploy's device worker: ONE self-contained file that the host copies to a device over SSH.

It needs python >= 3.8, numpy and the device's runtime -- never mmdeploy, torch or
transformers -- so a Jetson with JetPack or a Raspberry Pi with tflite-runtime runs it as
they come.  Runtimes: TensorRT (engine built on the device with the Python API, or ``trtexec``
where the Python API is missing; cached under ``~/.cache/mmdeploy/engines`` keyed by the ONNX
sha256 + build settings + TensorRT version + board; timed by ``trtexec`` like users do, with
``tegrastats`` sampled during the timed runs), ONNX Runtime, OpenVINO, tflite-runtime / LiteRT.

    python3 mmdeploy_device_worker.py probe DIR     # JSON: board, OS, python, numpy, runtimes, disk
    python3 mmdeploy_device_worker.py run DIR       # reads DIR/request.json, prints the results JSON

Errors: one line on stderr, ``error[setup]: ...`` (exit 2: install or fix something on the
device) or ``error[run]: ...`` (exit 1: the benchmark ran and failed).  The host owns the
work folder and removes it.  Keep this file importable without numpy (``probe`` must report
a missing numpy, not crash on it) and free of mmdeploy imports (a test checks both).
"""

import glob
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time

ENGINE_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "mmdeploy", "engines")
TRTEXEC_PATHS = ("/usr/src/tensorrt/bin/trtexec", "/usr/local/tensorrt/bin/trtexec")


class DeviceError(Exception):
    """kind "setup" (exit 2) or "run" (exit 1)."""

    def __init__(self, kind, message):
        Exception.__init__(self, message)
        self.kind = kind


# --------------------------------------------------------------------------- probe


def _root(path):
    """``MMDEPLOY_DEVICE_ROOT`` prefixes the board files (device tree, L4T release, devfreq):
    tests replay recorded Jetson trees with it; on a device it is unset."""
    return os.environ.get("MMDEPLOY_DEVICE_ROOT", "") + path


def _read(path, limit=4096, board=False):
    try:
        with open(_root(path) if board else path, "rb") as f:
            return f.read(limit).replace(b"\x00", b"").decode("utf-8", "replace").strip()
    except OSError:
        return None


def _version(dist, module=None):
    """Installed version of a distribution, else of the importable module, else None."""
    try:
        from importlib import metadata

        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - not installed as a distribution (apt packages)
        pass
    if module:
        import importlib.util

        if importlib.util.find_spec(module) is not None:
            try:
                mod = __import__(module)
                return str(getattr(mod, "__version__", "unknown"))
            except Exception:  # noqa: BLE001
                return None
    return None


def trtexec_path():
    return shutil.which("trtexec") or next((p for p in TRTEXEC_PATHS if os.access(p, os.X_OK)), None)


def _run_text(cmd, timeout=10):
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        return proc.stdout.decode("utf-8", "replace").strip()
    except (OSError, subprocess.SubprocessError):
        return None


def clocks_state():
    """jetson_clocks pins min = max frequency of the CPU cores and the GPU (devfreq)."""
    gpu = []
    for d in glob.glob(_root("/sys/class/devfreq/*")):
        name = os.path.basename(d)
        if any(k in name for k in ("gpu", "ga10b", "gv11b", "gp10b", "57000000", "17000000")):
            base = "/sys/class/devfreq/" + name
            lo, hi, cur = (_read(base + "/" + f, board=True) for f in ("min_freq", "max_freq", "cur_freq"))
            if lo and hi:
                gpu.append({"device": name, "min": int(lo), "max": int(hi), "cur": int(cur or 0)})
    cpu_lo = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq")
    cpu_hi = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq")
    if not gpu:
        return {"jetson_clocks": None, "gpu": [], "cpu_min_khz": cpu_lo, "cpu_max_khz": cpu_hi}
    locked = all(g["min"] == g["max"] for g in gpu) and (cpu_lo is None or cpu_lo == cpu_hi)
    return {"jetson_clocks": locked, "gpu": gpu, "cpu_min_khz": cpu_lo, "cpu_max_khz": cpu_hi}


def probe(workdir="."):
    """What the host needs to pick a profile and check the device's setup."""
    os_name = None
    for line in (_read("/etc/os-release", 8192) or "").splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip().strip('"')
    fields = {}
    for line in (_read("/proc/cpuinfo", 65536) or "").splitlines():
        if ":" in line:
            key, value = line.split(":", 1)
            fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model")  # x86: a number; a Raspberry Pi: "Raspberry Pi 5 Model B Rev 1.0"
    cpu_model = fields.get("model name") or (model if model and not model.isdigit() else None) or fields.get("hardware")
    mem_kb = None
    for line in (_read("/proc/meminfo", 8192) or "").splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    try:
        st = os.statvfs(workdir)
        free = st.f_bavail * st.f_frsize
    except OSError:
        free = None
    nvp = _run_text(["nvpmodel", "-q"]) if shutil.which("nvpmodel") else None
    runtimes = {
        "onnxruntime": _version("onnxruntime", "onnxruntime") or _version("onnxruntime-gpu"),
        "openvino": _version("openvino", "openvino"),
        "tflite-runtime": _version("tflite-runtime", "tflite_runtime"),
        "ai-edge-litert": _version("ai-edge-litert", "ai_edge_litert"),
        "tensorrt": _version("tensorrt", "tensorrt"),
    }
    trtexec = trtexec_path()
    return {
        "model": _read("/proc/device-tree/model", board=True) or _read("/sys/firmware/devicetree/base/model", board=True),
        "nv_tegra_release": (_read("/etc/nv_tegra_release", board=True) or "").splitlines()[0:1],
        "memory_kb": mem_kb,
        "nvpmodel": nvp,
        "clocks": clocks_state(),
        "os": os_name,
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "hostname": platform.node(),
        "product": _read("/sys/devices/virtual/dmi/id/product_name"),
        "python": platform.python_version(),
        "python_path": sys.executable,
        "numpy": _version("numpy", "numpy"),
        "runtimes": {k: v for k, v in runtimes.items() if v},
        "trtexec": trtexec,
        "tegrastats": shutil.which("tegrastats"),
        "free_bytes": free,
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") or "unknown",
    }


# --------------------------------------------------------------------------- tegrastats / trtexec


_POWER_RE = re.compile(r"\b([A-Z][A-Z0-9_]*) (\d+)(?:mW)?/(\d+)(?:mW)?\b")
_TEMP_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9_]*)@(-?\d+(?:\.\d+)?)C\b")
_GR3D_RE = re.compile(r"GR3D_FREQ (\d+)%(?:@\[?([\d,]+)\]?)?")
_EMC_RE = re.compile(r"EMC_FREQ (\d+)%(?:@(\d+))?")
_INPUT_RAILS = ("VDD_IN", "POM_5V_IN")  # the board's input rail where the module reports one


def parse_tegrastats(line):
    """One tegrastats line -> {power_mw: {rail: now}, total_mw, temps_c, gpu_pct, gpu_mhz, emc_pct}.

    ``total_mw`` is the input rail (VDD_IN on Orin Nano/NX and Xavier NX, POM_5V_IN on the Nano);
    modules without one (AGX Orin: VDD_GPU_SOC, VDD_CPU_CV, VIN_SYS_5V0) get the sum of rails.
    Sensors reading -256 C are off and dropped.
    """
    rails = {m.group(1): int(m.group(2)) for m in _POWER_RE.finditer(line)
             if not m.group(1).startswith(("RAM", "SWAP", "IRAM"))}
    total = next((rails[r] for r in _INPUT_RAILS if r in rails), sum(rails.values()) if rails else None)
    temps = {m.group(1): float(m.group(2)) for m in _TEMP_RE.finditer(line) if float(m.group(2)) > -200}
    out = {"power_mw": rails, "total_mw": total, "temps_c": temps}
    g = _GR3D_RE.search(line)
    if g:
        out["gpu_pct"] = float(g.group(1))
        if g.group(2):
            out["gpu_mhz"] = max(float(f) for f in g.group(2).split(",") if f)
    e = _EMC_RE.search(line)
    if e:
        out["emc_pct"] = float(e.group(1))
    return out


def summarize_tegrastats(samples, per_second):
    """Power, energy per inference (average power / inferences per second), temperatures and
    utilisation over the timed window."""
    if not samples:
        return None
    totals = [s["total_mw"] for s in samples if s.get("total_mw") is not None]
    temps = {}
    for s in samples:
        for k, v in s["temps_c"].items():
            temps[k] = max(v, temps.get(k, v))
    gpu = [s["gpu_pct"] for s in samples if "gpu_pct" in s]
    emc = [s["emc_pct"] for s in samples if "emc_pct" in s]
    # clocks under load only: an idle GPU clocks down without throttling
    mhz = [s["gpu_mhz"] for s in samples if s.get("gpu_mhz") and s.get("gpu_pct", 0) >= 50]
    avg = sum(totals) / len(totals) if totals else None
    out = {"samples": len(samples), "power_avg_mw": avg, "power_peak_mw": max(totals) if totals else None,
           "energy_per_inference_mj": (avg / per_second) if avg and per_second else None,
           "temps_peak_c": temps, "peak_temp_c": max(temps.values()) if temps else None,
           "gpu_util_pct": sum(gpu) / len(gpu) if gpu else None,
           "emc_util_pct": sum(emc) / len(emc) if emc else None,
           "gpu_mhz_min": min(mhz) if mhz else None, "gpu_mhz_max": max(mhz) if mhz else None,
           "rails_avg_mw": {}}
    for s in samples:
        for k, v in s["power_mw"].items():
            out["rails_avg_mw"][k] = out["rails_avg_mw"].get(k, 0.0) + v / len(samples)
    return out


class Tegrastats:
    """``tegrastats --interval MS`` in the background; lines stamped with the host clock."""

    def __init__(self, interval_ms=100):
        self.lines = []
        self.proc = None
        exe = shutil.which("tegrastats")
        if exe:
            try:
                self.proc = subprocess.Popen([exe, "--interval", str(interval_ms)], stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL)
            except OSError:
                self.proc = None
        if self.proc:
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.append((time.monotonic(), raw.decode("utf-8", "replace").strip()))

    def window(self, t0, t1):
        return [parse_tegrastats(line) for t, line in self.lines if t0 <= t <= t1 + 0.05]

    def stop(self):
        if self.proc:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()


_STAT_RE = re.compile(r"(min|max|mean|median|percentile\((\d+)%\)) = ([\d.eE+-]+) ms")
_SUMMARY_KEYS = {"Latency": "host_latency", "Enqueue Time": "enqueue", "H2D Latency": "h2d",
                 "GPU Compute Time": "gpu_compute", "D2H Latency": "d2h"}


def trt_version_from_tag(tag):
    """trtexec's ``[TensorRT v8502]`` / ``[TensorRT v100300]`` tag -> ``8.5.2`` / ``10.3.0``."""
    digits = tag.lstrip("v")
    if not digits.isdigit() or len(digits) < 4:
        return tag
    if len(digits) >= 6:
        return "%d.%d.%d" % (int(digits[:-4]), int(digits[-4:-2]), int(digits[-2:]))
    return "%d.%d.%d" % (int(digits[0]), int(digits[1]), int(digits[2:]))


def parse_trtexec(log):
    """trtexec's '=== Performance summary ===' (TensorRT 8.x/10.x) -> numbers in ms / qps."""
    out = {}
    m = re.search(r"TensorRT version: ([\d.]+)", log)
    tag = re.search(r"\[TensorRT v(\d+)\]", log)
    if m or tag:
        out["tensorrt_version"] = m.group(1) if m else trt_version_from_tag(tag.group(1))
    for line in log.splitlines():
        body = re.sub(r"^(\[[^\]]*\]\s*)+", "", line.strip())
        if body.startswith("Throughput:"):
            out["throughput_qps"] = float(body.split()[1])
            continue
        for label, key in _SUMMARY_KEYS.items():
            if body.startswith(label + ":"):
                stats = {}
                for name, pct, value in _STAT_RE.findall(body):
                    stats["p" + pct if pct else ("p50" if name == "median" else name)] = float(value)
                out[key] = stats
        if body.startswith("Total Host Walltime:"):
            out["host_walltime_s"] = float(body.split()[3])
        elif body.startswith("Total GPU Compute Time:"):
            out["gpu_compute_total_s"] = float(body.split()[4])
    out["passed"] = "&&&& PASSED" in log
    lines = log.splitlines()
    first = next((i for i, ln in enumerate(lines) if "[E]" in ln), None)
    if first is not None:  # continuation lines ("[6] Invalid Node - Pad_13") carry no [E] tag
        errors = [re.sub(r"^(\[[^\]]*\]\s*)+", "", ln.strip()) for ln in lines[first:]
                  if ln.strip() and not ln.startswith("&&&&")]
        ranked = ("Invalid Node", "Assertion failed", "Error Code", "Unknown option", "Unsupported", "ERROR:")
        errors.sort(key=lambda e: next((i for i, k in enumerate(ranked) if k in e), len(ranked)))
        out["errors"] = errors
    return out


# --------------------------------------------------------------------------- runners


def _np():
    try:
        import numpy
    except ImportError:
        raise DeviceError("setup", "numpy is not installed for %s; install it (pip install numpy, or "
                          "apt install python3-numpy)" % sys.executable) from None
    return numpy


def _feeds(np, path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


class OrtRunner:
    def __init__(self, item, threads):
        try:
            import onnxruntime as ort
        except ImportError:
            raise DeviceError("setup", "onnxruntime is not installed for %s; pip install onnxruntime"
                              % sys.executable) from None
        so = ort.SessionOptions()
        if threads:
            so.intra_op_num_threads = int(threads)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.version = ort.__version__
        self.session = ort.InferenceSession(item["model"], sess_options=so, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds):
        return dict(zip(self.names, self.session.run(self.names, feeds)))


_CORE = []


def _openvino_core(ov):
    """One Core for the process, never destroyed: Cores destroyed in the order they were created
    leave the thread's alternate signal stack unmapped, and the next signal is a segmentation
    fault (see mmdeploy.backends.openvino.core)."""
    if not _CORE:
        _CORE.append(ov.Core())
    return _CORE[0]


class OpenVINORunner:
    """As mmdeploy's own OpenVINO runner: the artifact's inference precision, threads pinned,
    denormals left alone (flushing them changes the process's float state for good), compiled for the static shapes of the feeds it runs (any other shape:
    the dynamic model)."""

    def __init__(self, item, threads):
        try:
            import openvino as ov
        except ImportError:
            raise DeviceError("setup", "openvino is not installed for %s; pip install openvino"
                              % sys.executable) from None
        self.config = {"INFERENCE_PRECISION_HINT": item.get("inference_precision") or "f32",
                       "PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": True}
        if threads:
            self.config["INFERENCE_NUM_THREADS"] = int(threads)
        self.core = _openvino_core(ov)
        self.version = ov.__version__ if hasattr(ov, "__version__") else ov.get_version()
        self.path = item["model"]
        self.requests = {}
        self.inputs = item["input_names"]
        self.outputs = item["output_names"]

    def _request(self, feeds):
        key = tuple(tuple(feeds[n].shape) for n in self.inputs)
        if key not in self.requests and self.requests:
            key = "dynamic"  # the first shape seen is compiled static; any other runs dynamic
        if key not in self.requests:
            model = self.core.read_model(self.path)
            if key != "dynamic":
                try:
                    model.reshape({i: list(shape) for i, shape in enumerate(key)})
                except RuntimeError:
                    model = self.core.read_model(self.path)
            self.requests[key] = self.core.compile_model(model, "CPU", self.config).create_infer_request()
        return self.requests[key]

    def run(self, feeds):
        request = self._request(feeds)
        request.infer([feeds[n] for n in self.inputs])
        return {n: request.get_output_tensor(i).data.copy() for i, n in enumerate(self.outputs)}


def _index(key):
    m = re.search(r"(\d+)$", key)
    return int(m.group(1)) if m else 0


class TFLiteRunner:
    """Signature runner (XNNPACK is the default CPU delegate); int8 I/O quantized with the tensor's
    own scale; a static batch-1 model runs a larger batch sample by sample."""

    def __init__(self, item, threads):
        try:
            from ai_edge_litert.interpreter import Interpreter
            self.version = "ai-edge-litert " + (_version("ai-edge-litert") or "?")
        except ImportError:
            try:
                from tflite_runtime.interpreter import Interpreter
                self.version = "tflite-runtime " + (_version("tflite-runtime") or "?")
            except ImportError:
                raise DeviceError("setup", "neither tflite-runtime nor ai-edge-litert is installed for %s; "
                                  "pip install tflite-runtime (or ai-edge-litert)" % sys.executable) from None
        kwargs = {"num_threads": int(threads)} if threads else {}
        try:
            self.interp = Interpreter(model_path=item["model"], **kwargs)
        except (SystemError, ImportError) as exc:
            cause = repr(exc.__context__ or exc)
            if "multiarray" in cause or "_ARRAY_API" in cause:  # a wheel built against numpy 1.x
                raise DeviceError("setup", "%s was built for numpy 1.x and numpy %s is installed; pip install "
                                  "'numpy<2' there (or use ai-edge-litert)" % (self.version, _np().__version__)) from None
            raise
        sigs = self.interp.get_signature_list()
        key = "serving_default" if "serving_default" in sigs else next(iter(sigs))
        self.runner = self.interp.get_signature_runner(key)
        self.in_keys = dict(zip(item["input_names"], sorted(sigs[key]["inputs"], key=_index)))
        self.out_keys = dict(zip(sorted(sigs[key]["outputs"], key=_index), item["output_names"]))
        details = self.runner.get_input_details()
        self.specs = {n: (details[k]["dtype"], tuple(int(d) for d in details[k]["shape"]),
                          details[k].get("quantization", (0.0, 0))) for n, k in self.in_keys.items()}
        self.out_quant = {k: v.get("quantization", (0.0, 0)) for k, v in self.runner.get_output_details().items()}
        self.pad = item.get("pad") or {}

    def _one(self, np, feeds):
        args = {}
        for name, key in self.in_keys.items():
            dtype, _, (scale, zero) = self.specs[name]
            value = np.asarray(feeds[name])
            if np.dtype(dtype).kind in "iu" and value.dtype.kind == "f" and scale:
                info = np.iinfo(dtype)
                value = np.clip(np.round(value / scale) + zero, info.min, info.max)
            args[key] = np.ascontiguousarray(value, dtype=dtype)
        out = {}
        for k, v in self.runner(**args).items():
            scale, zero = self.out_quant.get(k, (0.0, 0))
            v = np.array(v)
            if v.dtype in (np.int8, np.uint8) and scale:
                v = (v.astype(np.float32) - zero) * np.float32(scale)
            out[self.out_keys.get(k, k)] = v
        return out

    def run(self, feeds):
        np = _np()
        feeds = dict(feeds)
        for name, rule in self.pad.items():
            v = feeds.get(name)
            if v is not None and v.shape[rule["axis"]] < rule["length"]:
                widths = [(0, 0)] * v.ndim
                widths[rule["axis"]] = (0, rule["length"] - v.shape[rule["axis"]])
                feeds[name] = np.pad(v, widths, constant_values=rule.get("value", 0))
        first = next(iter(self.in_keys))
        batch, model_batch = int(feeds[first].shape[0]), self.specs[first][1][0]
        if batch == model_batch:
            return self._one(np, feeds)
        parts = [self._one(np, {n: feeds[n][i:i + model_batch] for n in self.in_keys})
                 for i in range(0, batch, model_batch)]
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


class CudaRT:
    """The few CUDA runtime calls TensorRT's Python API needs, through ctypes (no pycuda/torch)."""

    def __init__(self):
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("cudart") or "libcudart.so"
        try:
            self.lib = ctypes.CDLL(name)
        except OSError:
            raise DeviceError("setup", "libcudart is not loadable (CUDA runtime missing); install JetPack's "
                              "cuda-runtime or use trtexec") from None
        self.c = ctypes
        self.stream = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreate(ctypes.byref(self.stream)), "cudaStreamCreate")

    def _check(self, code, what):
        if code != 0:
            raise DeviceError("run", "%s failed with CUDA error %d" % (what, code))

    def malloc(self, nbytes):
        ptr = self.c.c_void_p()
        self._check(self.lib.cudaMalloc(self.c.byref(ptr), self.c.c_size_t(max(int(nbytes), 1))), "cudaMalloc")
        return ptr

    def copy(self, dst, src, nbytes, kind):  # kind 1: host->device, 2: device->host
        self._check(self.lib.cudaMemcpyAsync(dst, src, self.c.c_size_t(int(nbytes)), kind, self.stream),
                    "cudaMemcpyAsync")

    def sync(self):
        self._check(self.lib.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def free(self, ptr):
        self.lib.cudaFree(ptr)


class TensorRTRunner:
    """Execution context over a deserialized engine; buffers through :class:`CudaRT`."""

    def __init__(self, engine_path):
        import tensorrt as trt

        np = _np()
        self.np, self.trt, self.cuda = np, trt, CudaRT()
        self.version = trt.__version__
        logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(logger)
        with open(engine_path, "rb") as f:
            self.engine = self.runtime.deserialize_cuda_engine(f.read())
        if self.engine is None:
            raise DeviceError("run", "TensorRT could not deserialize the engine %s" % engine_path)
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in names if n not in self.inputs]
        self.buffers = {}

    def _buffer(self, name, nbytes):
        ptr, size = self.buffers.get(name, (None, 0))
        if size < nbytes:
            if ptr is not None:
                self.cuda.free(ptr)
            ptr, size = self.cuda.malloc(nbytes), nbytes
            self.buffers[name] = (ptr, size)
        return ptr

    def run(self, feeds):
        np, trt = self.np, self.trt
        keep = []
        for name in self.inputs:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            host = np.ascontiguousarray(feeds[name], dtype=dtype)
            keep.append(host)
            ptr = self._buffer(name, host.nbytes)
            self.context.set_input_shape(name, tuple(host.shape))
            self.context.set_tensor_address(name, ptr.value)
            self.cuda.copy(ptr, host.ctypes.data_as(self.cuda.c.c_void_p), host.nbytes, 1)
        outs = {}
        for name in self.outputs:
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            host = np.empty(tuple(self.context.get_tensor_shape(name)), dtype)
            ptr = self._buffer(name, host.nbytes)
            self.context.set_tensor_address(name, ptr.value)
            outs[name] = (host, ptr)
        if not self.context.execute_async_v3(self.cuda.stream.value):
            raise DeviceError("run", "TensorRT execution failed (input shapes outside the profile?)")
        for host, ptr in outs.values():
            self.cuda.copy(host.ctypes.data_as(self.cuda.c.c_void_p), ptr, host.nbytes, 2)
        self.cuda.sync()
        return {n: h for n, (h, _) in outs.items()}


# --------------------------------------------------------------------------- TensorRT engines


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _trt_version_via_trtexec(exe):
    m = re.search(r"\[TensorRT v(\d+)\]", _run_text([exe, "--help"], timeout=60) or "")
    return trt_version_from_tag(m.group(1)) if m else "unknown"


def engine_key(onnx_sha256, settings, trt_version, board):
    blob = json.dumps(settings, sort_keys=True).encode()
    slug = re.sub(r"[^A-Za-z0-9.]+", "-", "%s-trt%s-%s" % (onnx_sha256[:16], trt_version, board or "device"))
    return "%s-%s" % (slug, hashlib.sha256(blob).hexdigest()[:8])


def build_engine(item, board, cache_dir=ENGINE_CACHE):
    """The cached engine for this ONNX + settings + TensorRT + board, built on a miss."""
    trt_cfg = item["tensorrt"]
    onnx = item["model"]
    sha = _sha256(onnx)
    try:
        import tensorrt as trt
        version = trt.__version__
    except ImportError:
        trt = None
        exe = trtexec_path()
        if exe is None:
            raise DeviceError("setup", "TensorRT is not installed (neither the tensorrt Python module nor "
                              "trtexec); install JetPack's TensorRT (sudo apt install nvidia-tensorrt)") from None
        version = _trt_version_via_trtexec(exe)
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, engine_key(sha, trt_cfg["settings"], version, board) + ".plan")
    info = {"engine": path, "tensorrt_version": version, "onnx_sha256": sha, "cached": os.path.isfile(path)}
    if info["cached"]:
        return info
    start = time.perf_counter()
    tmp = path + ".tmp%d" % os.getpid()
    if trt is not None:
        s = trt_cfg["settings"]
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(onnx):
            first = str(parser.get_error(0)) if parser.num_errors else "?"
            raise DeviceError("run", "TensorRT %s cannot parse %s: %s" % (version, os.path.basename(onnx), first))
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(s["workspace_mb"]) << 20)
        if s["precision"] in ("fp16", "int8"):
            config.set_flag(trt.BuilderFlag.FP16)
        if s["precision"] == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
        profile = builder.create_optimization_profile()
        for name, shapes in s["profiles"].items():
            profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise DeviceError("run", "TensorRT %s failed to build an engine from %s" % (version, os.path.basename(onnx)))
        with open(tmp, "wb") as f:
            f.write(memoryview(engine))
    else:
        cmd = [exe] + [a.replace("model.plan", tmp) for a in trt_cfg["trtexec_args"]]
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=os.path.dirname(onnx))
        log = proc.stdout.decode("utf-8", "replace")
        if proc.returncode != 0 or not os.path.isfile(tmp):
            parsed = parse_trtexec(log)
            why = (parsed.get("errors") or ["trtexec exit %d" % proc.returncode])[0]
            raise DeviceError("run", "TensorRT %s (trtexec) cannot build %s: %s" % (version, os.path.basename(onnx), why))
    os.replace(tmp, path)
    info["build_s"] = round(time.perf_counter() - start, 3)
    return info


def _shapes_arg(feeds):
    return ",".join("%s:%s" % (n, "x".join(str(d) for d in v.shape)) for n, v in feeds.items())


def trtexec_time(exe, engine, feeds, settings, workdir):
    """trtexec --loadEngine: the latency users quote; per-inference times from --exportTimes."""
    times = os.path.join(workdir, "times.json")
    cmd = [exe, "--loadEngine=%s" % engine, "--shapes=%s" % _shapes_arg(feeds), "--exportTimes=%s" % times,
           "--warmUp=%d" % max(0, int(settings.get("warmup_ms", 200))), "--avgRuns=1"]
    if settings.get("duration"):
        cmd += ["--duration=%d" % max(1, int(settings["duration"])), "--iterations=1"]
    else:
        cmd += ["--iterations=%d" % int(settings["iters"]), "--duration=0"]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    log = proc.stdout.decode("utf-8", "replace")
    parsed = parse_trtexec(log)
    if proc.returncode != 0:
        raise DeviceError("run", "trtexec failed: %s" % (parsed.get("errors") or ["exit %d" % proc.returncode])[0])
    samples = []
    try:
        with open(times) as f:
            for t in json.load(f):
                samples.append(float(t.get("latencyMs", t.get("h2dMs", 0) + t.get("computeMs", 0) + t.get("d2hMs", 0))))
    except (OSError, ValueError):
        pass
    return parsed, samples


# --------------------------------------------------------------------------- run


def _compare(np, got, want):
    out = {}
    for name, ref in want.items():
        if name not in got:
            continue
        a = np.asarray(got[name], np.float64).ravel()
        b = np.asarray(ref, np.float64).ravel()
        if a.shape != b.shape:
            out[name] = {"error": "shape %s vs %s" % (list(np.shape(got[name])), list(np.shape(ref)))}
            continue
        denom = np.linalg.norm(a) * np.linalg.norm(b)
        out[name] = {"max_abs": float(np.max(np.abs(a - b))) if a.size else 0.0,
                     "cosine": float(a @ b / denom) if denom else (1.0 if not a.any() and not b.any() else 0.0)}
    return out


def _accuracy(np, runner, path, out_dir):
    """Runs the host's evaluation inputs in order, compares with the host's reference outputs here,
    and saves the device's outputs for the host's task metric."""
    with np.load(path, allow_pickle=False) as z:
        calls = int(z["calls"])
        worst = {}
        saved = {}
        for i in range(calls):
            feeds = {k.split("/", 2)[2]: z[k] for k in z.files if k.startswith("in/%d/" % i)}
            want = {k.split("/", 2)[2]: z[k] for k in z.files if k.startswith("ref/%d/" % i)}
            got = runner.run(feeds)
            for name, c in _compare(np, got, want).items():
                w = worst.setdefault(name, {"max_abs": 0.0, "cosine": 1.0})
                if "error" in c:
                    w["error"] = c["error"]
                    continue
                w["max_abs"] = max(w["max_abs"], c["max_abs"])
                w["cosine"] = min(w["cosine"], c["cosine"])
            for k, v in got.items():
                saved["out/%d/%s" % (i, k)] = np.asarray(v)
    np.savez_compressed(out_dir, **saved)
    return {"calls": calls, "outputs": worst}


def run_item(np, item, settings, board, workdir, tegra):
    runtime = item["runtime"]
    feeds = _feeds(np, item["inputs"])
    threads = settings.get("threads")
    result = {"id": item["id"], "runtime": runtime}
    t0 = time.perf_counter()
    trt_info = None
    if runtime == "tensorrt":
        trt_info = build_engine(item, board)
        result["engine"] = trt_info
        exe = trtexec_path()
        try:
            runner = TensorRTRunner(trt_info["engine"])
        except ImportError:
            runner = None
            if exe is None:
                raise DeviceError("setup", "neither TensorRT's Python API nor trtexec is available") from None
    elif runtime == "onnxruntime":
        runner = OrtRunner(item, threads)
    elif runtime == "openvino":
        runner = OpenVINORunner(item, threads)
    elif runtime == "tflite":
        try:
            runner = TFLiteRunner(item, threads)
            runner.run(feeds)  # ops are resolved at the first allocation
        except ValueError as exc:
            if "Didn't find op for builtin opcode" not in str(exc):
                raise
            op = re.search(r"opcode '(\w+)' version '(\d+)'", str(exc))
            raise DeviceError("setup", "the device's TFLite runtime cannot run %s: it lacks op %s; install a newer "
                              "LiteRT there (pip install ai-edge-litert)" % (
                                  item.get("label"), "%s v%s" % op.groups() if op else "(see log)")) from None
    else:
        raise DeviceError("setup", "the device worker has no runtime %r" % runtime)
    result["load_ms"] = (time.perf_counter() - t0) * 1e3
    result["runtime_version"] = getattr(runner, "version", None) or (trt_info or {}).get("tensorrt_version")
    if runtime == "tensorrt" and trtexec_path():
        # the numbers Jetson users quote: trtexec's host latency, GPU compute, H2D/D2H
        t_start = time.monotonic()
        parsed, samples = trtexec_time(trtexec_path(), trt_info["engine"], feeds, settings, workdir)
        t_end = time.monotonic()
        result["trtexec"] = parsed
        result["samples_ms"] = samples
        result["first_inference_ms"] = samples[0] if samples else None
        rate = parsed.get("throughput_qps") or (len(samples) / (t_end - t_start) if samples else None)
        result["power"] = summarize_tegrastats(tegra.window(t_start, t_end), rate) if tegra else None
    else:
        t0 = time.perf_counter()
        runner.run(feeds)
        result["first_inference_ms"] = (time.perf_counter() - t0) * 1e3
        for _ in range(int(settings.get("warmup", 10))):
            runner.run(feeds)
        samples = []
        clock = time.perf_counter_ns
        end = clock() + int(float(settings["duration"]) * 1e9) if settings.get("duration") else None
        t_start = time.monotonic()
        while (len(samples) < int(settings["iters"])) if end is None else (clock() < end):
            s = clock()
            runner.run(feeds)
            samples.append((clock() - s) / 1e6)
        t_end = time.monotonic()
        result["samples_ms"] = samples
        result["power"] = (summarize_tegrastats(tegra.window(t_start, t_end), len(samples) / (t_end - t_start))
                           if tegra and samples else None)
    if item.get("accuracy"):
        if runner is None:
            raise DeviceError("setup", "--accuracy on the device runs the engine through TensorRT's Python API, "
                              "which is missing; install it (sudo apt install python3-libnvinfer)")
        else:
            result["accuracy"] = _accuracy(np, runner, item["accuracy"], os.path.join(workdir, "acc-%s.npz" % item["id"]))
            result["accuracy_file"] = "acc-%s.npz" % item["id"]
    try:
        import resource

        result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    except ImportError:
        pass
    return result


def run(workdir):
    with open(os.path.join(workdir, "request.json")) as f:
        request = json.load(f)
    np = _np()
    device = probe(workdir)
    device["numpy"] = np.__version__
    tegra = Tegrastats() if device.get("tegrastats") and request.get("tegrastats", True) else None
    results = []
    try:
        if tegra:
            time.sleep(0.3)  # idle samples before the first run
        for item in request["items"]:
            for key in ("model", "inputs", "accuracy"):
                if item.get(key):
                    item[key] = os.path.join(workdir, item[key])
            try:
                results.append(run_item(np, item, request["settings"], request.get("board"), workdir, tegra))
            except MemoryError:
                raise DeviceError("run", "out of memory running %s" % item.get("label", item["id"])) from None
            except Exception as exc:  # noqa: BLE001 - keep_going: this item's error, the others still run
                disk_full = isinstance(exc, OSError) and exc.errno in (28, 122)
                if not request.get("keep_going") or disk_full:
                    raise
                what = str(exc) if isinstance(exc, DeviceError) else "%s: %s" % (type(exc).__name__, exc)
                results.append({"id": item["id"], "error": " ".join(what.split())[:400]})
    finally:
        if tegra:
            tegra.stop()
    device["clocks_after"] = clocks_state()
    return {"device": device, "results": results}


def main(argv):
    if len(argv) < 3 or argv[1] not in ("probe", "run"):
        sys.stderr.write("usage: %s probe|run DIR\n" % argv[0])
        return 2
    try:
        doc = probe(argv[2]) if argv[1] == "probe" else run(argv[2])
    except DeviceError as exc:
        sys.stderr.write("error[%s]: %s\n" % (exc.kind, " ".join(str(exc).split())))
        return 2 if exc.kind == "setup" else 1
    except OSError as exc:
        kind = "setup" if exc.errno in (28, 122) else "run"  # ENOSPC, EDQUOT: the device's disk is full
        what = "the device's disk is full (%s)" % exc if kind == "setup" else "%s: %s" % (type(exc).__name__, exc)
        sys.stderr.write("error[%s]: %s\n" % (kind, " ".join(what.split())))
        return 2 if kind == "setup" else 1
    except Exception as exc:  # noqa: BLE001 - one line for the host, whatever the runtime raised
        sys.stderr.write("error[run]: %s: %s\n" % (type(exc).__name__, " ".join(str(exc).split())[:400]))
        return 1
    sys.stdout.write(json.dumps(doc, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
