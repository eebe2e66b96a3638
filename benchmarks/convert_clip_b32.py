"""Time `convert` (export + onnxsim + verification of both towers) on full-size CLIP ViT-B/32.

Target: <= 60 s on the project's 2-core machines.  Usage:

    python benchmarks/convert_clip_b32.py [--repeat 1]

Writes benchmarks/results/convert_clip_b32.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from _models import ROOT, clip_b32, machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from mmdeploy.artifact import read_manifest
    from mmdeploy.stages.convert import convert

    source = clip_b32()
    runs = []
    for _ in range(args.repeat):
        out = Path(tempfile.mkdtemp()) / "b32"
        stages = []
        last = [time.perf_counter()]

        def progress(msg, stages=stages, last=last):
            now = time.perf_counter()
            stages.append({"stage": msg, "at_s": round(now - last[0], 2)})

        start = time.perf_counter()
        convert(source, out, progress=progress)
        total = time.perf_counter() - start
        parity = {c: read_manifest(out / c).parity["outputs"] for c in ("vision", "text")}
        runs.append({"seconds": round(total, 2), "stages": stages, "parity": parity,
                     "task": read_manifest(out).parity.get("task", {})})
        shutil.rmtree(out.parent)
        print(f"convert + verify of both B/32 towers: {total:.1f} s")
    result = {"benchmark": "convert_clip_b32", "target_s": 60, "machine": machine(), "runs": runs}
    path = ROOT / "results" / "convert_clip_b32.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
