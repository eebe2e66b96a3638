"""Tiny random checkpoints of each family, saved like real Hugging Face folders (offline)."""

from __future__ import annotations

from pathlib import Path

WORDS = ["a", "photo", "of", "the", "cat", "dog", "car", "tree", "house", "person", "bird", "boat",
         "flower", "plane", "red", "green", "blue", "small", "large", "circle", "square", "drawing",
         "an", "astronaut", "cup", "coffee", "rocket", "man", "with", "camera", "horse", "galaxies",
         "in", "space", "moon", "coins", "clock", "page", "text", "brick", "wall"]


def build_tokenizer(words=WORDS, model_max_length: int = 16):
    from tokenizers import Tokenizer, models, pre_tokenizers, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, "<bos>": 2, "<eos>": 3}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", model_max_length=model_max_length)


def tiny_clip(folder: Path, seed: int = 0, image_size: int = 32) -> Path:
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(seed)
    tok = build_tokenizer()
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                         vocab_size=len(tok), max_position_embeddings=16, bos_token_id=2, eos_token_id=3,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8),
        projection_dim=16)
    CLIPModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
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
                         vocab_size=len(tok), max_position_embeddings=16, pad_token_id=0, eos_token_id=3,
                         bos_token_id=2, projection_size=32),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=8))
    SiglipModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    SiglipImageProcessor(size={"height": image_size, "width": image_size}).save_pretrained(folder)
    return Path(folder)
