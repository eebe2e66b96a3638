"""Family adapter registry and source resolution.

``resolve(source)`` turns what a user typed (a checkpoint folder, ``demo:tiny-clip``,
``file.py:function``, a pickled/safetensors file) into an adapter, auto-detecting the family
from the checkpoint's config.json.  Families register here by name; modules load lazily.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from mmdeploy.errors import CheckpointError, InputError, UnsupportedError

# family name -> "module:Class", in detection order (most specific first)
FAMILIES: dict[str, str] = {
    # image–text dual encoders: one adapter, one table entry each (mmdeploy.models.dual_encoder)
    "clip": "mmdeploy.models.dual_encoder:ClipAdapter",
    "siglip": "mmdeploy.models.dual_encoder:SiglipAdapter",
    "siglip2": "mmdeploy.models.dual_encoder:Siglip2Adapter",
    "metaclip-2": "mmdeploy.models.dual_encoder:MetaClip2Adapter",
    "chinese-clip": "mmdeploy.models.dual_encoder:ChineseClipAdapter",
    "altclip": "mmdeploy.models.dual_encoder:AltClipAdapter",
    "align": "mmdeploy.models.dual_encoder:AlignAdapter",
    "blip-itm": "mmdeploy.models.dual_encoder:BlipItmAdapter",
    "clap": "mmdeploy.models.clap:ClapAdapter",
    "blip": "mmdeploy.models.blip:BlipAdapter",
    "blip-vqa": "mmdeploy.models.blip_vqa:BlipVqaAdapter",
    "hf-encoder": "mmdeploy.models.hf_encoder:HFEncoderAdapter",
    "custom": "mmdeploy.models.custom:CustomAdapter",
}


def family_class(name: str):
    if name not in FAMILIES and name.replace("_", "-") in FAMILIES:  # model_type spelling: metaclip_2
        name = name.replace("_", "-")
    if name not in FAMILIES:
        raise UnsupportedError(f"unknown model family {name!r}",
                               "supported families: " + ", ".join(FAMILIES))
    module_name, class_name = FAMILIES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.startswith("mmdeploy"):
            raise UnsupportedError(f"model family {name!r} is not available in this build") from None
        raise
    return getattr(module, class_name)


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    try:
        config = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc.__class__.__name__})",
                              "restore the checkpoint's config.json") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} does not hold a JSON object", "restore the checkpoint's config.json")
    return config


def named_sources() -> dict:
    """Named model sources (``PREFIX:NAME``) that installed packages provide through the
    ``mmdeploy.sources`` entry point group: a function NAME -> checkpoint folder (KeyError if
    unknown).  The bundled demo registers ``demo:`` this way, like any plug-in would."""
    global _NAMED
    if _NAMED is None:
        from importlib.metadata import entry_points

        _NAMED = {ep.name: ep for ep in entry_points(group="mmdeploy.sources")}
    return _NAMED


_NAMED: dict | None = None


def resolve(source: str | Path, *, family: str | None = None, allow_pickle: bool = False,
            options: dict | None = None):
    """An adapter for ``source``; clear one-line errors for anything unusable."""
    text = str(source)
    prefix, _, name = text.partition(":")
    if name and prefix in named_sources():  # e.g. demo:tiny-clip, from a package's entry point
        try:
            path = named_sources()[prefix].load()(name)
        except KeyError as exc:
            raise InputError(f"unknown {prefix} model {text!r}", str(exc.args[0]) if exc.args else "") from None
        adapter = resolve(path, family=family, allow_pickle=allow_pickle, options=options)
        adapter.options[prefix] = text
        return adapter

    if ".py:" in text:  # user's own module: path/to/file.py:function
        return family_class("custom")(Path(text), allow_pickle=allow_pickle, options=options)

    path = Path(text)
    if not path.exists():
        raise InputError(f"{path} does not exist", "pass a local checkpoint folder, an .onnx file, "
                         "file.py:function or demo:tiny-clip")
    if family:
        return family_class(family)(path, allow_pickle=allow_pickle, options=options)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise CheckpointError(f"{path} is not a checkpoint folder (no config.json)",
                                  "pass a Hugging Face checkpoint folder saved with save_pretrained()")
        config = read_config(path)
        for name in FAMILIES:
            if name == "custom":
                continue
            try:
                cls = family_class(name)
            except UnsupportedError:
                continue
            if cls.detect(path, config):
                return cls(path, allow_pickle=allow_pickle, options=options)
        kind = config.get("model_type") or (config.get("architectures") or ["?"])[0]
        raise UnsupportedError(f"{path}: unknown model family (model_type {kind!r})",
                               "supported families: " + ", ".join(FAMILIES) + "; or pass --family")
    raise InputError(f"{path} is a file, not a checkpoint folder",
                     "pass the folder holding config.json and the weights (or an .onnx file)")


def adapter_for_bundle(bundle_dir: str | Path, options: dict | None = None):
    """The adapter of a converted model bundle (no weights needed), or None if unknown.

    ``options`` override the ones recorded at convert time (e.g. ``processor``: a folder with the
    tokenizer / processor files the bundle was converted without)."""
    from mmdeploy.artifact import read_manifest

    bundle_dir = Path(bundle_dir)
    manifest = read_manifest(bundle_dir)
    if not manifest.family or manifest.family not in FAMILIES:
        return None
    metadata = dict(manifest.metadata)
    extra = {k: v for k, v in (options or {}).items() if v is not None}
    if extra:
        metadata["options"] = {**(metadata.get("options") or {}), **extra}
    return family_class(manifest.family).from_bundle(bundle_dir, metadata)
