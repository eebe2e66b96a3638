"""The structure of a pruned CLIP/SigLIP model: which heads and MLP channels each layer keeps.

Pruning stores the per-layer structure in ``config.json`` under ``mmdeploy_pruning``;
:func:`load_pretrained` re-applies it on load, so pruned checkpoints load (and convert) like
any other.  The pruning itself is :mod:`mmdeploy.passes.prune`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from mmdeploy.errors import InputError, UnsupportedError

SUPPORTED_FAMILIES = ("clip", "siglip")
TOWERS = {"vision": "vision_model", "text": "text_model"}
STRUCTURE_KEY = "mmdeploy_pruning"



def _encoder_layers(tower) -> list:
    layers = getattr(getattr(tower, "encoder", None), "layers", None)
    if layers is None:
        return []
    return [layer for layer in layers
            if all(hasattr(getattr(layer, "self_attn", None), p) for p in ("q_proj", "k_proj", "v_proj", "out_proj"))
            and hasattr(getattr(layer, "mlp", None), "fc1") and hasattr(layer.mlp, "fc2")]


def towers(model, components: Iterable[str] | None = None) -> dict[str, list]:
    """Encoder layers per component (``vision``, ``text``) that the pruner understands.

    Raises UnsupportedError for a model whose blocks it does not know (naming what is
    supported) and InputError for an unknown component.
    """
    found = {}
    for name, attr in TOWERS.items():
        tower = getattr(model, attr, None)
        layers = _encoder_layers(tower) if tower is not None else []
        if layers:
            found[name] = layers
    if not found:
        raise UnsupportedError(
            f"the pruner does not understand the blocks of {model.__class__.__name__}",
            "supported: " + ", ".join(SUPPORTED_FAMILIES)
            + " (transformer encoders with q/k/v/out_proj attention and fc1/fc2 MLPs)")
    if components is None:
        return found
    components = list(components)
    unknown = [c for c in components if c not in found]
    if unknown:
        raise InputError(f"unknown component(s) {', '.join(unknown)} for pruning",
                         "this model has: " + ", ".join(found))
    return {c: found[c] for c in components}


def head_dim(attn) -> int:
    return int(getattr(attn, "head_dim"))


def num_heads(attn) -> int:
    return attn.q_proj.out_features // head_dim(attn)


def _slice_linear(linear, index, dim: int):
    """A new nn.Linear keeping ``index`` along ``dim`` (0: outputs, 1: inputs) of the weight."""
    import torch

    weight = linear.weight.detach().index_select(dim, index).clone()
    bias = linear.bias
    if bias is not None and dim == 0:
        bias = bias.detach().index_select(0, index).clone()
    new = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None,
                          device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if bias is not None:
            new.bias.copy_(bias.detach())
    return new


def keep_heads(attn, keep: list[int]) -> None:
    """Physically keep only the heads ``keep`` of an attention module."""
    import torch

    d = head_dim(attn)
    index = torch.tensor([h * d + i for h in sorted(keep) for i in range(d)], dtype=torch.long)
    for name in ("q_proj", "k_proj", "v_proj"):
        setattr(attn, name, _slice_linear(getattr(attn, name), index, 0))
    attn.out_proj = _slice_linear(attn.out_proj, index, 1)
    attn.num_heads = len(keep)


def keep_channels(mlp, keep: list[int]) -> None:
    """Physically keep only the intermediate channels ``keep`` of an MLP block."""
    import torch

    index = torch.tensor(sorted(keep), dtype=torch.long)
    mlp.fc1 = _slice_linear(mlp.fc1, index, 0)
    mlp.fc2 = _slice_linear(mlp.fc2, index, 1)


def structure(model) -> dict[str, dict[str, list[int]]]:
    """Per component, per layer: head count and intermediate size."""
    return {name: {"heads": [num_heads(l.self_attn) for l in layers],
                   "intermediate": [l.mlp.fc1.out_features for l in layers]}
            for name, layers in towers(model).items()}


def apply_structure(model, wanted: dict[str, dict[str, list[int]]]) -> None:
    """Resize a freshly built model's layers to a stored structure (weights loaded after)."""
    for name, layers in towers(model, [c for c in wanted if c in TOWERS]).items():
        spec = wanted[name]
        for layer, heads, inter in zip(layers, spec["heads"], spec["intermediate"]):
            if heads != num_heads(layer.self_attn):
                keep_heads(layer.self_attn, list(range(heads)))
            if inter != layer.mlp.fc1.out_features:
                keep_channels(layer.mlp, list(range(inter)))


def load_pretrained(path: str | Path, model_class=None, **kwargs):
    """Load a (possibly pruned) Hugging Face checkpoint folder, re-applying the pruned structure.

    A checkpoint without ``mmdeploy_pruning`` in config.json loads with plain
    ``from_pretrained``.  Adapters call this instead of ``from_pretrained`` so pruned
    checkpoints convert like any other.
    """
    import transformers
    from safetensors.torch import load_file

    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    if model_class is None:
        arch = (config.get("architectures") or ["AutoModel"])[0]
        model_class = getattr(transformers, arch, transformers.AutoModel)
    wanted = config.get(STRUCTURE_KEY)
    if not wanted:
        return model_class.from_pretrained(str(path), local_files_only=True, **kwargs)
    cfg = model_class.config_class.from_pretrained(str(path), local_files_only=True)
    if kwargs.get("attn_implementation"):
        cfg._attn_implementation = kwargs["attn_implementation"]
    model = model_class(cfg)
    apply_structure(model, wanted)
    state = {}
    for file in sorted(path.glob("*.safetensors")):
        state.update(load_file(str(file)))
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = {n for n, _ in model.named_buffers()}
    missing = [m for m in missing if m not in buffers]
    if missing or unexpected:
        from mmdeploy.errors import CheckpointError

        raise CheckpointError(f"{path}: pruned checkpoint does not match its structure "
                              f"(missing {missing[:3]}, unexpected {unexpected[:3]})",
                              "re-run mmdeploy prune")
    return model.eval()
