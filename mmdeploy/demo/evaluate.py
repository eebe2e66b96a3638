"""Zero-shot evaluation of the ``demo:tiny-clip`` checkpoint.

* :func:`zero_shot_logits` (from :mod:`mmdeploy.models.dual_encoder`) is the pure numpy helper
  shared by every backend.
* :func:`zero_shot_top1` is the PyTorch reference: it loads a local Hugging Face
  CLIP folder offline and measures top-1 accuracy on the held-out ``eval`` split
  of :mod:`mmdeploy.data.shapes`.

``python -m mmdeploy.demo.evaluate [FOLDER]`` prints the accuracy.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mmdeploy.models.dual_encoder import zero_shot_logits  # noqa: F401  (re-exported)


def _features(out):
    """transformers 5.x returns an output object (projection in ``pooler_output``); 4.x a tensor."""
    return out if hasattr(out, "shape") else out.pooler_output


def load(model_folder: str | Path):
    """``(model, tokenizer, image_processor)`` from a local folder, offline, model in eval mode."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    folder = str(model_folder)
    model = CLIPModel.from_pretrained(folder, local_files_only=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
    return model, tokenizer, processor


def embed(model, tokenizer, processor, images, texts) -> tuple[np.ndarray, np.ndarray]:
    """Projected (unnormalised) image and text embeddings as numpy arrays."""
    import torch

    with torch.inference_mode():
        pix = processor(images=images, return_tensors="pt")["pixel_values"]
        img = _features(model.get_image_features(pixel_values=pix))
        tok = tokenizer(list(texts), padding="max_length", max_length=tokenizer.model_max_length,
                        truncation=True, return_tensors="pt")
        txt = _features(model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]))
    return img.float().numpy(), txt.float().numpy()


def zero_shot_top1(model_folder: str | Path, split: str = "eval", n: int | None = None) -> float:
    """Zero-shot top-1 accuracy of the CLIP checkpoint in ``model_folder`` on ``split``.

    Prompts are :func:`mmdeploy.data.shapes.class_prompts`; images go through the
    folder's own image processor and tokenizer, exactly like a user would.
    """
    import torch

    from mmdeploy.data import shapes as data

    images, labels = data.make_split(split, n)
    model, tokenizer, processor = load(model_folder)
    with torch.inference_mode():
        img, txt = embed(model, tokenizer, processor, images, data.class_prompts())
        scale = model.logit_scale.detach().float().numpy()
    logits = zero_shot_logits(img, txt, scale)
    return float((logits.argmax(axis=1) == np.asarray(labels)).mean())


def main(argv: list[str] | None = None) -> int:
    from mmdeploy.demo import demo_path

    args = sys.argv[1:] if argv is None else argv
    folder = args[0] if args else demo_path("tiny-clip")
    print(f"zero-shot top-1 (eval): {zero_shot_top1(folder):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
