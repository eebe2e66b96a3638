"""Time `convert` (export + onnxsim + verification against PyTorch) of full-size dual encoders.

Random weights (latency only; nothing is downloaded): SigLIP base (ViT-B/16 at 224 px + its
text tower, google/siglip-base-patch16-224's config) and ALIGN base (EfficientNet-B7 at
289 px + BERT-base, kakaobrain/align-base's config).  The checkpoints are saved like a
training script leaves them (``save_pretrained`` of the model alone), so the run also goes
through the derived-preprocessing path.  Prints one JSON line per model with the time of
each phase, the CPU model and flags and the load average; compare ratios within one run.

    python benchmarks/dual_encoder_convert.py [--models siglip-base,align-base] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path


def build(name: str, folder: Path) -> None:
    import torch
    import transformers as T

    torch.manual_seed(0)
    if name == "siglip-base":
        config = T.SiglipConfig(
            text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                             vocab_size=32000, max_position_embeddings=64, projection_size=768),
            vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                               num_attention_heads=12, image_size=224, patch_size=16))
        model = T.SiglipModel(config)
    elif name == "align-base":
        config = T.AlignConfig(text_config=dict(vocab_size=30522),
                               vision_config=dict(image_size=289), projection_dim=640)
        model = T.AlignModel(config)
        for module in model.vision_model.modules():  # std-0.02 init makes a CNN's activations vanish
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
    else:
        raise SystemExit(f"unknown model {name!r}")
    model.eval().save_pretrained(folder)


def cpu() -> dict:
    info = {"machine": platform.machine()}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in text.splitlines():
            if line.startswith("Model name:"):
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("Flags:"):
                flags = set(line.split(":", 1)[1].split())
                info["flags"] = sorted(f for f in flags if f in {"avx2", "fma", "avx512f", "avx512_vnni",
                                                                 "avx512_bf16", "amx_int8", "amx_bf16"})
    except OSError:
        pass
    info["cores"] = os.cpu_count()
    return info


def run(name: str, work: Path) -> dict:
    from mmdeploy.artifact import read_manifest
    from mmdeploy.stages.convert import convert

    ckpt, out = work / f"{name}-ckpt", work / f"{name}-bundle"
    start = time.perf_counter()
    build(name, ckpt)
    save_s = time.perf_counter() - start
    marks: list[tuple[float, str]] = []
    load_before = os.getloadavg()
    start = time.perf_counter()
    # random He-initialised EfficientNet-B7 activations reach ~1e2: abs error is judged relative
    # to that (real weights stay within the default 1e-4)
    atol = 1e-2 if name == "align-base" else 1e-4
    convert(ckpt, out, atol=atol, progress=lambda msg: marks.append((time.perf_counter(), msg)))
    total = time.perf_counter() - start
    phases: dict[str, float] = {}
    for (t0, msg), (t1, _) in zip(marks, marks[1:] + [(start + total, "end")]):
        key = msg.split(" (")[0].split(":")[0][:60]
        phases[key] = round(phases.get(key, 0.0) + t1 - t0, 2)
    top = read_manifest(out)
    return {
        "model": name, "convert_verify_s": round(total, 2), "atol": atol, "save_checkpoint_s": round(save_s, 2),
        "phases_s": phases,
        "parity": {c: max(v["max_abs"] for v in read_manifest(out / c).parity["outputs"].values())
                   for c in ("vision", "text")},
        "logits_per_image_max_cosine_error": top.parity.get("logits_per_image", {}).get("max_cosine_error"),
        "load_avg_before": [round(x, 2) for x in load_before], "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        "cpu": cpu(), "threads": __import__("torch").get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="siglip-base,align-base")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mmdeploy-bench-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            print(json.dumps(run(name.strip(), work)), flush=True)


if __name__ == "__main__":
    main()
