"""`mmdeploy eval` throughput (images/s) for CLIP ViT-B/32, fp32 ONNX vs int8 (static QDQ).

Random weights (CLIPConfig defaults = ViT-B/32 towers; the demo's word-level tokenizer): the
numbers are for speed only, never accuracy.  The data set is the demo's shapes ImageFolder
(``builtin:demo-shapes``, upscaled to 224 px by the image processor); each artifact is timed as
`mmdeploy eval` runs it (batched images, prompt embeddings once), in its own block, after one
warm-up pass that also fills the preprocessing cache; the second subject reuses that cache, so
the figure is the towers' throughput plus the metric.  Shared machine: compare the ratio.

    python benchmarks/eval_throughput.py --images 360 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_checkpoint(folder: Path) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from mmdeploy.demo.tokenizer import build_tokenizer, clip_text_ids, save_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer()
    config = CLIPConfig(text_config=dict(vocab_size=len(tok), **clip_text_ids(tok)))
    CLIPModel(config).save_pretrained(folder)
    save_tokenizer(tok, folder)
    CLIPImageProcessor().save_pretrained(folder)
    return folder


def cpu() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    except OSError:
        out = ""
    model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")),
                 platform.processor())
    flags = next((line.split(":", 1)[1].split() for line in out.splitlines() if line.startswith("Flags")), [])
    return {"cpu": model, "flags": [f for f in ("avx2", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags],
            "load_average": open("/proc/loadavg").read().split()[:3] if Path("/proc/loadavg").exists() else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=360)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--work", type=Path, default=None, help="keep the bundles here (default: temp)")
    args = parser.parse_args(argv)

    from mmdeploy.stages.convert import convert
    from mmdeploy.stages.eval import _Feeds, evaluate_subject, load_data, open_subjects
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    work = args.work or Path(tempfile.mkdtemp(prefix="mmdeploy-eval-bench-"))
    ckpt, fp32, int8 = work / "clip-b32", work / "fp32", work / "int8"
    if not (fp32 / "manifest.json").is_file():
        build_checkpoint(ckpt)
        convert(ckpt, fp32)
    if not (int8 / "manifest.json").is_file():
        quantize(fp32, int8, QuantizeOptions(accuracy_aware=False, metric="cosine", accuracy_budget=0.5,
                                             latency_runs=0, calib_limit=16), log=lambda m: None)
    data = load_data("builtin:demo-shapes", limit=args.images)
    feeds = _Feeds()
    rows = []
    for path in (fp32, int8):
        subject = open_subjects(path, args.threads)[0]
        evaluate_subject(subject, data, feeds, args.batch)  # warm-up; fills the preprocessing cache
        start = time.perf_counter()
        res = evaluate_subject(subject, data, feeds, args.batch)
        seconds = time.perf_counter() - start
        rows.append({"artifact": path.name, "images": len(data.samples), "seconds": round(seconds, 2),
                     "images_per_s": round(len(data.samples) / seconds, 1)})
    doc = {"model": "CLIP ViT-B/32 (random weights)", "threads": args.threads, "batch": args.batch,
           "results": rows, "int8_speedup": round(rows[0]["seconds"] / rows[1]["seconds"], 2), **cpu()}
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
