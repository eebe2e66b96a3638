"""Full-size model checkpoints for benchmarks, built from configs with random weights (offline).

Random weights are fine for timing and conversion; never for accuracy claims.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / "results" / "checkpoints"


def clip_b32(folder: Path | None = None) -> Path:
    """CLIP ViT-B/32 (CLIPConfig() defaults: 224 px, patch 32, 12+12 layers) saved as a local checkpoint."""
    folder = Path(folder or CACHE / "clip-vit-b32-random")
    if (folder / "model.safetensors").is_file():
        return folder
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from mmdeploy.demo.tokenizer import build_tokenizer, clip_text_ids, save_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(max_length=77)  # a small word-level vocabulary: fine for timing
    config = CLIPConfig()
    for key, value in clip_text_ids(tokenizer).items():
        setattr(config.text_config, key, value)
    CLIPModel(config).save_pretrained(folder)
    save_tokenizer(tokenizer, folder)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def clip_vit_h14_vision(folder: Path | None = None) -> Path:
    """A ViT-H/14-sized CLIP image tower (hidden 1280, 32 layers, 16 heads, MLP 5120, patch 14,
    224 px, projection 1024: ~632M parameters, 2.5 GB in fp32), random weights, saved as a user
    would (`save_pretrained` of CLIPVisionModelWithProjection) in two safetensors shards."""
    folder = Path(folder or CACHE / "clip-vit-h14-vision-random")
    if (folder / "model.safetensors.index.json").is_file():
        return folder
    import torch
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    config = CLIPVisionConfig(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16,
                              intermediate_size=5120, patch_size=14, image_size=224, projection_dim=1024)
    model = CLIPVisionModelWithProjection(config)
    model.save_pretrained(folder, max_shard_size="1500MB")
    del model
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(folder)
    return folder


def machine() -> dict:
    import os
    import platform

    cpu = "unknown"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}
