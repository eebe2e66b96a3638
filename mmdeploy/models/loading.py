"""Safe checkpoint loading.

Weights are read from safetensors when present.  Pickled checkpoints (``pytorch_model.bin``,
``.pt``, ``.pth``) are read with ``torch.load(weights_only=True)``, which executes no code; one
that needs more than plain tensors is refused unless the user passes ``--allow-pickle``.
Corrupt or truncated files are detected before any framework touches them, so the user gets a
one-line error instead of a deep traceback.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from mmdeploy.errors import CheckpointError

SAFETENSORS_NAMES = ("model.safetensors",)
PICKLE_NAMES = ("pytorch_model.bin", "model.pt", "model.pth", "model.bin")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def check_safetensors(path: Path) -> None:
    """Validate a safetensors file's header and that every tensor's bytes are present."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) < 8:
                raise ValueError("file shorter than its 8-byte header length")
            (header_len,) = struct.unpack("<Q", raw)
            if header_len > min(size - 8, 100 << 20):
                raise ValueError("header length beyond the end of the file")
            header = json.loads(fh.read(header_len))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not a valid safetensors file ({exc})",
                              "re-download or re-save the checkpoint") from None
    if 8 + header_len + end > size:
        raise CheckpointError(
            f"{path} is truncated: the header describes {8 + header_len + end} bytes, the file has {size}",
            "re-copy the checkpoint; the file was cut short",
        )


def _shards(index: Path) -> list[Path]:
    """The shard files a ``*.index.json`` lists; one line naming the first missing one."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{index} is not a valid shard index ({exc.__class__.__name__}: {exc})",
                              "restore the index file saved with the shards") from None
    files = [index.parent / name for name in shards]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise CheckpointError(
            f"{index.parent}: shard {missing[0].name} is missing ({len(missing)} of {len(files)} shards "
            f"listed in {index.name} absent)",
            "copy every shard of the checkpoint into the folder")
    return files


def weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickle files) of a checkpoint folder, sharded indexes resolved."""
    safetensors = [folder / n for n in SAFETENSORS_NAMES if (folder / n).is_file()]
    index = folder / "model.safetensors.index.json"
    if index.is_file() and not safetensors:
        safetensors = _shards(index)
    pickles = [folder / n for n in PICKLE_NAMES if (folder / n).is_file()]
    index = folder / "pytorch_model.bin.index.json"
    if index.is_file() and not pickles:
        pickles = _shards(index)
    return safetensors, pickles


_SAFETENSORS_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}


def saved_float_dtype(files: list[Path]) -> str | None:
    """The floating-point dtype most of the weights were saved in (from safetensors headers)."""
    counts: dict[str, int] = {}
    for path in files:
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(header_len))
        for key, value in header.items():
            if key != "__metadata__" and value.get("dtype") in _SAFETENSORS_DTYPES:
                name = _SAFETENSORS_DTYPES[value["dtype"]]
                counts[name] = counts.get(name, 0) + 1
    return max(counts, key=counts.get) if counts else None


def _state_dtype(state: dict) -> str | None:
    counts: dict[str, int] = {}
    for value in state.values():
        if getattr(value, "is_floating_point", lambda: False)():
            name = str(value.dtype).removeprefix("torch.")
            counts[name] = counts.get(name, 0) + 1
    return max(counts, key=counts.get) if counts else None


def load_pickle_state_dict(path: Path, allow_pickle: bool = False) -> dict:
    """A state dict from a pickled file; arbitrary code is never run unless allowed."""
    import pickle

    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, AttributeError, TypeError) as exc:
        if "weights_only" not in str(exc) and "Unsupported" not in str(exc) and "global" not in str(exc).lower():
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})",
                                  "re-save it with torch.save(model.state_dict()) or as safetensors") from None
        if not allow_pickle:
            raise CheckpointError(
                f"{path} needs arbitrary code to unpickle; refusing to load it",
                "convert it to safetensors, or pass --allow-pickle only if you trust its origin",
            ) from None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)  # user opted in
        except Exception as exc2:  # noqa: BLE001
            raise CheckpointError(f"{path} could not be unpickled ({exc2.__class__.__name__})") from None
    except (EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is corrupt or truncated ({str(exc).splitlines()[0]})",
                              "re-copy the checkpoint") from None
    if hasattr(obj, "state_dict") and not isinstance(obj, dict):
        obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a state dict", "save model.state_dict()")
    return obj


def load_hf_model(model_cls, folder: Path, allow_pickle: bool = False, **kwargs):
    """``model_cls.from_pretrained(folder)`` with validation and safe pickle handling."""
    import torch  # noqa: F401  (fail early with the import error, not inside transformers)

    safetensors, pickles = weight_files(folder)
    if not safetensors and not pickles:
        raise CheckpointError(f"{folder} has a config.json but no weights",
                              "expected model.safetensors (or pytorch_model.bin)")
    for file in safetensors:
        check_safetensors(file)
    kwargs.setdefault("attn_implementation", "eager")
    # weights saved in fp16/bf16 are loaded (upcast) to float32, as Optimum exports by default;
    # convert --dtype keeps the saved precision in the ONNX weights instead
    kwargs.setdefault("dtype", torch.float32)
    saved = saved_float_dtype(safetensors) if safetensors else None
    try:
        if safetensors and "mmdeploy_pruning" in json.loads((folder / "config.json").read_text()):
            from mmdeploy.models.pruned import load_pretrained  # per-layer pruned structure

            model = load_pretrained(folder, model_cls, **kwargs)
        elif safetensors:
            model = model_cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
        else:
            state_dict = {}
            for file in pickles:  # one file, or the shards of pytorch_model.bin.index.json
                state_dict.update(load_pickle_state_dict(file, allow_pickle))
            saved = _state_dtype(state_dict)
            if hasattr(model_cls, "config_class"):
                config = model_cls.config_class.from_pretrained(str(folder), local_files_only=True)
                config._attn_implementation = kwargs["attn_implementation"]
                model = model_cls(config).float()
            else:  # an Auto class (hf-encoder): the config says which model
                from transformers import AutoConfig

                config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
                config._attn_implementation = kwargs["attn_implementation"]
                model = model_cls.from_config(config).float()
            missing, unexpected = model.load_state_dict(_strip_prefix(model, state_dict), strict=False)
            missing = [m for m in missing if m not in _tied_or_buffers(model)]
            if missing:
                raise CheckpointError(f"{pickles[0]} lacks {len(missing)} weights (e.g. {missing[0]})",
                                      "is this checkpoint of the family its config says?")
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"{folder}: could not load the checkpoint ({first[:300]})",
                              "check that config.json matches the weights") from None
    model = model.float()  # a pruned or custom load path may still hold the saved dtype
    model.mmdeploy_saved_dtype = saved or "float32"
    return model.eval()


def _strip_prefix(model, state: dict) -> dict:
    """A state dict saved from a base model (``bert.``-less keys) or with the ``base_model_prefix``."""
    prefix = getattr(model, "base_model_prefix", "") + "."
    own = set(model.state_dict())
    if prefix != "." and not any(k in own for k in state) and any(prefix + k in own for k in state):
        return {prefix + k: v for k, v in state.items()}
    return state


def _tied_or_buffers(model) -> set[str]:
    """Keys a state dict may lawfully omit: tied weights (saved once) and non-persistent buffers."""
    names = set()
    seen: dict[int, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            names.add(name)
        seen.setdefault(id(param), name)
    names.update(name for name, _ in model.named_buffers())
    return names
