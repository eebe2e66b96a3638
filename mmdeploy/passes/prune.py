"""Pruning on the PyTorch model: structured (attention heads, MLP channels) and magnitude.

Structured pruning physically slices ``nn.Linear`` layers of the transformer towers, so the
exported graph really has smaller MatMuls: fewer FLOPs, parameters and latency.

* ``heads``: per layer, the lowest-scoring ``round(amount * n_heads)`` heads go (at least one
  head is kept).  q/k/v lose their output rows, ``out_proj`` its input columns.  The head size
  is unchanged; transformers' CLIP/SigLIP attention reshapes with ``-1`` heads, so the module
  code runs unchanged.  transformers 5.x dropped ``prune_heads``/``config.pruned_heads``, and
  its configs derive the head size from ``hidden_size // num_attention_heads``, so a pruned
  head count cannot be expressed natively: the per-layer structure is stored in
  ``config.json`` under ``mmdeploy_pruning`` and :func:`load_pretrained` re-applies it on load.
* ``mlp``: per layer, the lowest-scoring intermediate channels go (``fc1`` rows, ``fc2``
  columns).  The same count goes in every layer, so ``intermediate_size`` in the config is
  updated and an MLP-only pruned checkpoint reloads with plain ``from_pretrained`` too.
* ``magnitude``: unstructured L1 sparsity (``torch.nn.utils.prune``), global or per layer.
  Dense runtimes see no speed-up from zeros; it shrinks the compressed size and sparse
  runtimes can use it.

Importance is activation x weight on calibration data: a head's score is the mean norm of its
contribution to ``out_proj``'s output; an MLP channel's is mean |activation| times the norm
of its ``fc2`` column.
"""

from __future__ import annotations

from typing import Any, Iterable, Literal

from pydantic import BaseModel, Field, field_validator

from mmdeploy.errors import InputError
from mmdeploy.models.pruned import (STRUCTURE_KEY, SUPPORTED_FAMILIES, TOWERS, apply_structure, head_dim,  # noqa: F401
                                   keep_channels, keep_heads, load_pretrained, num_heads, structure, towers)

METHODS = ("heads", "mlp", "magnitude")
# component name -> attribute of the transformers model holding that tower


class PruneConfig(BaseModel):
    """Typed parameters of the ``prune`` pass."""

    method: str  # heads | mlp | magnitude | heads,mlp
    amount: float = Field(description="fraction removed: heads / channels per layer, or weights")
    components: list[str] | None = None  # None: every tower the model has
    scope: Literal["per-layer", "global"] = "per-layer"  # magnitude only
    recover_steps: int = 0
    recover_lr: float = 1e-4
    batch_size: int = 16
    seed: int = 0

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        check_method(value)
        return value

    @field_validator("amount")
    @classmethod
    def _amount_in_range(cls, value: float) -> float:
        if not 0.0 < value < 1.0:
            raise ValueError("must be in (0, 1)")
        return value


def check_method(method: str) -> list[str]:
    """The method(s): one of METHODS, or structured ones combined as ``heads,mlp``."""
    methods = [m.strip() for m in str(method).split(",") if m.strip()]
    for m in methods or [method]:
        if m not in METHODS:
            raise InputError(f"unknown pruning method {m!r}",
                             "use one of: " + ", ".join(METHODS) + " (or heads,mlp)")
    if "magnitude" in methods and len(methods) > 1:
        raise InputError("magnitude cannot be combined with other methods in one run",
                         "run mmdeploy prune twice, magnitude last")
    if len(set(methods)) != len(methods):
        raise InputError(f"--method {method!r} repeats a method", "list each method once")
    return methods


def check_amount(amount: float) -> float:
    if not (isinstance(amount, (int, float)) and 0.0 < float(amount) < 1.0):
        raise InputError(f"--amount {amount} is outside (0, 1)",
                         "give the fraction to remove, e.g. --amount 0.3")
    return float(amount)


# --------------------------------------------------------------------------- importance


