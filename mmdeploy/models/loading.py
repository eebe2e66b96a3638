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


def weight_files(folder: Path) -> tuple[list[Path], list[Path]]:
    """(safetensors files, pickle files) of a checkpoint folder, sharded indexes resolved."""
    safetensors = [folder / n for n in SAFETENSORS_NAMES if (folder / n).is_file()]
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{index} is not a valid shard index ({exc})") from None
        safetensors += [folder / s for s in shards]
    pickles = [folder / n for n in PICKLE_NAMES if (folder / n).is_file()]
    return safetensors, pickles


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
    try:
        if safetensors and "mmdeploy_pruning" in json.loads((folder / "config.json").read_text()):
            from mmdeploy.models.pruned import load_pretrained  # per-layer pruned structure

            model = load_pretrained(folder, model_cls, **kwargs)
        elif safetensors:
            model = model_cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
        else:
            state_dict = load_pickle_state_dict(pickles[0], allow_pickle)
            config = model_cls.config_class.from_pretrained(str(folder), local_files_only=True)
            config._attn_implementation = kwargs["attn_implementation"]
            model = model_cls(config)
            missing, unexpected = model.load_state_dict(state_dict, strict=False)
            if missing:
                raise CheckpointError(f"{pickles[0]} lacks {len(missing)} weights (e.g. {missing[0]})",
                                      "is this checkpoint of the family its config says?")
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise CheckpointError(f"{folder}: could not load the checkpoint ({first[:300]})",
                              "check that config.json matches the weights") from None
    return model.eval()
