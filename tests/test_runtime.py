"""mmdeploy.runtime: bundles used without torch, transformers or onnx (a runtime-only install).

The device side runs in a subprocess whose import system refuses the toolchain
(tests/_no_toolchain.py); its results are compared here with the toolchain's: PyTorch
embeddings, transformers' image processor and tokenizer.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from _no_toolchain import run_cli, run_python

RUNTIME_EMBED = '''
import json, numpy as np, mmdeploy.runtime as rt
bundle, out, labels, *images = sys.argv[1:]
model = rt.load(bundle)
labels = labels.split(",")
np.savez(out, images=model.embed_images(images), texts=model.embed_texts(labels),
         probs=np.array([[t["probability"] for t in sorted(r["top"], key=lambda t: labels.index(t["label"]))]
                         for r in model.classify(images, labels, template="{}")]))
print(json.dumps({"leaked": _leaked(), "backends": model.backends, "ftz": bool(np.float32(1e-40) * 1 == 0)}))
'''


@pytest.fixture(scope="module")
def photo_files(tmp_path_factory):
    """Real photos (scikit-image's) as PNG files, with their labels."""
    from mmdeploy.models.preprocess import skimage_photos

    photos = skimage_photos()
    if not photos:
        pytest.skip("scikit-image is not installed (the `images` extra)")
    folder = tmp_path_factory.mktemp("photos")
    files = []
    for i, (_, image) in enumerate(photos[:8]):
        files.append(folder / f"{i}.png")
        image.save(files[-1])
    return files, [label for label, _ in photos[:8]]


def _cosines(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_runtime_without_toolchain_equals_pytorch(demo_bundle, photo_files, tmp_path):
    from PIL import Image

    from mmdeploy.backends.torch import TorchRunner
    from mmdeploy.models import resolve
    from mmdeploy.models.dual_encoder import zero_shot_logits

    files, labels = photo_files
    done = run_python(RUNTIME_EMBED, demo_bundle, tmp_path / "out.npz", ",".join(labels), *files)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report == {"leaked": [], "backends": ["onnxruntime"], "ftz": False}  # no float flags left behind
    got = np.load(tmp_path / "out.npz")

    adapter = resolve("demo:tiny-clip")
    towers = adapter.components()
    images = [Image.open(f).convert("RGB") for f in files]
    image_ref = TorchRunner(towers["vision"]).run(adapter.image_feeds(images))["image_embeds"]
    text_ref = TorchRunner(towers["text"]).run(adapter.text_feeds(labels))["text_embeds"]
    assert _cosines(got["images"], image_ref).min() >= 0.999
    assert _cosines(got["texts"], text_ref).min() >= 0.999
    logits = zero_shot_logits(image_ref, text_ref, adapter.head()["logit_scale"], scale_is_log=False)
    assert (got["probs"].argmax(1) == logits.argmax(1)).all()  # 100 % zero-shot agreement
    ref_probs = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(got["probs"], ref_probs / ref_probs.sum(1, keepdims=True), atol=1e-4)


@pytest.mark.parametrize("bundle_name", ["clip_bundle", "siglip_bundle"])
def test_image_preprocessing_within_one_grey_level_of_the_processor(bundle_name, request):
    """Shortest edge + crop (CLIP) and resize-only (SigLIP) on odd sizes, grey, RGBA and an image
    smaller than the crop."""
    from PIL import Image

    from mmdeploy.models.preprocess import load_image_processor
    from mmdeploy.runtime import load

    bundle = request.getfixturevalue(bundle_name)
    model = load(bundle)
    cfg = json.loads((bundle / "preprocess" / "preprocessor_config.json").read_text())
    processor = load_image_processor(bundle / "preprocess", cfg["image_processor_type"])
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(61, 45, 3), (45, 97, 3), (20, 17, 3)]]
    images = [Image.fromarray(a) for a in arrays] + [Image.fromarray(arrays[0][:, :, 0]).convert("RGB"),
                                                     Image.fromarray(np.dstack([arrays[1], arrays[1][:, :, :1]]))
                                                     .convert("RGB")]
    ref = processor(images=images, return_tensors="np")["pixel_values"]
    got = model.pixel_values(images)
    levels = np.abs(ref - got) * np.asarray(cfg["image_std"]).reshape(1, 3, 1, 1) / cfg["rescale_factor"]
    assert got.shape == ref.shape and levels.max() <= 1.0
    np.testing.assert_array_equal(model.pixel_values(arrays[:1]), model.pixel_values(images[:1]))


def test_tokenizer_equals_transformers(clip_bundle, siglip_bundle):
    from mmdeploy.models import adapter_for_bundle
    from mmdeploy.runtime import load

    texts = ["a photo of a cat.", "x", "the long caption " * 20, "UPPER case, punctuation!?"]
    for bundle in (clip_bundle, siglip_bundle):
        ref = adapter_for_bundle(bundle).text_feeds(texts)
        got = load(bundle).tokenizer(texts)
        for name, value in ref.items():
            np.testing.assert_array_equal(got[name], value)


