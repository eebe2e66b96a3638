"""End to end, preprocessing included: image file → zero-shot label, CLIP ViT-B/32.

Ours: the zero-shot bundle (``mmdeploy.stages.zeroshot``) built from the ``quantize --int8``
output: decode the file to uint8 RGB, one graph (resize/crop/normalize baked in, int8 tower),
a dot product with the cached label embeddings.  Against: the Hugging Face way — PIL +
``CLIPProcessor`` + ``CLIPModel`` (torch eager), both with the text tower run every call (what
the model card does) and with the label features cached.

Random weights (from config): fine for latency, not for accuracy — "agreement" is the share of
images where our label equals HF's.  2 threads, one process, interleaved blocks; trust ratios.

    python benchmarks/fastest_int8_clip_b32.py            # builds /tmp/mmdeploy-bench-fastest/int8
    python benchmarks/zero_shot_e2e_clip_b32.py [--bundle DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

from _models import clip_b32  # noqa: E402

LABELS = ["astronaut", "cat", "coffee", "rocket", "horse", "motorcycle", "moon", "camera"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", type=Path, default=Path("/tmp/mmdeploy-bench-fastest/int8"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", type=int, default=4)
    args = ap.parse_args(argv)

    import torch
    from PIL import Image
    from transformers import CLIPModel, CLIPProcessor

    from mmdeploy.cpu import cpu_features
    from mmdeploy.stages.zeroshot import ZeroShotClassifier, zero_shot_bundle

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="mmdeploy-zs-"))
    from mmdeploy.models.preprocess import skimage_photos

    files = []
    for i, (_, image) in enumerate(skimage_photos()[:6]):  # real photos from the scikit-image wheel
        path = work / f"photo{i}.jpg"
        image.save(path, quality=92)
        files.append(path)
    t = time.time()
    zs = zero_shot_bundle(args.bundle, LABELS, work / "zs", text_threads=args.threads)
    print(f"zero-shot bundle built in {time.time() - t:.1f} s: {zs}")
    clf = ZeroShotClassifier(zs, threads=args.threads)

    ckpt = clip_b32()
    model = CLIPModel.from_pretrained(str(ckpt)).eval()
    proc = CLIPProcessor.from_pretrained(str(ckpt))
    prompts = [f"a photo of a {label}." for label in LABELS]
    with torch.no_grad():
        text_inputs = proc(text=prompts, return_tensors="pt", padding="max_length", max_length=77)
        cached = model.get_text_features(**text_inputs)
        cached = getattr(cached, "pooler_output", cached)
        cached = cached / cached.norm(dim=-1, keepdim=True)

    def ours(path):
        image = np.asarray(Image.open(path).convert("RGB"))  # decode only; the rest is in the graph
        return clf.classify(image)[0]

    def hf_full(path):
        with torch.no_grad():
            inputs = proc(text=prompts, images=Image.open(path).convert("RGB"), return_tensors="pt",
                          padding="max_length", max_length=77)
            return LABELS[int(model(**inputs).logits_per_image.argmax())]

    def hf_cached(path):
        with torch.no_grad():
            pixels = proc(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
            emb = model.get_image_features(pixel_values=pixels)
            emb = getattr(emb, "pooler_output", emb)
            return LABELS[int((emb @ cached.T).argmax())]

    paths = {"ours (zero-shot bundle, int8)": ours, "HF processor + CLIPModel (text every call)": hf_full,
             "HF processor + CLIPModel, text cached": hf_cached}
    labels = {n: [fn(p) for p in files] for n, fn in paths.items()}
    samples = {n: [] for n in paths}
    for b in range(args.blocks):  # torch and ours alternate by block (their thread pools never overlap)
        order = list(paths)[b % 3:] + list(paths)[: b % 3]
        for n in order:
            for p in files:
                t = time.perf_counter()
                paths[n](p)
                samples[n].append((time.perf_counter() - t) * 1000)
    cpu = cpu_features()
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"\nCPU {cpu['model']} {cpu['features']}; {args.threads} threads; load {load}; "
          f"{args.blocks} blocks × {len(files)} images; chosen route: {clf.runner.name}")
    ours_ms = float(np.median(samples["ours (zero-shot bundle, int8)"]))
    print("| path | median ms per image (file → label) | × ours | label agreement with HF |\n|---|---|---|---|")
    for n in paths:
        med = float(np.median(samples[n]))
        agree = np.mean([a == b for a, b in zip(labels[n], labels["HF processor + CLIPModel (text every call)"])])
        print(f"| {n} | {med:.1f} | {med / ours_ms:.2f}× | {100 * agree:.0f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
