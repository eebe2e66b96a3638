"""A sentence-transformers folder's pipeline (``modules.json``): Transformer → Pooling → Dense →
Normalize, exported into the graph so the bundle's ``sentence_embedding`` is what
``SentenceTransformer.encode`` returns (output names as Optimum's sentence-transformers export:
``token_embeddings``, ``sentence_embedding``).

Read from the folder's own files (``1_Pooling/config.json``, ``2_Dense/config.json`` + weights,
``sentence_bert_config.json``); sentence-transformers itself is needed only to check the export.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmdeploy.errors import CheckpointError, UnsupportedError

MODULES = "modules.json"
# sentence-transformers' Pooling modes, in the order it concatenates them
POOLING_MODES = ("cls_token", "max_tokens", "mean_tokens", "mean_sqrt_len_tokens", "lasttoken")
_KNOWN = {"Transformer", "Pooling", "Dense", "Normalize"}


def is_sentence_transformers(folder: Path) -> bool:
    return (Path(folder) / MODULES).is_file()


def read_pipeline(folder: Path) -> dict[str, Any] | None:
    """The pipeline as a plain record (kept in the manifest), or None for a plain HF folder."""
    folder = Path(folder)
    if not is_sentence_transformers(folder):
        return None
    try:
        modules = json.loads((folder / MODULES).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{folder / MODULES} is not valid JSON ({exc})",
                              "restore the file from the model's sentence-transformers folder") from None
    steps: list[dict[str, Any]] = []
    for module in sorted(modules, key=lambda m: int(m.get("idx", 0))):
        kind = str(module.get("type", "")).rsplit(".", 1)[-1]
        path = folder / module.get("path", "")
        if kind not in _KNOWN:
            raise UnsupportedError(f"{folder.name}: sentence-transformers module {module.get('type')!r} is not "
                                   "supported (Transformer, Pooling, Dense, Normalize are)",
                                   "export the transformer alone with --family hf-encoder after removing modules.json")
        step: dict[str, Any] = {"type": kind, "path": module.get("path", "")}
        if kind == "Transformer":
            config = _json(folder / "sentence_bert_config.json") if (folder / "sentence_bert_config.json").is_file() else {}
            step.update(max_seq_length=config.get("max_seq_length"), do_lower_case=bool(config.get("do_lower_case")))
        elif kind == "Pooling":
            config = _json(path / "config.json")
            modes = [m for m in POOLING_MODES if config.get(f"pooling_mode_{m}")]
            if config.get("pooling_mode_weightedmean_tokens"):
                raise UnsupportedError(f"{folder.name}: weighted-mean pooling is not supported",
                                       "use a model with mean, cls, max or last-token pooling")
            if not modes:
                raise CheckpointError(f"{path / 'config.json'} names no pooling mode", "set pooling_mode_mean_tokens")
            step.update(modes=modes, dimension=config.get("word_embedding_dimension"),
                        include_prompt=config.get("include_prompt", True))
        elif kind == "Dense":
            config = _json(path / "config.json")
            activation = str(config.get("activation_function", "torch.nn.modules.activation.Tanh")).rsplit(".", 1)[-1]
            if activation not in ("Tanh", "Identity"):
                raise UnsupportedError(f"{folder.name}: Dense activation {activation} is not supported",
                                       "Tanh and Identity are")
            step.update(in_features=config["in_features"], out_features=config["out_features"],
                        bias=bool(config.get("bias", True)), activation=activation)
        steps.append(step)
    if not steps or steps[0]["type"] != "Transformer":
        raise UnsupportedError(f"{folder.name}: {MODULES} does not start with a Transformer module",
                               "only Transformer-first pipelines export")
    return {"modules": steps, "max_seq_length": steps[0].get("max_seq_length")}


def _json(path: Path) -> dict:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read ({exc})", "restore the sentence-transformers folder") from None


def _dense_weights(folder: Path, allow_pickle: bool) -> dict:
    """A Dense module's ``linear.weight`` / ``linear.bias`` (safetensors; pickle only if allowed)."""
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    if (folder / "pytorch_model.bin").is_file():
        if not allow_pickle:
            raise CheckpointError(f"{folder / 'pytorch_model.bin'} is a pickle", "pass --allow-pickle if you trust it")
        import torch

        return torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
    raise CheckpointError(f"{folder} has no Dense weights (model.safetensors)", "restore the folder")


