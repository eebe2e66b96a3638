"""Baked image preprocessing (uint8 HWC in) and the zero-shot bundle with cached text embeddings."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from builders import quantize_bundle  # noqa: E402

from mmdeploy.errors import InputError  # noqa: E402
from mmdeploy.passes.preprocess import preprocess_graph, read_image_config  # noqa: E402
from mmdeploy.artifact import read_manifest  # noqa: E402
from mmdeploy.stages.zeroshot import ZeroShotClassifier, zero_shot_bundle  # noqa: E402

LABELS = ["red circle", "blue square", "green triangle"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return quantize_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


def _photo():
    import skimage.data

    return skimage.data.astronaut()[:300, 40:260]  # not square: resize + crop both matter


def _processor_pixels(bundle: Path, image: np.ndarray) -> np.ndarray:
    from PIL import Image
    from transformers import CLIPImageProcessor

    proc = CLIPImageProcessor.from_pretrained(str(bundle / "preprocess"))
    return proc(images=Image.fromarray(image), return_tensors="np")["pixel_values"]


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_baked_preprocess_matches_the_hf_processor(bundle, tmp_path, runtime):
    """The default (matmul) resize is PIL's: within one level of 255 of the HF processor, on both
    runtimes (OpenVINO ignores ONNX Resize's antialias, so the Resize form would alias there)."""
    import onnx

    config = read_image_config(bundle / "preprocess")
    onnx.save(preprocess_graph(config), str(tmp_path / "pre.onnx"))
    if runtime == "openvino":
        import openvino as ov

        model = ov.convert_model(str(tmp_path / "pre.onnx"))
        compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        run = lambda image: compiled({"image": image})[0]  # noqa: E731
        # a bf16 inference hint (what `quantize --method auto` may record on AMX) changes nothing
        bf16 = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
        assert np.array_equal(bf16({"image": _photo()})[0], run(_photo()))
    else:
        import onnxruntime as ort

        session = ort.InferenceSession(str(tmp_path / "pre.onnx"))
        run = lambda image: session.run(None, {"image": image})[0]  # noqa: E731
    import skimage.data

    for image in (_photo(), skimage.data.chelsea(), skimage.data.astronaut()[:20, :37]):  # down- and upscale
        got, ref = run(np.ascontiguousarray(image)), _processor_pixels(bundle, image)
        assert got.shape == ref.shape
        level = 1 / 255 / min(config["std"]) + 1e-4
        assert np.abs(got - ref).max() <= level and np.abs(got - ref).mean() < 1e-3


def test_resize_op_form_matches_the_processor_on_onnxruntime(bundle):
    import onnxruntime as ort

    config = read_image_config(bundle / "preprocess")
    session = ort.InferenceSession(preprocess_graph(config, resize="onnx").SerializeToString())
    got = session.run(None, {"image": _photo()})[0]
    assert np.abs(got - _processor_pixels(bundle, _photo())).mean() < 0.01  # ~1 level of 255


@pytest.mark.parametrize("fmt", ["onnx", "openvino"])
def test_zero_shot_bundle_classifies_like_processor_plus_model(bundle, tmp_path, fmt):
    from mmdeploy.backends import load_runner

    source = bundle
    if fmt == "openvino":
        from mmdeploy.stages.quantize import QuantizeOptions, quantize

        source = tmp_path / "ov"
        quantize(bundle, source, QuantizeOptions(method="nncf", latency_runs=0, calib_limit=4))
    out = zero_shot_bundle(source, LABELS, tmp_path / "zs")
    assert (out / "text_embeds.npy").is_file() and not (out / "text").exists()
    clf = ZeroShotClassifier(out)
    head = read_manifest(bundle).metadata["head"]  # the model's own logit scale, not a default
    assert clf.scale == pytest.approx(head["logit_scale"])
    label, probs = clf.classify(_photo())
    assert label in LABELS and abs(probs.sum() - 1) < 1e-5
    # the same image through the HF processor and the (unbaked) vision component
    vision = load_runner(source / "vision")
    emb = next(iter(vision.run({"pixel_values": _processor_pixels(bundle, _photo())}).values())).reshape(-1)
    baked = next(iter(clf.runner.run({"image": _photo()}).values())).reshape(-1)
    assert float(emb @ baked / np.linalg.norm(emb) / np.linalg.norm(baked)) > 0.99
    with pytest.raises(InputError):
        clf.classify(_photo().astype(np.float32))


def test_bad_input(bundle, tmp_path):
    with pytest.raises(InputError):
        zero_shot_bundle(bundle, ["only one"], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(InputError):
        ZeroShotClassifier(tmp_path)
