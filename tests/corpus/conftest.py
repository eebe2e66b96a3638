"""Inputs users bring, built once per session in a temporary directory (nothing downloaded)."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

MULTI_INPUT = '''
import torch


class Scaled(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(6, 4)

    def forward(self, x, scale):
        return self.proj(x) * scale


def build():
    torch.manual_seed(0)
    # `scale` has no batch axis: one [1, 1] tensor shared by every sample
    return {"module": Scaled().eval(), "inputs": {"x": torch.randn(2, 6), "scale": torch.full((1, 1), 0.5)},
            "output_names": ["y"], "dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}}
'''


def tiny_bert(folder: Path) -> Path:
    """A BERT-like encoder (BertModel + tokenizer) saved as a user's training script leaves it."""
    import torch
    from transformers import BertConfig, BertModel

    from mmdeploy.demo.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer()
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32)).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus")


@pytest.fixture(scope="session")
def bert_dir(corpus_dir) -> Path:
    return tiny_bert(corpus_dir / "tiny-bert")


@pytest.fixture(scope="session")
def multi_input_py(corpus_dir) -> Path:
    path = corpus_dir / "scaled.py"
    path.write_text(textwrap.dedent(MULTI_INPUT))
    return path


@pytest.fixture(scope="session")
def captions_txt(corpus_dir) -> Path:
    """Calibration captions of different token lengths."""
    path = corpus_dir / "captions.txt"
    path.write_text("a photo of a red circle\na blue square\nthe green triangle on a photo of something red\n"
                    "red\na small blue circle\n")
    return path
