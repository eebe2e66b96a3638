"""Which board a device is, from what the device worker's ``probe`` read on it.

``--target jetson`` / ``--target rpi`` are generic profiles listing their ``boards``; over SSH
the board is identified from ``/proc/device-tree/model`` (the string every Jetson and Pi
carries), the L4T release from ``/etc/nv_tegra_release``, the memory (Orin Nano 4 GB vs 8 GB)
and the nvpmodel mode, and the matching board profile is applied.  A device that is none of
the listed boards keeps the generic profile and says so (``board.matched: false``).
"""

from __future__ import annotations

import re

# (substring of /proc/device-tree/model, profile); first match wins, so specific before generic
_MODELS = (
    ("Orin Nano", "jetson-orin-nano"),
    ("Orin NX", "jetson-orin-nx"),
    ("AGX Orin", "jetson-agx-orin"),
    ("Xavier NX", "jetson-xavier-nx"),
    ("Jetson Nano", "jetson-nano"),
    ("Raspberry Pi 5", "rpi5"), ("Raspberry Pi 500", "rpi5"), ("Compute Module 5", "rpi5"),
    ("Raspberry Pi 4", "rpi4"), ("Raspberry Pi 400", "rpi4"), ("Compute Module 4", "rpi4"),
)
# L4T release -> JetPack (NVIDIA's JetPack archive); the closest lower entry is used
_JETPACK = {(32, 7): "4.6", (35, 1): "5.0.2", (35, 2): "5.1", (35, 3): "5.1.1", (35, 4): "5.1.2",
            (35, 5): "5.1.3", (35, 6): "5.1.4", (36, 2): "6.0 DP", (36, 3): "6.0", (36, 4): "6.1/6.2"}


def l4t_release(line: str | None) -> str | None:
    """``# R36 (release), REVISION: 4.4, GCID: ...`` -> ``36.4.4``."""
    m = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)", line or "")
    return f"{m.group(1)}.{m.group(2)}" if m else None


def jetpack(l4t: str | None) -> str | None:
    if not l4t:
        return None
    major, minor = (int(x) for x in l4t.split(".")[:2])
    keys = [k for k in _JETPACK if k <= (major, minor) and k[0] == major]
    return _JETPACK[max(keys)] if keys else None


def nvpmodel_mode(text: str | None) -> str | None:
    """``nvpmodel -q``: ``NV Power Mode: MAXN_SUPER`` then the mode id -> ``MAXN_SUPER (2)``."""
    if not text:
        return None
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if not m:
        return None
    rest = text[m.end():].split()
    return f"{m.group(1)} ({rest[0]})" if rest and rest[0].isdigit() else m.group(1)


def identify(probe: dict, kind: str | None = None) -> dict:
    """The board record kept in the results: profile name (or None), model, memory, L4T, mode."""
    model = (probe.get("model") or "").strip()
    mem_gb = round(probe["memory_kb"] / 2**20, 1) if probe.get("memory_kb") else None
    profile = next((p for key, p in _MODELS if key in model), None)
    if profile == "jetson-orin-nano" and mem_gb is not None and mem_gb < 5.5:
        profile = "jetson-orin-nano-4gb"
    release = l4t_release((probe.get("nv_tegra_release") or [None])[0])
    record = {
        "profile": profile, "model": model or None, "memory_gb": mem_gb,
        "l4t": release, "jetpack": jetpack(release), "nvpmodel": nvpmodel_mode(probe.get("nvpmodel")),
        "jetson_clocks": (probe.get("clocks") or {}).get("jetson_clocks"),
        "os": probe.get("os"), "kernel": probe.get("kernel"), "arch": probe.get("arch"),
        "cpu_model": probe.get("cpu_model"), "hostname": probe.get("hostname"),
    }
    if profile is None:  # not a known board: name the machine by what it says it is
        record["identity"] = model or probe.get("product") or f"{probe.get('cpu_model') or '?'} ({probe.get('arch')})"
    record["matched"] = profile is not None
    if kind and profile and not profile.startswith(kind):
        record["matched"] = False
        record["mismatch"] = f"{model} is not a {kind} board"
    return record
