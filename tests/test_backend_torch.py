import numpy as np
import pytest

from builders import shared_adapter, shared_bundle
from mmdeploy.artifact import load_reference
from mmdeploy.backends import get_backend
from mmdeploy.backends.torch import TorchRunner
from mmdeploy.errors import InputError


def test_torch_runner_reproduces_the_reference():
    component = shared_adapter().components()["text"]
    runner = TorchRunner(component)
    assert runner.input_names == ["input_ids", "attention_mask"]
    for feeds, outputs in load_reference(shared_bundle() / "text"):
        got = runner.run(feeds)
        np.testing.assert_allclose(got["text_embeds"], outputs["text_embeds"], rtol=0, atol=1e-6)


def test_torch_runner_names_a_missing_input():
    runner = TorchRunner(shared_adapter().components()["text"])
    with pytest.raises(InputError, match="attention_mask"):
        runner.run({"input_ids": np.ones((1, 16), dtype=np.int64)})


def test_torch_backend_is_a_reference_not_a_target(tmp_path):
    backend = get_backend("torch")
    assert backend.available()[0]
    with pytest.raises(InputError, match="reference"):
        backend.compile(shared_bundle() / "vision", tmp_path, {})
    with pytest.raises(InputError):
        backend.load(shared_bundle() / "vision")
    runner = backend.load(shared_bundle() / "vision", component=shared_adapter().components()["vision"])
    assert runner.output_names == ["image_embeds"]
