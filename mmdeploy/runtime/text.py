"""Tokenizing and decoding with the bundle's own ``tokenizer.json`` (the ``tokenizers`` library).

What transformers' fast tokenizer does on a call ``tokenizer(texts, padding=..., truncation=True,
max_length=N)`` and on ``decode(ids, skip_special_tokens=True)``, with the settings read from
``tokenizer_config.json`` (pad token, padding side, model_max_length, clean-up of spaces).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmdeploy.errors import InputError

NO_LIMIT = 10 ** 6  # model_max_length of tokenizers saved without one is ~1e30


def _token(value) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


class TextTokenizer:
    def __init__(self, folder: Path, max_length: int | None = None, padding: str = "longest"):
        from tokenizers import Tokenizer

        folder = Path(folder)
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise InputError(f"{folder} has no tokenizer.json (the runtime tokenizes with it)",
                             "re-create the bundle with `mmdeploy convert CKPT --processor DIR` (DIR: the tokenizer "
                             "files the checkpoint lacks; convert writes tokenizer.json)")
        self.tokenizer = Tokenizer.from_file(str(path))
        cfg_path = folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.is_file() else {}
        self.config = cfg
        limit = cfg.get("model_max_length")
        limit = int(limit) if isinstance(limit, (int, float)) and limit < NO_LIMIT else None
        self.max_length = int(max_length) if max_length else limit
        self.padding = padding
        self.padding_side = cfg.get("padding_side", "right")
        pad = _token(cfg.get("pad_token"))
        self.pad_token = pad
        self.pad_id = self.tokenizer.token_to_id(pad) if pad is not None else None
        if self.pad_id is None:
            self.pad_id = 0
        self.clean_up = bool(cfg.get("clean_up_tokenization_spaces", False))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()

    def __call__(self, texts: list[str], padding: str | None = None,
                 max_length: int | None = None) -> dict[str, np.ndarray]:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` int64 [N, L] (padded to the
        longest text, or to ``max_length`` with padding "max_length"; truncated to max_length)."""
        texts = [str(t) for t in texts]
        if not texts:
            raise InputError("no texts to tokenize", "pass at least one text")
        padding = padding or self.padding
        length = max_length or self.max_length
        if length:  # special tokens kept, as transformers truncates
            self.tokenizer.enable_truncation(int(length), direction=self.config.get("truncation_side", "right"))
        else:
            self.tokenizer.no_truncation()
        rows = []
        for enc in self.tokenizer.encode_batch(texts, add_special_tokens=True):
            rows.append((list(enc.ids), list(enc.attention_mask), list(enc.type_ids)))
        width = length if padding == "max_length" and length else max(len(r[0]) for r in rows)
        out = {k: np.zeros((len(rows), width), np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        out["input_ids"][:] = self.pad_id
        for i, (ids, mask, types) in enumerate(rows):
            ids, mask, types = ids[:width], mask[:width], types[:width]
            cols = slice(0, len(ids)) if self.padding_side == "right" else slice(width - len(ids), width)
            out["input_ids"][i, cols] = ids
            out["attention_mask"][i, cols] = mask
            out["token_type_ids"][i, cols] = types
        return out

    def ids(self, text: str) -> list[int]:
        """One text's ids with special tokens, unpadded (what ``tokenizer(text)["input_ids"]`` is)."""
        return list(self.tokenizer.encode(str(text), add_special_tokens=True).ids)

    def decode(self, ids: list[int]) -> str:
        """``decode(ids, skip_special_tokens=True)`` as transformers' fast tokenizer gives it."""
        text = self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)
        if self.clean_up:
            for a, b in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                         (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(a, b)
        return text
