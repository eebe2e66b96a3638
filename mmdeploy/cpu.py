"""The CPU this process runs on: model name, the features that decide int8 routes, its class.

One function reads it (:func:`cpu_features`), so a test can stand in another CPU by patching
``mmdeploy.cpu.cpu_features`` (every caller reads it through this module).  The CPU *class*
(``vnni`` / ``no-vnni``) scopes latency budgets and the choices that depend on int8 dot-product
instructions: without them (AVX2 only: most AMD Zen 2/3 machines) ONNX Runtime's u8s8 kernels
add pairs into int16 (``vpmaddubsw``) and can saturate, and OpenVINO int8 is no faster than fp32.

``python -m mmdeploy.cpu`` prints the class (used by ``benchmarks/ci_regression.sh``).
"""

from __future__ import annotations

import copy
import functools
import platform
from pathlib import Path
from typing import Any


@functools.lru_cache(maxsize=1)
def _read() -> dict[str, Any]:
    flags: set[str] = set()
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model")) and model == "unknown":
                model = line.split(":", 1)[1].strip()
            elif line.startswith(("flags", "Features")) and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    features = {
        "avx2": "avx2" in flags,
        "avx512": "avx512f" in flags,
        "vnni": bool({"avx512_vnni", "avx_vnni"} & flags),
        "avx512_bf16": "avx512_bf16" in flags,
        "avx512_fp16": "avx512_fp16" in flags,
        "amx": bool({"amx_int8", "amx_bf16", "amx_tile"} & flags),
        "neon_dotprod": "asimddp" in flags,
    }
    out: dict[str, Any] = {"model": model, "machine": platform.machine(), "features": features,
                           "flags": sorted(f for f in flags if f.startswith(("avx", "amx", "fma", "asimd")))}
    try:
        from mmdeploy.backends.openvino import core

        out["openvino_capabilities"] = list(core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
    except Exception:  # noqa: BLE001 - openvino absent or no CPU plugin
        pass
    return out


def cpu_features() -> dict[str, Any]:
    """{"model", "machine", "features": {avx2, avx512, vnni, avx512_bf16, avx512_fp16, amx,
    neon_dotprod}, "flags", "openvino_capabilities"} (read once; a copy each call)."""
    return copy.deepcopy(_read())


def int8_isa(cpu: dict[str, Any] | None = None) -> str:
    """The instruction set int8 GEMMs run on here: AMX, AVX-512 VNNI, AVX-VNNI, AVX2, NEON
    dot-product, or none."""
    cpu = cpu or cpu_features()
    f = cpu["features"]
    if f.get("amx"):
        return "AMX"
    if f.get("vnni"):
        return "AVX-512 VNNI" if f.get("avx512") else "AVX-VNNI"
    if f.get("avx2"):
        return "AVX2 (no VNNI: u8s8 pairs accumulate in int16)"
    if f.get("neon_dotprod"):
        return "NEON dot-product"
    return "none (no int8 dot-product instructions read)"


def has_int8_dot(cpu: dict[str, Any] | None = None) -> bool:
    """VNNI, AMX or NEON dot-product: int8 products accumulate in int32 (no saturation)."""
    f = (cpu or cpu_features())["features"]
    return bool(f.get("vnni") or f.get("amx") or f.get("neon_dotprod"))


def cpu_class(cpu: dict[str, Any] | None = None) -> str:
    """``vnni`` or ``no-vnni``: the class latency budgets are scoped by (``cpu: [no-vnni]``)."""
    return "vnni" if has_int8_dot(cpu) else "no-vnni"


def cpu_tags(cpu: dict[str, Any] | None = None) -> set[str]:
    """The tags a budget's ``cpu:`` list may name: the class, each feature present, and
    ``no-<feature>`` for each absent (``vnni``, ``no-vnni``, ``amx``, ``no-amx``, ...)."""
    cpu = cpu or cpu_features()
    tags = {cpu_class(cpu)}
    for name, present in cpu["features"].items():
        if name != "vnni":  # the class says it (AMX and NEON dot-product count as vnni)
            tags.add(name if present else f"no-{name}")
    return tags


if __name__ == "__main__":
    print(cpu_class())
