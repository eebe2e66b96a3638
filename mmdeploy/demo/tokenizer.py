"""Offline word-level tokenizer for tiny demo / test checkpoints.

:func:`build_tokenizer` returns a :class:`transformers.PreTrainedTokenizerFast`
backed by a ``tokenizers`` WordLevel model: lowercase normalizer, whitespace +
punctuation pre-tokenizer, ``<bos> ... <eos>`` template and fixed ids for the
special tokens::

    <pad> = 0, <bos> = 1, <unk> = 3, <eos> = 4   (id 2 is "<mask>", reserved)

``eos`` is deliberately *not* id 2: ``transformers.CLIPTextTransformer`` treats
``eos_token_id == 2`` as a legacy config and then pools at ``argmax(input_ids)``
(the highest token id) instead of the first ``eos``. With :func:`clip_text_ids`
copied into ``CLIPTextConfig`` the text model pools at the first ``<eos>``.

Saved with :func:`save_tokenizer` (``save_pretrained`` + a portable
``tokenizer_class``) it loads offline with
``transformers.AutoTokenizer.from_pretrained(folder)``. Encode fixed-length
batches with ``tok(texts, padding="max_length", max_length=tok.model_max_length,
truncation=True)``; truncation keeps the final ``<eos>``.
"""

from __future__ import annotations

from collections.abc import Iterable

PAD, BOS, MASK, UNK, EOS = "<pad>", "<bos>", "<mask>", "<unk>", "<eos>"
SPECIAL_TOKENS: list[str] = [PAD, BOS, MASK, UNK, EOS]  # ids 0..4, in this order
DEFAULT_MAX_LENGTH = 16

DEFAULT_WORDS: list[str] = (
    "a an the of on in at with and or is are this that photo picture image drawing "
    "shape small large big left right top bottom middle cat dog bird car person "
    "red green blue yellow purple orange black white circle square triangle star "
    "cross diamond sound music speech , . ! ? ' -"
).split()
"""Generic vocabulary for tiny random test checkpoints (CLIP/SigLIP/...)."""


def clip_text_ids(tokenizer) -> dict[str, int]:
    """``pad/bos/eos_token_id`` of ``tokenizer``, for a CLIP/SigLIP text config."""
    return {
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def build_tokenizer(words: Iterable[str] | None = None, max_length: int = DEFAULT_MAX_LENGTH):
    """Word-level ``PreTrainedTokenizerFast`` over ``words`` (default :data:`DEFAULT_WORDS`).

    Words are lowercased and deduplicated; ids follow the special tokens in the
    given order. Unknown words map to ``<unk>``. ``max_length`` becomes
    ``model_max_length`` (it should equal the text model's
    ``max_position_embeddings``).
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for w in DEFAULT_WORDS if words is None else words:
        w = w.lower().strip()
        if w and w not in vocab:
            vocab[w] = len(vocab)

    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()  # splits on \w+|[^\w\s]+
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}",
        pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, vocab[BOS]), (EOS, vocab[EOS])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        mask_token=MASK,
        model_max_length=max_length,
        padding_side="right",
        model_input_names=["input_ids", "attention_mask"],
    )


def save_tokenizer(tokenizer, folder) -> None:
    """``tokenizer.save_pretrained(folder)`` with ``tokenizer_class = "PreTrainedTokenizerFast"``.

    transformers 5.x writes its internal class name ``TokenizersBackend``, which
    transformers 4.x cannot resolve; ``PreTrainedTokenizerFast`` loads in both.
    """
    import json
    from pathlib import Path

    tokenizer.save_pretrained(folder)
    cfg_path = Path(folder) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
