import numpy as np
import pytest

from builders import shared_adapter, shared_bundle
from mmdeploy.artifact import load_reference
from mmdeploy.backends import get_backend, load_runner
from mmdeploy.backends.torch import TorchRunner
from mmdeploy.errors import InputError, UnsupportedError

pytestmark = pytest.mark.slow  # litert-torch conversion takes several seconds per tower


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_vision_tflite_is_verified_against_pytorch(tmp_path, precision):
    out = tmp_path / f"vision-tflite-{precision}"
    out.mkdir()
    component = shared_adapter().components()["vision"]
    manifest = get_backend("tflite").compile(shared_bundle() / "vision", out,
                                             {"precision": precision, "torch_component": component})
    assert (out / "model.tflite").is_file()
    assert manifest.format == "tflite" and manifest.parity["passed"]
    assert manifest.parity["batch_sizes"] == [1, 3]  # batch 3 fed one sample at a time
    assert manifest.metadata["static_batch"] == 1
    if precision == "fp32":
        assert manifest.parity["outputs"]["image_embeds"]["max_abs"] < 1e-4
    else:
        assert manifest.parity["outputs"]["image_embeds"]["cosine"] > 0.99


def test_text_tower_int64_inputs_become_int32(tmp_path):
    out = tmp_path / "text-tflite"
    out.mkdir()
    component = shared_adapter().components()["text"]
    manifest = get_backend("tflite").compile(shared_bundle() / "text", out, {"torch_component": component})
    assert {i.name: i.dtype for i in manifest.inputs} == {"input_ids": "int32", "attention_mask": "int32"}
    assert manifest.metadata["input_casts"]["input_ids"] == "int64->int32"
    runner = load_runner(out, threads=1)
    feeds, ref = load_reference(shared_bundle() / "text")[1]  # int64 feeds, batch 3
    np.testing.assert_allclose(runner.run(feeds)["text_embeds"], ref["text_embeds"], atol=1e-4)
    assert manifest.metadata["pad_inputs"]["input_ids"] == {"axis": 1, "length": 16, "value": 0, "trim": {}}
    short = {k: v[:, :8].copy() for k, v in feeds.items()}
    short["input_ids"][:, -1] = 99  # eos of the shorter caption
    torch_out = TorchRunner(component).run(short)["text_embeds"]
    np.testing.assert_allclose(runner.run(short)["text_embeds"], torch_out, atol=1e-4)  # zero-padded to 16
    with pytest.raises(InputError, match="static shapes"):
        runner.run({k: np.concatenate([v, v], axis=1) for k, v in feeds.items()})


def test_padding_rules_pad_sequence_dims_and_trim_outputs_that_carry_them():
    from mmdeploy.artifact import Manifest, TensorSpec
    from mmdeploy.backends.tflite import pad_feed, padding_rules

    parent = Manifest(name="t", inputs=[TensorSpec(name="ids", dtype="int64", shape=["batch", "sequence"]),
                                        TensorSpec(name="pix", dtype="float32", shape=["batch", 3, 8, 8])],
                      outputs=[TensorSpec(name="e", dtype="float32", shape=["batch", 4])])
    rules = padding_rules(parent, [{"ids": np.ones((1, 5))}, {"ids": np.ones((2, 7))}], length=None)
    assert rules == {"ids": {"axis": 1, "length": 7, "value": 0, "trim": {}}}
    assert padding_rules(parent, [{"ids": np.ones((1, 5))}], length=12)["ids"]["length"] == 12
    assert pad_feed(rules, "ids", np.ones((2, 3))).tolist() == [[1, 1, 1, 0, 0, 0, 0]] * 2
    parent.outputs = [TensorSpec(name="h", dtype="float32", shape=["batch", "sequence", 4])]
    # an output with the same dim (last_hidden_state) is cut back to the length fed
    assert padding_rules(parent, [{"ids": np.ones((1, 5))}]) == {"ids": {"axis": 1, "length": 5, "value": 0,
                                                                          "trim": {"h": 1}}}


def test_tflite_needs_the_torch_module(tmp_path):
    with pytest.raises(UnsupportedError, match="PyTorch module"):
        get_backend("tflite").compile(shared_bundle() / "vision", tmp_path, {})
