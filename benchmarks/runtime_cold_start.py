"""The runtime-only install: its size, and cold start (import -> first embedding) against a
transformers + torch pipeline doing the same.

    python benchmarks/runtime_cold_start.py --bundle out/demo [--venv /tmp/rtvenv] [--runs 5]

Creates (unless ``--venv`` names one that exists) a fresh venv with ``pip install <repo>`` (no
extras), checks that torch / transformers / onnx are absent from it, and times, each in a new
process, run by run alternating:

* runtime: ``import mmdeploy.runtime; load(bundle).embed_images([photo])`` in that venv;
* transformers: ``from transformers import CLIPModel, CLIPImageProcessor``, load the bundle's
  source checkpoint, ``get_image_features`` on the processor's pixels, in this interpreter's
  environment (which has the toolchain).

Prints a Markdown table; numbers in runtime_cold_start.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

RUNTIME = """
import time, json, sys
t0 = time.perf_counter()
import mmdeploy.runtime
t1 = time.perf_counter()
model = mmdeploy.runtime.load(sys.argv[1])
e = model.embed_images([sys.argv[2]])
t2 = time.perf_counter()
heavy = sorted(m for m in ("torch", "transformers", "onnx") if m in sys.modules)
print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "dim": int(e.shape[1]), "heavy": heavy}))
"""

TRANSFORMERS = """
import time, json, sys
t0 = time.perf_counter()
import torch
from transformers import CLIPImageProcessor, CLIPModel
from PIL import Image
t1 = time.perf_counter()
model = CLIPModel.from_pretrained(sys.argv[1]).eval()
proc = CLIPImageProcessor.from_pretrained(sys.argv[1])
with torch.no_grad():
    out = model.get_image_features(**proc(images=[Image.open(sys.argv[2]).convert("RGB")], return_tensors="pt"))
e = out if hasattr(out, "shape") else out.pooler_output
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "first_s": t2 - t1, "dim": int(e.shape[1])}))
"""


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.is_symlink())


def site_packages(python: str) -> Path:
    return Path(subprocess.check_output([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                        text=True).strip())


def timed(python: str, code: str, *args: str) -> dict:
    start = time.perf_counter()
    out = subprocess.run([python, "-c", code, *args], capture_output=True, text=True, check=True)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    record["process_s"] = time.perf_counter() - start
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, type=Path, help="a dual-encoder bundle (convert output)")
    parser.add_argument("--checkpoint", type=Path, help="its source checkpoint (default: from the manifest)")
    parser.add_argument("--venv", type=Path, default=Path("/tmp/mmdeploy-runtime-venv"))
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    python = str(args.venv / "bin" / "python")
    if not Path(python).exists():
        subprocess.run([sys.executable, "-m", "venv", str(args.venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", str(REPO)], check=True)
    manifest = json.loads((args.bundle / "manifest.json").read_text())
    checkpoint = args.checkpoint or Path(manifest["source"].get("resolved") or manifest["source"]["path"])
    photo = args.bundle.parent / "cold_start_photo.png"
    from skimage import data
    from PIL import Image

    Image.fromarray(data.chelsea()).save(photo)

    runtime_size = du(site_packages(python))
    here = site_packages(sys.executable)
    toolchain_size = sum(du(here / name) for name in ("torch", "transformers", "onnx", "onnxsim", "safetensors",
                                                      "sympy", "networkx", "tokenizers", "huggingface_hub"))
    rows = {"runtime": [], "transformers": []}
    for _ in range(args.runs):
        rows["runtime"].append(timed(python, RUNTIME, str(args.bundle), str(photo)))
        rows["transformers"].append(timed(sys.executable, TRANSFORMERS, str(checkpoint), str(photo)))
    assert all(not r["heavy"] for r in rows["runtime"]), rows["runtime"][0]["heavy"]
    med = {k: {m: statistics.median(r[m] for r in v) for m in ("import_s", "first_s", "process_s")}
           for k, v in rows.items()}
    print(f"runtime venv site-packages: {runtime_size / 2**20:.0f} MiB; torch + transformers + onnx & deps "
          f"in the toolchain venv: {toolchain_size / 2**20:.0f} MiB (+ the runtime's own)")
    print(f"median of {args.runs} fresh processes each\n")
    print("| path | import (s) | load + first embedding (s) | whole process (s) |")
    print("|---|---|---|---|")
    for name, m in med.items():
        print(f"| {name} | {m['import_s']:.2f} | {m['first_s']:.2f} | {m['process_s']:.2f} |")
    ratio = med["transformers"]["process_s"] / med["runtime"]["process_s"]
    print(f"\nruntime cold start is {ratio:.1f}x faster (whole process)")


if __name__ == "__main__":
    main()
