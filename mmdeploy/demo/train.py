"""Train the ``demo:tiny-clip`` checkpoint from scratch on CPU.

    python -m mmdeploy.demo.train --output mmdeploy/demo/tiny_clip

Builds a small ``transformers.CLIPModel`` (ViT on 32x32 images with 4x4
patches, 2-layer text transformer over a word-level vocabulary), trains it
with a CLIP-style symmetric contrastive loss on procedurally generated
image/caption pairs (:mod:`mmdeploy.data.shapes`) and saves a normal local Hugging
Face folder: ``config.json`` + ``model.safetensors``, the tokenizer, a
``CLIPImageProcessor`` config and ``eval_results.json`` with the zero-shot
top-1 measured by reloading the saved folder (:func:`mmdeploy.demo.evaluate.zero_shot_top1`).

Loss: the usual CLIP InfoNCE in both directions, except that a caption of the
same class as an image is also counted as a positive (soft targets spread over
all same-class pairs in the batch); with only 36 classes a batch holds many
same-class pairs, and treating them as negatives would just add label noise.

Everything is seeded (Python ``random``, torch); training uses the CPU only.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np

from mmdeploy.data import shapes as data
from mmdeploy.demo.tokenizer import build_tokenizer, clip_text_ids, save_tokenizer

# CLIP (OpenAI) normalisation constants, also written to preprocessor_config.json
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]
MAX_TEXT_LENGTH = 16
PROJECTION_DIM = 64


def build_model(vocab_size: int, text_ids: dict[str, int]):
    from transformers import CLIPConfig, CLIPModel

    text_config = dict(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=MAX_TEXT_LENGTH,
        projection_dim=PROJECTION_DIM,
        **text_ids,
    )
    vision_config = dict(
        image_size=data.IMAGE_SIZE,
        patch_size=4,
        num_channels=3,
        hidden_size=96,
        intermediate_size=384,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=PROJECTION_DIM,
    )
    # projection_dim also in the sub-configs so CLIP{Text,Vision}ModelWithProjection load the folder
    config = CLIPConfig(text_config=text_config, vision_config=vision_config, projection_dim=PROJECTION_DIM)
    # tells mmdeploy's CLIP adapter to evaluate on the demo's shapes, not on real photos
    config.mmdeploy_dataset = "demo-shapes"
    return CLIPModel(config)


def build_image_processor():
    from transformers import CLIPImageProcessor

    s = data.IMAGE_SIZE
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": s},
        resample=3,  # bicubic; a s x s input is passed through unchanged
        do_center_crop=True,
        crop_size={"height": s, "width": s},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
        do_convert_rgb=True,
    )


def images_to_uint8(images) -> np.ndarray:
    """``(n, 3, H, W)`` uint8 array of RGB PIL images (already at model size)."""
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images]).transpose(0, 3, 1, 2)


def normalise(batch_u8):
    """Same arithmetic as the saved ``CLIPImageProcessor`` for model-sized images."""
    import torch

    mean = torch.tensor(IMAGE_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD).view(1, 3, 1, 1)
    return (batch_u8.float() * (1 / 255) - mean) / std


def class_aware_clip_loss(logits, labels):
    """Symmetric InfoNCE where every same-label (image, caption) pair is a positive."""
    import torch.nn.functional as F

    pos = (labels[:, None] == labels[None, :]).float()
    targets = pos / pos.sum(dim=1, keepdim=True)
    loss_i2t = -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    loss_t2i = -(targets * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return 0.5 * (loss_i2t + loss_t2i)


def train(output: Path, steps: int, batch_size: int, lr: float, seed: int, n_train: int | None, threads: int) -> dict:
    import torch

    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = random.Random(seed)

    t0 = time.time()
    tokenizer = build_tokenizer(data.vocabulary(), max_length=MAX_TEXT_LENGTH)
    model = build_model(len(tokenizer), clip_text_ids(tokenizer))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f} M parameters")

    images, metas = data.generate("train", n_train)
    pixels_u8 = torch.from_numpy(images_to_uint8(images))
    labels_all = torch.tensor([m.label for m in metas])
    del images
    print(f"train split: {len(metas)} images, generated in {time.time() - t0:.1f}s")

    token_cache: dict[str, tuple[list[int], list[int]]] = {}

    def encode(texts):
        missing = [t for t in set(texts) if t not in token_cache]
        if missing:
            enc = tokenizer(missing, padding="max_length", max_length=MAX_TEXT_LENGTH, truncation=True)
            for t, ids, mask in zip(missing, enc["input_ids"], enc["attention_mask"]):
                token_cache[t] = (ids, mask)
        ids = torch.tensor([token_cache[t][0] for t in texts])
        mask = torch.tensor([token_cache[t][1] for t in texts])
        return ids, mask

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "embedding" in name or name == "logit_scale" else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.98), eps=1e-6,
    )
    warmup = max(1, steps // 20)

    def lr_at(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    model.train()
    n = len(metas)
    order: list[int] = []
    t_train = time.time()
    for step in range(steps):
        if len(order) < batch_size:
            perm = list(range(n))
            rng.shuffle(perm)
            order += perm
        idx, order = order[:batch_size], order[batch_size:]
        pix = normalise(pixels_u8[idx])
        labels = labels_all[idx]
        captions = [data.random_caption(metas[i].label, rng, metas[i]) for i in idx]
        ids, mask = encode(captions)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)

        out = model(input_ids=ids, attention_mask=mask, pixel_values=pix)
        loss = class_aware_clip_loss(out.logits_per_image, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 100 == 0 or step == steps - 1:
            acc = (out.logits_per_image.argmax(1) == torch.arange(len(idx))).float().mean().item()
            same = (labels[out.logits_per_image.argmax(1)] == labels).float().mean().item()
            print(f"step {step:5d}  loss {loss.item():.4f}  in-batch class acc {same:.3f}  "
                  f"exact {acc:.3f}  scale {model.logit_scale.exp().item():.1f}  "
                  f"{time.time() - t_train:.0f}s", flush=True)
    train_seconds = time.time() - t_train

    output.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(output, safe_serialization=True)
    save_tokenizer(tokenizer, output)
    build_image_processor().save_pretrained(output)

    from mmdeploy.demo.evaluate import zero_shot_top1

    top1 = zero_shot_top1(output, "eval")
    results = {
        "zero_shot_top1": round(top1, 4),
        "eval_split": "eval",
        "eval_images": data.SPLIT_SIZES["eval"],
        "num_classes": len(data.CLASS_NAMES),
        "prompt_template": data.PROMPT_TEMPLATE,
        "seed": seed,
        "steps": steps,
        "batch_size": batch_size,
        "learning_rate": lr,
        "train_images": n,
        "parameters": n_params,
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.time() - t0, 1),
        "threads": threads,
        "torch": torch.__version__,
    }
    (output / "eval_results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"saved to {output}")
    print(f"final zero-shot top-1 on eval ({data.SPLIT_SIZES['eval']} images, "
          f"{len(data.CLASS_NAMES)} classes): {top1:.4f}")
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "tiny_clip")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-train", type=int, default=None, help="train split size (default: data.SPLIT_SIZES)")
    # one thread by default: it is what the committed checkpoint used (float reductions
    # depend on the thread count) and it degrades gracefully on a busy machine, where
    # multi-threaded OpenMP spinning can make every step several times slower
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    train(args.output, args.steps, args.batch_size, args.lr, args.seed, args.n_train, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
