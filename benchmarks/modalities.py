"""CLAP and BLIP: fp32 vs dynamic-int8 ONNX Runtime latency and task accuracy, in one process.

    python benchmarks/modalities.py --family clap --size tiny|base [--checkpoint DIR] [--runs 20]

``--size base`` builds the default-size architecture (CLAP HTSAT-unfused + RoBERTa-base, BLIP
ViT-B/16-384 + BERT-base decoder) with RANDOM weights: good for latency, not for accuracy.
``--checkpoint`` takes a real or trained checkpoint instead (e.g. mmdeploy/demo/tiny_clap).
Each artifact is timed in its own block of runs (no alternation: ORT's spinning threads
would steal the cores), batch 1, median and p90 of ``--runs`` after 3 warm-ups.  Numbers are
only comparable as ratios measured in the same run on the same machine.  ``--threads``
defaults to 1: on the shared 2-core machine (load average 12-18 from other jobs) torch with 2
OpenMP threads measured 10-100x slower than with 1 (its barriers spin while preempted).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_checkpoint(family: str, size: str, folder: Path) -> Path:
    if size == "tiny":
        from tests.builders import tiny_blip_checkpoint, tiny_clap_checkpoint

        return (tiny_clap_checkpoint if family == "clap" else tiny_blip_checkpoint)(folder)
    import torch

    from mmdeploy.demo.tokenizer import build_tokenizer

    torch.manual_seed(0)
    if family == "clap":
        from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

        from mmdeploy.data.synthetic_audio import vocabulary

        tok = build_tokenizer(vocabulary(), max_length=16)
        ClapModel(ClapConfig(text_config=dict(pad_token_id=0, bos_token_id=1, eos_token_id=4))).eval() \
            .save_pretrained(folder)
        ClapFeatureExtractor(truncation="rand_trunc").save_pretrained(folder)
    else:
        from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil

        tok = build_tokenizer(None, max_length=32)
        config = BlipConfig(text_config=dict(pad_token_id=0, bos_token_id=1, eos_token_id=4, sep_token_id=4),
                            vision_config=dict(image_size=384, patch_size=16))
        model = BlipForConditionalGeneration(config).eval()
        model.generation_config.max_length = 20
        model.save_pretrained(folder)
        BlipImageProcessorPil(size={"height": 384, "width": 384}).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def timed(fn, runs: int) -> dict:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    samples.sort()
    return {"p50_ms": round(statistics.median(samples), 2), "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 2)}


def quantize_bundle(bundle: Path, out: Path) -> Path:
    """Copy of the bundle with every component's model.onnx dynamically quantized (QInt8 weights)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from mmdeploy.artifact import component_dirs

    shutil.copytree(bundle, out)
    for cdir, _ in component_dirs(out):
        src = cdir / "model.onnx"
        tmp = cdir / "model.int8.onnx"
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True)
        tmp.replace(src)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--family", choices=["clap", "blip"], required=True)
    ap.add_argument("--size", choices=["tiny", "base"], default="tiny")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args()

    import torch

    from mmdeploy.artifact import component_dirs, load_reference
    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner
    from mmdeploy.compare import compare_outputs, merge_metrics
    from mmdeploy.stages.convert import convert
    from mmdeploy.backends.torch import TorchRunner
    from mmdeploy.models import adapter_for_bundle, resolve
    from mmdeploy.models.preprocess import quiet_transformers

    quiet_transformers()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="mmdeploy-bench-"))
    try:
        ckpt = args.checkpoint or build_checkpoint(args.family, args.size, work / "ckpt")
        t0 = time.perf_counter()
        convert(ckpt, work / "fp32")
        convert_s = time.perf_counter() - t0
        quantize_bundle(work / "fp32", work / "int8")
        torch_adapter = resolve(ckpt)
        comps = torch_adapter.components()
        variants = {"torch": {n: TorchRunner(c) for n, c in comps.items()}}
        for precision in ("fp32", "int8"):
            variants[f"ort-{precision}"] = {d.name: OnnxRuntimeRunner(d / "model.onnx", threads=args.threads)
                                            for d, _ in component_dirs(work / precision)}
        report = {"family": args.family, "size": "checkpoint" if args.checkpoint else args.size,
                  "machine": f"{platform.machine()} {platform.processor() or ''} cores={args.threads}".strip(),
                  "convert_s": round(convert_s, 1), "components": {}, "task": {}}
        for d, _ in component_dirs(work / "fp32"):
            name = d.name
            cases = load_reference(d)
            feeds = next(f for f, _ in cases if next(iter(f.values())).shape[0] == 1)
            entry = {"size_mb": {p: round((work / p / name / "model.onnx").stat().st_size / 2**20, 2)
                                 for p in ("fp32", "int8")}}
            for label, runners in variants.items():
                entry[label] = timed(lambda r=runners[name]: r.run(feeds), args.runs)
            for label in ("ort-fp32", "ort-int8"):
                m = merge_metrics([compare_outputs(ref, variants[label][name].run(f)) for f, ref in cases])
                first = m[next(iter(m))]
                entry[label]["cosine_vs_torch"] = round(first["cosine"], 6)
                entry[label]["max_abs_vs_torch"] = float(f"{first['max_abs']:.3e}")
            entry["speedup_int8_vs_fp32"] = round(entry["ort-fp32"]["p50_ms"] / entry["ort-int8"]["p50_ms"], 2)
            entry["speedup_fp32_vs_torch"] = round(entry["torch"]["p50_ms"] / entry["ort-fp32"]["p50_ms"], 2)
            report["components"][name] = entry
            print(name, json.dumps(entry), flush=True)
        bundle_adapter = adapter_for_bundle(work / "fp32")
        reference = torch_adapter.evaluate(variants["torch"])
        for label in ("torch", "ort-fp32", "ort-int8"):
            start = time.perf_counter()
            result = reference if label == "torch" else bundle_adapter.evaluate(variants[label])
            report["task"][label] = {"metric": result.name, "value": round(result.value, 4), "n": result.n,
                                     "agreement_vs_torch": round(result.agreement(reference), 4),
                                     **({"exact_match": result.extra["exact_match"]} if "exact_match" in result.extra else {})}
            if label != "torch":
                report["task"][label]["eval_s"] = round(time.perf_counter() - start, 2)
        if args.family == "blip":  # end-to-end caption latency, one image
            image = bundle_adapter.eval_images(1)
            pixels = torch.from_numpy(bundle_adapter.pixel_values(image)["pixel_values"])
            model = torch_adapter.torch_model()
            report["caption_one_image"] = {
                "torch-generate": timed(lambda: model.generate(pixel_values=pixels, do_sample=False, num_beams=1),
                                        max(3, args.runs // 4))}
            for label in ("ort-fp32", "ort-int8"):
                report["caption_one_image"][label] = timed(
                    lambda r=variants[label]: bundle_adapter.captions(r, image), max(3, args.runs // 4))
        print(json.dumps(report["task"], indent=1))
        if args.output:
            args.output.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report.get("caption_one_image", {})))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