def test_errors_are_one_line(demo_bundle, tmp_path):
    from mmdeploy.errors import InputError, UnsupportedError
    from mmdeploy.runtime import load

    model = load(demo_bundle)
    with pytest.raises(InputError, match="no labels"):
        model.classify([np.zeros((8, 8, 3), np.uint8)])
    with pytest.raises(InputError, match="uint8"):
        model.embed_images([np.zeros((8, 8, 3), np.float32)])
    with pytest.raises(InputError, match="no such image"):
        model.embed_images([tmp_path / "missing.png"])
    with pytest.raises(UnsupportedError, match="captioning"):
        model.caption(np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(InputError, match="unknown backend"):
        load(demo_bundle, backend="nope")
    with pytest.raises(InputError, match="lacks a tflite artifact"):
        load(demo_bundle, backend="tflite")
    with pytest.raises(InputError, match="one component"):
        load(demo_bundle / "vision")


def test_device_cli_without_toolchain(demo_bundle, photo_files, tmp_path):
    """`embed`, `classify --labels` and `inspect` run in the runtime-only install; a toolchain
    command says in one line what to install."""
    files, labels = photo_files
    done = run_cli("embed", demo_bundle, files[0], "a photo of a cat", "--json")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert [r["kind"] for r in data["embeddings"]] == ["image", "text"] and data["dim"] == 64
    assert abs(np.linalg.norm(data["embeddings"][0]["embedding"]) - 1) < 1e-5
    done = run_cli("classify", demo_bundle, *files[:2], "--labels", ",".join(labels[:3]), "--json")
    assert done.returncode == 0, done.stderr
    assert [r["label"] in labels for r in json.loads(done.stdout)["results"]] == [True, True]
    done = run_cli("inspect", demo_bundle)
    assert done.returncode == 0, done.stderr
    done = run_cli("convert", "demo:tiny-clip", "-o", tmp_path / "out")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: this command needs the toolchain (") and "is not installed" in last
    assert last.endswith('; pip install "mmdeploy[export]"')
    assert not (tmp_path / "out").exists()


def test_convert_writes_tokenizer_json_from_a_vocabulary(tmp_path):
    """A bundle whose tokenizer is only vocab.txt gets tokenizer.json (the runtime's one file),
    and the runtime then tokenizes and decodes as transformers."""
    from mmdeploy.models.preprocess import load_tokenizer, write_tokenizer_json
    from mmdeploy.runtime.text import TextTokenizer

    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nphoto\nof\ncat\ndog\n.\nthe\n")
    (tmp_path / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "BertTokenizer", "do_lower_case": true, "model_max_length": 8}')
    assert "tokenizer.json written" in write_tokenizer_json(tmp_path)
    assert write_tokenizer_json(tmp_path) is None  # already there: nothing to do
    texts = ["A photo of the CAT.", "dog " * 12, "x"]
    ref = load_tokenizer(tmp_path)(texts, padding=True, truncation=True, max_length=8, return_tensors="np")
    got = TextTokenizer(tmp_path)(texts)
    np.testing.assert_array_equal(got["input_ids"], ref["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], ref["attention_mask"])
    assert TextTokenizer(tmp_path).decode([2, 5, 6, 7, 8, 10, 3]) == load_tokenizer(tmp_path).decode(
        [2, 5, 6, 7, 8, 10, 3], skip_special_tokens=True)


def test_bake_resize_only_processor_and_run_it(siglip_bundle, tmp_path):
    """`bake` on SigLIP's resize-to-size processor (once refused): the baked graph (uint8 image
    in) gives the unbaked tower's embeddings on the processor's pixels, through the runtime."""
    from mmdeploy.runtime import load
    from mmdeploy.stages.zeroshot import bake_bundle

    manifest = bake_bundle(siglip_bundle, tmp_path / "baked", log=lambda msg: None)
    assert manifest.parity["preprocess_baked"]["min"] >= 0.999
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(50, 37, 3), (32, 32, 3), (21, 90, 3)]]
    baked, plain = load(tmp_path / "baked").embed_images(images), load(siglip_bundle).embed_images(images)
    assert (baked * plain).sum(1).min() >= 0.999


@pytest.mark.slow  # litert-torch converts both towers
def test_tflite_only_device(demo_bundle, tmp_path, cli):
    """As on a Raspberry Pi: onnxruntime unimportable too, the runtime picks the bundle's .tflite
    artifacts (LiteRT / tflite-runtime) and gives the ONNX artifacts' embeddings."""
    from mmdeploy.runtime import load

    done = cli("compile", demo_bundle, "--target", "tflite:fp32", "--output", tmp_path / "tfl")
    assert done.returncode == 0, done.stderr
    image = np.random.default_rng(2).integers(0, 256, (40, 30, 3), dtype=np.uint8)
    np.save(tmp_path / "image.npy", image)
    code = ('import json, numpy as np, mmdeploy.runtime as rt\nm = rt.load(sys.argv[1])\n'
            'np.savez(sys.argv[2], image=m.embed_images([np.load(sys.argv[3])]), text=m.embed_texts(["a red circle"]))\n'
            'print(json.dumps({"backends": m.backends, "leaked": _leaked()}))')
    ran = run_python(code, tmp_path / "tfl", tmp_path / "out.npz", tmp_path / "image.npy", block=("onnxruntime",))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout.strip().splitlines()[-1]) == {"backends": ["tflite"], "leaked": []}
    got = np.load(tmp_path / "out.npz")
    onnx = load(tmp_path / "tfl", backend="onnxruntime")
    assert (got["image"] * onnx.embed_images([image])).sum() >= 0.999
    assert (got["text"] * onnx.embed_texts(["a red circle"])).sum() >= 0.999
