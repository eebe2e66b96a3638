"""Tiny random checkpoints of each family, saved like real Hugging Face folders (offline)."""

from __future__ import annotations

from pathlib import Path

from mmdeploy.demo.tokenizer import build_tokenizer, clip_text_ids, save_tokenizer

def tiny_clip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    tok = build_tokenizer()
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=len(tok), max_position_embeddings=16, **clip_text_ids(tok)),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    save_tokenizer(tok, folder)
    CLIPImageProcessor(size={"shortest_edge": image_size},
                       crop_size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return Path(folder)


def tiny_siglip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    import torch
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(seed)
    tok = build_tokenizer()
    config = SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=len(tok), max_position_embeddings=16, projection_size=32,
                         **clip_text_ids(tok)),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8))
    SiglipModel(config).save_pretrained(folder)
    save_tokenizer(tok, folder)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return Path(folder)
