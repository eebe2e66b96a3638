"""Bundled demo models.

``demo:tiny-clip`` is a ~1 M parameter ``transformers.CLIPModel`` trained from
scratch by :mod:`mmdeploy.demo.train` on procedurally generated "coloured
shape" images (:mod:`mmdeploy.data.shapes`). It ships as a normal local Hugging
Face folder (safetensors weights, tokenizer, image processor) so every export
path can be exercised offline, and :mod:`mmdeploy.demo.evaluate` measures its
zero-shot accuracy on a deterministic held-out split.
"""

from __future__ import annotations

from pathlib import Path

DEMO_MODELS: dict[str, Path] = {
    "tiny-clip": Path(__file__).resolve().parent / "tiny_clip",
    "tiny-clap": Path(__file__).resolve().parent / "tiny_clap",  # audio + text (mmdeploy.demo.train_clap)
}


def demo_path(name: str) -> Path:
    """Folder of the bundled demo model ``name`` (``"tiny-clip"`` or ``"demo:tiny-clip"``).

    Raises :class:`KeyError` for unknown names.
    """
    key = name[len("demo:"):] if name.startswith("demo:") else name
    if key not in DEMO_MODELS:
        raise KeyError("available: " + ", ".join(f"demo:{n}" for n in sorted(DEMO_MODELS)))
    return DEMO_MODELS[key]
