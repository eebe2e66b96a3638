"""Greedy caption / answer generation over Runners, reproducing BLIP's ``generate()`` (numpy only).

The loop mirrors transformers' greedy search for BLIP: start from ``[bos]``; each step takes the
argmax of the last position's logits; a sequence that produced ``eos`` (BLIP's ``sep`` token)
is finished and padded with ``pad`` from then on; stop when all are finished or the sequence
reaches ``max_length`` tokens (bos included).  The first step runs ``text_decoder`` (no past),
later steps ``text_decoder_with_past`` on the new token, the returned self-attention keys /
values and the first step's cross-attention keys / values; without a past runner every step
re-runs ``text_decoder`` on the whole prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GenerationSettings:
    bos_token_id: int
    eos_token_id: int  # BLIP stops on its sep token
    pad_token_id: int
    max_length: int = 20
    num_layers: int = 0  # decoder layers: past.{i}.key / past.{i}.value, i < num_layers

    @classmethod
    def from_metadata(cls, metadata: dict) -> "GenerationSettings":
        g = metadata["generation"]
        return cls(g["bos_token_id"], g["eos_token_id"], g["pad_token_id"], g["max_length"], g["num_layers"])


def past_names(num_layers: int, prefix: str) -> list[str]:
    return [f"{prefix}.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]


def greedy_generate(encoder_hidden_states: np.ndarray, decoder, settings: GenerationSettings,
                    decoder_with_past=None, max_length: int | None = None, return_logits: bool = False):
    """Token ids [batch, length] for image encodings, with the same stopping rules as HF
    (and, with ``return_logits``, the first step's logits [batch, vocab])."""
    max_length = settings.max_length if max_length is None else max_length
    enc = np.ascontiguousarray(encoder_hidden_states, dtype=np.float32)
    batch = enc.shape[0]
    tokens = np.full((batch, 1), settings.bos_token_id, dtype=np.int64)
    unfinished = np.ones(batch, dtype=bool)
    presents = past_names(settings.num_layers, "present")
    out = decoder.run({"input_ids": tokens, "encoder_hidden_states": enc})
    first_logits = out["logits"][:, -1, :]
    cross = {n: out[n] for n in past_names(settings.num_layers, "cross") if n in out}
    while tokens.shape[1] < max_length:
        nxt = out["logits"][:, -1, :].argmax(axis=-1).astype(np.int64)
        nxt = np.where(unfinished, nxt, settings.pad_token_id)
        tokens = np.concatenate([tokens, nxt[:, None]], axis=1)
        unfinished &= nxt != settings.eos_token_id
        if not unfinished.any() or tokens.shape[1] >= max_length:
            break
        if decoder_with_past is not None:
            feeds = {"input_ids": nxt[:, None], **cross}
            feeds.update(zip(past_names(settings.num_layers, "past"), (out[n] for n in presents)))
            out = decoder_with_past.run(feeds)
        else:
            out = decoder.run({"input_ids": tokens, "encoder_hidden_states": enc})
    return (tokens, first_logits) if return_logits else tokens


def caption_tokens(pixel_values: np.ndarray, runners: dict, settings: GenerationSettings,
                   max_length: int | None = None, return_logits: bool = False):
    """Greedy tokens from the ``vision``, ``text_decoder`` (and ``text_decoder_with_past``) runners."""
    enc = runners["vision"].run({"pixel_values": np.asarray(pixel_values, np.float32)})["image_embeds"]
    return greedy_generate(enc, runners["text_decoder"], settings, runners.get("text_decoder_with_past"),
                           max_length=max_length, return_logits=return_logits)


def trim(tokens: list[int], settings: GenerationSettings) -> list[int]:
    """A generated sequence up to and including its first eos (padding after it dropped)."""
    out = []
    for tok in tokens:
        out.append(int(tok))
        if tok == settings.eos_token_id:
            break
    return out


def answer_tokens(runners: dict, pixel_values: np.ndarray, question: dict[str, np.ndarray],
                  settings: GenerationSettings, max_length: int | None = None, return_logits: bool = False):
    """BLIP VQA: greedy answer tokens for images and one question's feeds (``input_ids``,
    ``attention_mask``) from the ``vision``, ``question_encoder`` and decoder runners."""
    image = runners["vision"].run({"pixel_values": np.asarray(pixel_values, np.float32)})["image_embeds"]
    encoded = runners["question_encoder"].run({"input_ids": question["input_ids"],
                                               "attention_mask": question["attention_mask"],
                                               "image_embeds": image})["question_embeds"]
    return greedy_generate(encoded, runners["text_decoder"], settings, runners.get("text_decoder_with_past"),
                           max_length=max_length, return_logits=return_logits)


def token_agreement(reference: list[list[int]], got: list[list[int]]) -> float:
    """Fraction of token positions equal (over the longer of each pair of sequences)."""
    same = total = 0
    for a, b in zip(reference, got):
        n = max(len(a), len(b))
        same += sum(x == y for x, y in zip(a, b))
        total += n
    return same / total if total else float("nan")