def _run_tower(model, component: str, batch: dict):
    if component == "vision":
        out = model.get_image_features(pixel_values=batch["pixel_values"])
    else:
        out = model.get_text_features(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")})
    return out if hasattr(out, "shape") else out.pooler_output


def importance(model, component: str, layers: list, batches: list[dict], kind: str) -> list:
    """Per layer, a score per head (``kind='heads'``) or per MLP channel (``'mlp'``)."""
    import torch

    scores = [None] * len(layers)
    hooks = []

    def make_hook(i, layer):
        def head_hook(module, args):
            x = args[0].detach()  # [B, T, H*d]: the heads' outputs, concatenated
            d = head_dim(layer.self_attn)
            h = x.shape[-1] // d
            w = module.weight.detach().view(module.weight.shape[0], h, d)
            contrib = torch.einsum("bthd,ehd->bthe", x.view(*x.shape[:-1], h, d), w)
            s = contrib.norm(dim=-1).mean(dim=(0, 1))
            scores[i] = s if scores[i] is None else scores[i] + s

        def mlp_hook(module, args):
            a = args[0].detach().abs().mean(dim=tuple(range(args[0].dim() - 1)))
            s = a * module.weight.detach().norm(dim=0)
            scores[i] = s if scores[i] is None else scores[i] + s

        return head_hook if kind == "heads" else mlp_hook

    for i, layer in enumerate(layers):
        target = layer.self_attn.out_proj if kind == "heads" else layer.mlp.fc2
        hooks.append(target.register_forward_pre_hook(make_hook(i, layer)))
    try:
        with torch.no_grad():
            for batch in batches:
                _run_tower(model, component, batch)
    finally:
        for h in hooks:
            h.remove()
    return scores


def _lowest(scores, remove: int) -> list[int]:
    """Indices kept after removing the ``remove`` lowest scores (ties by index, stable)."""
    order = sorted(range(len(scores)), key=lambda j: (float(scores[j]), j))
    return sorted(order[remove:])


# --------------------------------------------------------------------------- the passes


def prune_structured(model, method: str, amount: float, calib: dict[str, list[dict]],
                     components: Iterable[str] | None = None) -> dict[str, Any]:
    """Remove heads or MLP channels in place; returns what was removed per component/layer."""
    report: dict[str, Any] = {}
    for comp, layers in towers(model, components).items():
        scores = importance(model, comp, layers, calib[comp], method)
        removed = []
        for layer, s in zip(layers, scores):
            if method == "heads":
                n = num_heads(layer.self_attn)
                drop = min(n - 1, int(round(amount * n)))  # floor of one head per layer
                keep = _lowest(s.tolist(), drop)
                removed.append(sorted(set(range(n)) - set(keep)))
                keep_heads(layer.self_attn, keep)
            else:
                n = layer.mlp.fc1.out_features
                drop = min(n - 1, int(round(amount * n)))
                keep = _lowest(s.tolist(), drop)
                removed.append(len(set(range(n)) - set(keep)))
                keep_channels(layer.mlp, keep)
        key = "removed_heads" if method == "heads" else "removed_channels"
        report[comp] = {key: removed}
    update_config(model)
    return report


def update_config(model) -> None:
    """Record the structure in the config: intermediate_size when uniform, per-layer otherwise."""
    current = structure(model)
    pruned = {}
    for comp, spec in current.items():
        sub = getattr(model.config, f"{comp}_config", None)
        if sub is None:
            continue
        original_heads = sub.num_attention_heads
        if len(set(spec["intermediate"])) == 1:
            sub.intermediate_size = spec["intermediate"][0]
        if any(h != original_heads for h in spec["heads"]) or len(set(spec["intermediate"])) > 1:
            pruned[comp] = spec
    if pruned:
        setattr(model.config, STRUCTURE_KEY, pruned)
    elif hasattr(model.config, STRUCTURE_KEY):
        delattr(model.config, STRUCTURE_KEY)


def magnitude_targets(model, components: Iterable[str] | None = None) -> list[tuple[str, Any]]:
    """(name, nn.Linear) of every encoder Linear of the chosen towers."""
    targets = []
    for comp, layers in towers(model, components).items():
        for i, layer in enumerate(layers):
            for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                targets.append((f"{comp}.layers.{i}.self_attn.{name}", getattr(layer.self_attn, name)))
            for name in ("fc1", "fc2"):
                targets.append((f"{comp}.layers.{i}.mlp.{name}", getattr(layer.mlp, name)))
    return targets


def prune_magnitude(model, amount: float, scope: str = "per-layer",
                    components: Iterable[str] | None = None) -> list[tuple[str, Any]]:
    """Mask the smallest weights (L1) with torch.nn.utils.prune; masks stay until
    :func:`finalize_magnitude` so recovery training keeps them."""
    from torch.nn.utils import prune as tprune

    targets = magnitude_targets(model, components)
    if scope == "global":
        tprune.global_unstructured([(m, "weight") for _, m in targets],
                                   pruning_method=tprune.L1Unstructured, amount=amount)
    else:
        for _, m in targets:
            tprune.l1_unstructured(m, "weight", amount=amount)
    return targets


def finalize_magnitude(targets: list[tuple[str, Any]]) -> dict[str, Any]:
    """Make masks permanent (zeros in the dense weight); the sparsity report."""
    from torch.nn.utils import prune as tprune

    per_layer, zeros, total = {}, 0, 0
    for name, m in targets:
        if tprune.is_pruned(m):
            tprune.remove(m, "weight")
        z = int((m.weight == 0).sum())
        n = m.weight.numel()
        per_layer[name] = round(z / n, 4)
        zeros += z
        total += n
    return {"sparsity": round(zeros / max(total, 1), 4), "zeros": zeros, "weights": total,
            "per_layer": per_layer,
            "note": "unstructured zeros: dense runtimes (ONNX Runtime, OpenVINO, TFLite) run no "
                    "faster; the compressed size shrinks and sparse runtimes can exploit it"}


# --------------------------------------------------------------------------- measurements


def count_params(model, components: Iterable[str] | None = None) -> dict[str, int]:
    """Parameters of the whole model and of each tower."""
    counts = {"total": sum(p.numel() for p in model.parameters())}
    for comp, attr in TOWERS.items():
        tower = getattr(model, attr, None)
        if tower is not None and (components is None or comp in components):
            counts[comp] = sum(p.numel() for p in tower.parameters())
    return counts


def count_flops(model, component: str, batch: dict) -> int:
    """FLOPs of one tower for ``batch`` (torch's FlopCounterMode: matmuls and attention)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        _run_tower(model, component, batch)
    return int(counter.get_total_flops())


def compressed_size(model, components: Iterable[str] | None = None) -> int:
    """zlib (level 1) size of the chosen towers' weights: what magnitude sparsity shrinks."""
    import zlib

    total = 0
    for _, m in magnitude_targets(model, components):
        total += len(zlib.compress(m.weight.detach().cpu().numpy().tobytes(), 1))
    return total
