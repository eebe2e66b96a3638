"""Tiny random checkpoints of every image–text dual-encoder family, saved like real Hugging Face
folders (offline): config + safetensors, plus (unless ``processor=False``) a tokenizer and the
family's image processor, as ``save_pretrained`` of model and processor leaves them."""

from __future__ import annotations

from pathlib import Path

from mmdeploy.demo.tokenizer import build_tokenizer, clip_text_ids, save_tokenizer

IMAGE = 32
FAMILIES = ("clip", "siglip", "siglip2", "metaclip-2", "chinese-clip", "altclip", "align", "blip-itm")
_VIT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _text(tok, **extra):
    return dict(_VIT, vocab_size=len(tok), max_position_embeddings=16, **clip_text_ids(tok), **extra)


def build(family: str, tok):
    """(model, image processor) of ``family``, random weights, 32 px images."""
    import torch
    import transformers as T

    vision = dict(_VIT, image_size=IMAGE, patch_size=8)
    if family == "clip":
        return (T.CLIPModel(T.CLIPConfig(text_config=_text(tok), vision_config=vision, projection_dim=16)),
                T.CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}))
    if family == "siglip":
        return (T.SiglipModel(T.SiglipConfig(text_config=_text(tok, projection_size=32), vision_config=vision)),
                T.SiglipImageProcessor(size={"height": IMAGE, "width": IMAGE}))
    if family == "siglip2":  # 16 patches of 8 px: a 32 px square at the native grid
        config = T.Siglip2Config(text_config=_text(tok, projection_size=32),
                                 vision_config=dict(_VIT, num_patches=16, patch_size=8))
        return T.Siglip2Model(config), T.Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    if family == "metaclip-2":
        return (T.MetaClip2Model(T.MetaClip2Config(text_config=_text(tok), vision_config=vision, projection_dim=16)),
                T.CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}))
    if family == "chinese-clip":
        return (T.ChineseCLIPModel(T.ChineseCLIPConfig(text_config=_text(tok), vision_config=vision, projection_dim=16)),
                T.ChineseCLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}))
    if family == "altclip":  # XLM-R positions start after padding_idx: 16 tokens need 18 positions
        text = _text(tok, project_dim=16)
        text["max_position_embeddings"] = 18
        return (T.AltCLIPModel(T.AltCLIPConfig(text_config=text, vision_config=vision, projection_dim=16)),
                T.CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}))
    if family == "align":  # EfficientNet: 3 stages of one block at a quarter width (pooled dim 16)
        vision = dict(image_size=IMAGE, width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=64,
                      kernel_sizes=(3, 3, 5), in_channels=(32, 16, 24), out_channels=(16, 24, 40),
                      strides=(1, 2, 2), num_block_repeats=(1, 1, 1), expand_ratios=(1, 6, 6))
        config = T.AlignConfig(text_config=_text(tok), vision_config=vision, projection_dim=16)
        model = T.AlignModel(config)
        for module in model.vision_model.modules():  # std-0.02 init makes a CNN's activations vanish
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight)
        return (model,
                T.EfficientNetImageProcessor(size={"height": IMAGE, "width": IMAGE},
                                             crop_size={"height": IMAGE, "width": IMAGE}, rescale_factor=1 / 127.5,
                                             rescale_offset=True, do_normalize=False, include_top=False))
    if family == "blip-itm":
        config = T.BlipConfig(text_config=_text(tok), vision_config=vision, image_text_hidden_size=16)
        return (T.BlipForImageTextRetrieval(config),
                T.BlipImageProcessor(size={"height": IMAGE, "width": IMAGE}))
    raise KeyError(family)


def tiny_dual_encoder(family: str, folder: Path, seed: int = 0, processor: bool = True) -> Path:
    """Save a tiny ``family`` checkpoint to ``folder``; without tokenizer/processor files when
    ``processor=False`` (what a training script's ``model.save_pretrained`` leaves)."""
    import torch

    from mmdeploy.models.preprocess import quiet_transformers

    quiet_transformers()
    torch.manual_seed(seed)
    tok = build_tokenizer()
    model, image_processor = build(family, tok)
    model.eval().save_pretrained(folder)
    if processor:
        save_tokenizer(tok, folder)
        image_processor.save_pretrained(folder)
    return Path(folder)