def build_module(transformer, pipeline: dict, folder: Path, allow_pickle: bool = False):
    """(input_ids, attention_mask) -> (token_embeddings, sentence_embedding) as a torch module."""
    import torch

    dense = []
    for step in pipeline["modules"]:
        if step["type"] == "Dense":
            layer = torch.nn.Linear(step["in_features"], step["out_features"], bias=step["bias"])
            state = _dense_weights(Path(folder) / step["path"], allow_pickle)
            layer.load_state_dict({k.removeprefix("linear."): v for k, v in state.items()})
            dense.append((layer, step["activation"]))

    class SentencePipeline(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = transformer
            self.dense = torch.nn.ModuleList([layer for layer, _ in dense])
            self.activations = [a for _, a in dense]

        def forward(self, input_ids, attention_mask):
            tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            x = None
            dense_i = 0
            for step in pipeline["modules"][1:]:
                if step["type"] == "Pooling":
                    x = pool(tokens, attention_mask, step["modes"])
                elif step["type"] == "Dense":
                    x = self.dense[dense_i](x)
                    if self.activations[dense_i] == "Tanh":
                        x = torch.tanh(x)
                    dense_i += 1
                elif step["type"] == "Normalize":
                    x = torch.nn.functional.normalize(x, p=2, dim=1)
            return tokens, x

    return SentencePipeline().eval()


def pool(tokens, attention_mask, modes: list[str]):
    """sentence-transformers' Pooling.forward for right-padded batches, in export-friendly ops."""
    import torch

    mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
    parts = []
    for mode in modes:
        if mode == "cls_token":
            parts.append(tokens[:, 0])
        elif mode == "max_tokens":
            parts.append(torch.where(mask > 0, tokens, torch.full_like(tokens, -1e9)).max(dim=1).values)
        elif mode in ("mean_tokens", "mean_sqrt_len_tokens"):
            summed = (tokens * mask).sum(dim=1)
            count = torch.clamp(mask.sum(dim=1), min=1e-9)
            parts.append(summed / (count if mode == "mean_tokens" else torch.sqrt(count)))
        elif mode == "lasttoken":
            last = (attention_mask.sum(dim=1) - 1).clamp(min=0).long()
            index = last.view(-1, 1, 1).expand(-1, 1, tokens.shape[-1])
            parts.append(tokens.gather(1, index).squeeze(1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def library_parity(folder: Path, runner, tokenizer, sentences: list[str], max_length: int | None) -> dict:
    """``sentence_embedding`` of an exported graph against ``SentenceTransformer.encode`` on real
    sentences (skipped, with the reason, when sentence-transformers is not installed)."""
    import numpy as np

    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        return {"skipped": "sentence-transformers is not installed (pip install sentence-transformers)"}
    model = SentenceTransformer(str(folder), device="cpu")
    want = model.encode(sentences, convert_to_numpy=True).astype(np.float64)
    got = []
    for text in sentences:
        enc = tokenizer([text], return_tensors="np", truncation=True, max_length=max_length)
        feeds = {n: np.asarray(enc[n], np.int64) for n in ("input_ids", "attention_mask")}
        got.append(runner.run(feeds)["sentence_embedding"].astype(np.float64))
    got = np.concatenate(got)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    return {"reference": f"SentenceTransformer.encode (sentence-transformers {_version()})", "n": len(sentences),
            "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "max_abs": float(np.abs(got - want).max())}


def _version() -> str:
    from importlib.metadata import version

    try:
        return version("sentence-transformers")
    except Exception:  # noqa: BLE001
        return "?"
