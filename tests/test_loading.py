"""Safe checkpoint loading: pickles never run code unless allowed."""

import shutil

import pytest

from mmdeploy.errors import CheckpointError
from mmdeploy.stages.convert import convert


def _pickled_copy(src, dst, evil: bool, marker=None):
    import os

    import torch
    from safetensors.torch import load_file

    shutil.copytree(src, dst)
    state = load_file(dst / "model.safetensors")
    (dst / "model.safetensors").unlink()
    if evil:
        class Payload:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        state = {"state_dict": state, "payload": Payload()}
    torch.save(state, dst / "pytorch_model.bin")
    return dst


def test_plain_pickled_state_dict_loads_with_weights_only(tiny_clip_dir, tmp_path):
    src = _pickled_copy(tiny_clip_dir, tmp_path / "ckpt", evil=False)
    convert(src, tmp_path / "out", components=["vision"])
    assert (tmp_path / "out" / "vision" / "model.onnx").is_file()


def test_code_carrying_pickle_is_refused_and_never_executed(tiny_clip_dir, tmp_path):
    marker = tmp_path / "executed"
    src = _pickled_copy(tiny_clip_dir, tmp_path / "ckpt", evil=True, marker=marker)
    with pytest.raises(CheckpointError, match="--allow-pickle"):
        convert(src, tmp_path / "out", components=["vision"])
    assert not marker.exists() and not (tmp_path / "out").exists()
    # the user's explicit opt-in loads it (and so runs its code)
    convert(src, tmp_path / "out", components=["vision"], allow_pickle=True)
    assert marker.exists()
