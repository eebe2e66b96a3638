"""CLAP adapter on a tiny random checkpoint: components export and match PyTorch on ONNX Runtime,
the zero-shot task runs from any runners, calibration data and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from mmdeploy.artifact import load_reference
from mmdeploy.backends import load_runner
from mmdeploy.backends.torch import TorchRunner
from mmdeploy.compare import verify_runner
from mmdeploy.errors import CalibrationError, CheckpointError
from mmdeploy.models import adapter_for_bundle, resolve
from builders import convert_bundle, tiny_clap_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_clap_checkpoint(tmp_path_factory.mktemp("clap") / "ckpt")


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    return convert_bundle(checkpoint, tmp_path_factory.mktemp("clap-bundle") / "bundle")


def test_detect_and_components(checkpoint):
    adapter = resolve(checkpoint)
    assert adapter.family == "clap"
    comps = adapter.components()
    assert set(comps) == {"audio", "text"}
    feeds = comps["audio"].make_inputs(3, 0)
    assert feeds["input_features"].shape == (3, 1, 101, 32)
    assert feeds["input_features"].dtype == np.float32
    out = TorchRunner(comps["audio"]).run(feeds)["audio_embeds"]
    assert out.shape == (3, 16)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)  # normalised like HF
    meta = adapter.metadata()
    assert meta["sampling_rate"] == 16000 and meta["feature_shape"] == [1, 101, 32]
    assert meta["head"]["logit_scale_audio"] > 1


def test_onnx_parity_and_task(bundle, checkpoint):
    runners = {name: load_runner(bundle / name) for name in ("audio", "text")}
    for name, runner in runners.items():
        record = verify_runner(runner, load_reference(bundle / name), atol=1e-4, label=name)
        assert record["passed"] and record["batch_sizes"] == [1, 3]
    adapter = adapter_for_bundle(bundle)  # no weights: preprocess files only
    assert adapter.family == "clap"
    result = adapter.evaluate(runners)
    torch_adapter = resolve(checkpoint)
    reference = torch_adapter.evaluate({n: TorchRunner(c) for n, c in torch_adapter.components().items()})
    assert result.n == 72 and 0.0 <= result.value <= 1.0
    assert result.agreement(reference) == 1.0
    assert result.value == reference.value


def test_calibration_feeds(bundle, tmp_path):
    from mmdeploy.data.synthetic_audio import write_split
    from mmdeploy.data.media import write_wav

    adapter = adapter_for_bundle(bundle)
    default = adapter.calibration_feeds("audio", limit=4)
    assert len(default) == 4 and default[0]["input_features"].shape == (1, 1, 101, 32)
    folder = tmp_path / "wavs"
    write_split(folder, "calib", 3)
    # a 44.1 kHz file is resampled to the extractor's rate
    write_wav(folder / "other_rate.wav", np.sin(np.arange(44100) * 0.05), 44100)
    feeds = adapter.calibration_feeds("audio", folder)
    assert len(feeds) == 4
    captions = tmp_path / "captions.txt"
    captions.write_text("the sound of a bell\n\nwhite noise\n")
    text = adapter.calibration_feeds("text", captions)
    assert len(text) == 2 and text[0]["input_ids"].shape == (1, 16)

    (folder / "broken.wav").write_bytes(b"RIFF not really a wav")
    assert len(adapter.calibration_feeds("audio", folder)) == 4  # skipped, not the whole set
    only = tmp_path / "only-broken"
    only.mkdir()
    (only / "broken.wav").write_bytes(b"RIFF not really a wav")
    with pytest.raises(CalibrationError, match="broken.wav"):
        adapter.calibration_feeds("audio", only)
    images = tmp_path / "images"
    images.mkdir()
    (images / "cat.png").write_bytes(b"")
    with pytest.raises(CalibrationError, match="images, not audio"):
        adapter.calibration_feeds("audio", images)
    with pytest.raises(CalibrationError, match="captions file"):
        adapter.calibration_feeds("text", folder)


def test_pickle_only_checkpoint_refused(checkpoint, tmp_path):
    import shutil

    folder = tmp_path / "pickled"
    shutil.copytree(checkpoint, folder)
    (folder / "model.safetensors").unlink()
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(CheckpointError, match="pytorch_model.bin"):
        resolve(folder).components()


def test_demo_trainer_smoke(tmp_path):
    """A few steps of the tiny_clap trainer write a checkpoint the adapter loads and exports."""
    from mmdeploy.demo.train_clap import train

    train(tmp_path / "tc", steps=3, batch=9, n_train=18, threads=1)
    adapter = resolve(tmp_path / "tc")
    assert adapter.family == "clap"
    assert adapter.components()["audio"].make_inputs(2, 0)["input_features"].shape == (2, 1, 101, 32)


@pytest.mark.slow
def test_shipped_tiny_clap_demo_fp32_and_int8(tmp_path):
    """The bundled trained demo: zero-shot top-1 on the synthetic audio set through ONNX Runtime,
    fp32 and with dynamically quantized (int8 weight) towers."""
    from pathlib import Path

    from onnxruntime.quantization import QuantType, quantize_dynamic

    import mmdeploy.demo
    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner

    demo = Path(mmdeploy.demo.__file__).parent / "tiny_clap"
    bundle = convert_bundle(demo, tmp_path / "bundle")
    adapter = adapter_for_bundle(bundle)
    fp32 = adapter.evaluate({n: load_runner(bundle / n) for n in ("audio", "text")})
    assert fp32.value >= 0.9
    int8 = {}
    for name in ("audio", "text"):
        quantize_dynamic(str(bundle / name / "model.onnx"), str(tmp_path / f"{name}.int8.onnx"),
                         weight_type=QuantType.QInt8, per_channel=True)
        int8[name] = OnnxRuntimeRunner(tmp_path / f"{name}.int8.onnx")
    quantized = adapter.evaluate(int8)
    assert quantized.value >= fp32.value - 0.05
    assert quantized.agreement(fp32) >= 0.9


def test_bench_accuracy_on_clap_bundle(bundle, cli):
    """`mmdeploy bench --accuracy` reaches the CLAP zero-shot task through the adapter."""
    import json

    done = cli("bench", bundle, "--iters", "2", "--warmup", "1", "--accuracy", "--json")
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)["accuracy"][0]
    assert record["metric"] == "zero-shot-top1" and record["n"] == 72 and record["drop_pts"] == 0.0


def test_runtime_audio_and_text_without_toolchain(bundle, checkpoint, tmp_path):
    """mmdeploy.runtime with the toolchain unimportable: CLAP audio (WAV files, numpy log-mel)
    and text embeddings equal PyTorch's (cosine >= 0.999)."""
    import json

    from _no_toolchain import run_python
    from mmdeploy.data.media import write_wav

    adapter = resolve(checkpoint)
    rng = np.random.default_rng(0)
    clips = [np.sin(np.arange(n) * f).astype(np.float32) * 0.5 + rng.normal(0, 0.01, n).astype(np.float32)
             for n, f in ((4000, 0.05), (16000, 0.2), (24000, 0.01))]
    files = [write_wav(tmp_path / f"{i}.wav", clip, 16000) for i, clip in enumerate(clips)]
    texts = ["a high tone", "white noise"]
    code = ("import json, numpy as np, mmdeploy.runtime as rt\nm = rt.load(sys.argv[1])\n"
            "np.savez(sys.argv[2], audio=m.embed_audio(sys.argv[3:]), text=m.embed_texts(" + repr(texts) + "))\n"
            "print(json.dumps(_leaked()))")
    done = run_python(code, bundle, tmp_path / "out.npz", *files)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == []
    got = np.load(tmp_path / "out.npz")
    towers = adapter.components()
    from mmdeploy.models.audio import load_audio

    audio = TorchRunner(towers["audio"]).run(adapter.audio_features([load_audio(f, 16000) for f in files]))
    text = TorchRunner(towers["text"]).run(adapter.tokenize(texts))
    for mine, ref in ((got["audio"], audio["audio_embeds"]), (got["text"], text["text_embeds"])):
        ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
        assert (mine * ref).sum(1).min() >= 0.999
