"""`mmdeploy zeroshot`, `mmdeploy classify` and `mmdeploy bake` on the tiny CLIP bundle: round trips
through the real entry point, one-line errors (exit 2, nothing written), the bake's parity check."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from builders import quantize_bundle  # noqa: E402

from mmdeploy.artifact import read_manifest, sha256_file, verify_files  # noqa: E402

LABELS = "red,green,blue"
TEMPLATE = "{} circle"  # the tiny tokenizer/tower: this template gives three distinct text embeddings


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return quantize_bundle(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.fixture(scope="module")
def zs(bundle, tmp_path_factory) -> Path:
    from mmdeploy.stages.zeroshot import zero_shot_bundle

    return zero_shot_bundle(bundle, LABELS.split(","), tmp_path_factory.mktemp("zs") / "zs", TEMPLATE)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Real photos (scikit-image's wheel) written as files, not square, in two formats."""
    import skimage.data
    from PIL import Image

    root = tmp_path_factory.mktemp("photos")
    files = [root / "cat.jpg", root / "astronaut.png"]
    Image.fromarray(skimage.data.chelsea()[:, 50:400]).save(files[0], quality=95)
    Image.fromarray(skimage.data.astronaut()[:300, 40:260]).save(files[1])
    return files


def _one_line_error(result, *fragments, code=2):
    assert result.returncode == code, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_zeroshot_summary_and_layout(cli, bundle, tmp_path):
    out = tmp_path / "zs"
    result = cli("zeroshot", bundle, "--labels", LABELS, "--template", TEMPLATE, "-o", out)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert len(line.splitlines()) == 1 and "3 labels" in line and "onnx fp32" in line and str(out) in line
    m = read_manifest(out)
    assert m.kind == "model" and [a.component for a in m.artifacts] == ["vision"] and not verify_files(out)
    assert m.parent["manifest_sha256"] == sha256_file(bundle / "manifest.json")
    assert m.parity["preprocess_baked"]["min"] >= 0.99 and m.parity["preprocess_baked"]["images"] >= 2
    vision = read_manifest(out / "vision")
    assert [(t.name, t.dtype) for t in vision.inputs] == [("image", "uint8")]
    assert not (out / "text").exists() and not (out / "preprocess").exists()
    # a rerun replaces its own output, like every command that writes an artifact
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("red\n\ngreen\nblue\nred square\n")
    again = cli("zeroshot", bundle, "--labels-file", labels_file, "--template", TEMPLATE, "-o", out, "--json")
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["labels"] == ["red", "green", "blue", "red square"] and data["vision"]["format"] == "onnx"
    assert json.loads((out / "zero_shot.json").read_text())["labels"] == data["labels"]


def test_classify_matches_the_library_on_the_decoded_array(cli, zs, photos):
    from PIL import Image

    from mmdeploy.stages.zeroshot import ZeroShotClassifier

    result = cli("classify", zs, *photos, "--top", "3", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["bundle"] == str(zs) and [r["image"] for r in data["results"]] == [str(p) for p in photos]
    clf = ZeroShotClassifier(zs)
    for row, path in zip(data["results"], photos):
        label, probs = clf.classify(np.asarray(Image.open(path).convert("RGB")))
        assert row["label"] == label == row["top"][0]["label"]
        got = [t["probability"] for t in row["top"]]
        assert got == sorted(got, reverse=True) and len(got) == 3
        assert got[0] == pytest.approx(float(probs.max()), abs=1e-6)
        assert {t["label"] for t in row["top"]} == set(LABELS.split(","))
    assert len({tuple(round(t["probability"], 4) for t in r["top"]) for r in data["results"]}) == 2  # not a constant
    plain = cli("classify", zs, photos[0])
    assert plain.returncode == 0
    first = data["results"][0]
    assert plain.stdout.strip() == f"{photos[0]}: {first['label']} {first['top'][0]['probability']:.3f}"


@pytest.mark.parametrize("case,fragments", [
    ("one-label", ["at least two labels"]),
    ("no-braces", ["has no {}"]),
    ("labels-file-missing", ["cannot read labels file", "missing.txt"]),
    ("no-labels", ["pass --labels or --labels-file"]),
    ("output-is-input", ["--output is the input bundle"]),
    ("output-not-empty", ["exists and is not an mmdeploy artifact"]),
    ("component-dir", ["is one component"]),
    ("no-preprocess", ["no preprocess/preprocessor_config.json"]),
    ("no-text", ["no ONNX/OpenVINO text component"]),
])
def test_zeroshot_bad_input(cli, bundle, tmp_path, case, fragments):
    import shutil

    out = tmp_path / "out"
    source, extra = bundle, ["--labels", LABELS]
    if case == "one-label":
        extra = ["--labels", "red,"]
    elif case == "no-braces":
        extra += ["--template", "a photo"]
    elif case == "labels-file-missing":
        extra = ["--labels-file", tmp_path / "missing.txt"]
    elif case == "no-labels":
        extra = []
    elif case == "output-is-input":
        out = bundle
    elif case == "output-not-empty":
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    elif case == "component-dir":
        source = bundle / "vision"
    elif case in ("no-preprocess", "no-text"):
        source = tmp_path / "copy"
        shutil.copytree(bundle, source)
        if case == "no-preprocess":
            shutil.rmtree(source / "preprocess")
        else:
            m = read_manifest(source)
            m.artifacts = [a for a in m.artifacts if a.component != "text"]
            (source / "manifest.json").write_text(m.model_dump_json())
    before = sorted(p.name for p in tmp_path.iterdir())
    _one_line_error(cli("zeroshot", source, *extra, "-o", out), *fragments)
    if case == "output-not-empty":
        assert [p.name for p in out.iterdir()] == ["notes.txt"]
    elif case != "output-is-input":
        assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no partial directory left behind


def test_classify_bad_input(cli, zs, bundle, photos, tmp_path):
    junk = tmp_path / "notes.png"
    junk.write_text("not an image")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    # one unreadable file is reported and skipped: the others are still classified
    mixed = cli("classify", zs, photos[0], junk, empty, photos[1])
    assert mixed.returncode == 0, mixed.stderr
    assert [line.split(": ")[0] for line in mixed.stdout.strip().splitlines()] == [str(photos[0]), str(photos[1])]
    assert f"skipped 2 unreadable files: first: {junk} (" in mixed.stderr
    data = json.loads(cli("classify", zs, empty, photos[0], "--json").stdout)
    assert [r["image"] for r in data["results"]] == [str(photos[0])]
    assert data["skipped"] == [{"file": str(empty), "reason": "not a readable image (empty file)"}]
    _one_line_error(cli("classify", zs, junk), str(junk), "not a readable image")
    _one_line_error(cli("classify", zs, tmp_path / "gone.jpg"), "gone.jpg")
    _one_line_error(cli("classify", bundle, photos[0]), "is not a zero-shot bundle")
    _one_line_error(cli("classify", zs, photos[0], "--top", "0"), "--top 0")
    data = json.loads(cli("classify", zs, junk, "--json").stdout)
    assert data["error"]["type"] == "InputError" and data["error"]["exit_code"] == 2


def test_bake_verified_and_recorded(cli, bundle, photos, tmp_path):
    from PIL import Image

    from mmdeploy.backends import load_runner
    from mmdeploy.passes.calibration import preprocess_images

    out = tmp_path / "baked"
    result = cli("bake", bundle, "-o", out, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["parity"]["min"] >= 0.99 and data["parity"]["source"] == "skimage.data photos"
    m, vision = read_manifest(out), read_manifest(out / "vision")
    assert not verify_files(out)
    assert m.parent["manifest_sha256"] == sha256_file(bundle / "manifest.json")
    assert vision.parent["manifest_sha256"] == sha256_file(bundle / "vision" / "manifest.json")
    assert m.metadata["preprocess_baked"]["crop"] == [32, 32] and vision.metadata["preprocess_baked"]
    assert vision.parity["preprocess_baked"]["min"] == m.parity["preprocess_baked"]["min"] >= 0.99
    assert [(t.name, t.dtype, t.shape) for t in vision.inputs] == [("image", "uint8", ["height", "width", 3])]
    # the text tower and preprocess/ copied unchanged
    for rel in ("text/model.onnx", "text/manifest.json", "preprocess/preprocessor_config.json"):
        assert sha256_file(out / rel) == sha256_file(bundle / rel)
    # the baked vision on a decoded file == the unbaked vision on the processor's pixel_values
    image = Image.open(photos[0]).convert("RGB")
    baked = next(iter(load_runner(out / "vision").run({"image": np.asarray(image)}).values())).reshape(-1)
    (feeds,) = preprocess_images([image], bundle / "preprocess", [1, 3, 32, 32])
    ref = next(iter(load_runner(bundle / "vision").run(feeds).values())).reshape(-1)
    assert float(ref @ baked / np.linalg.norm(ref) / np.linalg.norm(baked)) > 0.99
    plain = cli("bake", bundle, "-o", out)
    assert plain.returncode == 0 and "cosine" in plain.stdout and len(plain.stdout.strip().splitlines()) == 1


def test_bake_check_failed_writes_nothing(bundle, tmp_path):
    from mmdeploy.errors import CheckFailed
    from mmdeploy.stages.zeroshot import bake_bundle

    with pytest.raises(CheckFailed) as info:
        bake_bundle(bundle, tmp_path / "baked", min_cosine=1.5, log=lambda msg: None)  # no cosine reaches 1.5
    assert info.value.exit_code == 1 and "cosine" in info.value.message
    assert list(tmp_path.iterdir()) == []


def test_bake_bad_input(cli, bundle, zs, tmp_path):
    out = tmp_path / "out"
    _one_line_error(cli("bake", bundle, "-o", bundle), "--output is the input bundle")
    _one_line_error(cli("bake", zs, "-o", out), "already has its preprocessing baked")
    _one_line_error(cli("bake", tmp_path / "nowhere", "-o", out), "does not exist")
    assert not out.exists()


@pytest.mark.slow
def test_bake_quantized_openvino_bundle(cli, bundle, tmp_path):
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    quantize(bundle, tmp_path / "ov", QuantizeOptions(method="nncf", components=["vision"], calib_limit=4,
                                                      latency_runs=0), log=lambda msg: None)
    result = cli("bake", tmp_path / "ov", "-o", tmp_path / "baked", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(v["format"], v["precision"]) for v in data["vision"]] == [("openvino", "int8")]
    assert data["parity"]["min"] >= 0.99
    vision = read_manifest(tmp_path / "baked" / "vision")
    assert vision.metadata["model_file"] == "model.xml" and (tmp_path / "baked" / "vision" / "model.bin").is_file()
    assert vision.inputs[0].name == "image"


def test_demo_model_classifies_shape_files_end_to_end(cli, demo_bundle, tmp_path):
    """The trained demo model (real weights, its own task): every class name as a label, one
    eval image per class written as PNG; the baked bundle gets (almost) all of them right."""
    from mmdeploy.data import shapes

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(shapes.CLASS_NAMES) + "\n")
    out = tmp_path / "zs"
    result = cli("zeroshot", demo_bundle, "--labels-file", labels, "--template", shapes.PROMPT_TEMPLATE, "-o", out)
    assert result.returncode == 0, result.stderr
    images, truth = shapes.make_split("eval", len(shapes.CLASS_NAMES))
    files = []
    for i, image in enumerate(images):
        files.append(tmp_path / f"{i}.png")
        image.save(files[-1])
    data = json.loads(cli("classify", out, *files, "--json").stdout)
    right = sum(r["label"] == shapes.CLASS_NAMES[t] for r, t in zip(data["results"], truth))
    assert right >= 0.9 * len(files), right  # the demo model scores 98.6 % on this task


def test_bake_compiled_bundle_bakes_every_onnx_and_openvino_vision(bundle, tmp_path):
    from mmdeploy.backends import load_runner
    from mmdeploy.stages.compile import compile_artifact
    from mmdeploy.stages.zeroshot import bake_bundle

    compiled = tmp_path / "compiled"
    compile_artifact(bundle, "openvino:fp32", compiled)
    m = bake_bundle(compiled, tmp_path / "baked", log=lambda msg: None)
    vision = {r.path: r.format for r in m.artifacts if r.component == "vision"}
    assert set(vision.values()) == {"onnx", "openvino"}
    assert set(m.parity["preprocess_baked"]["artifacts"]) == set(vision)
    assert m.passes[-1].report == {"baked": list(vision), "dropped": []}
    import skimage.data

    image = skimage.data.coffee()
    outs = [next(iter(load_runner(tmp_path / "baked" / path).run({"image": image}).values())).reshape(-1)
            for path in vision]
    assert np.allclose(outs[0], outs[1], atol=1e-4)  # one preprocessing on both runtimes


def test_bake_leaves_out_vision_it_cannot_bake(cli, bundle, tmp_path):
    """A vision artifact in another format (here a stand-in entry labelled tflite) would still take
    pixel_values: left out, and said so."""
    import shutil

    from mmdeploy.artifact import ArtifactRef, write_manifest

    source = tmp_path / "source"
    shutil.copytree(bundle, source)
    shutil.copytree(bundle / "vision", source / "vision-tflite")
    m = read_manifest(source)
    m.artifacts.append(ArtifactRef(path="vision-tflite", component="vision", format="tflite", target="tflite"))
    write_manifest(source, m)
    result = cli("bake", source, "-o", tmp_path / "baked")
    assert result.returncode == 0, result.stderr
    assert "left out (not bakeable): vision-tflite" in result.stdout
    assert not (tmp_path / "baked" / "vision-tflite").exists()
    assert [r.path for r in read_manifest(tmp_path / "baked").artifacts] == ["vision", "text"]


def test_processor_that_cannot_be_baked_is_one_line(cli, siglip_bundle, tmp_path):
    """A bilinear resize (the baked graph is PIL's bicubic): refused before anything is written.
    (SigLIP's own bicubic resize-to-size bakes: tests/test_runtime.py.)"""
    import shutil

    from mmdeploy.artifact import write_manifest

    src = tmp_path / "src"
    shutil.copytree(siglip_bundle, src)
    config = src / "preprocess" / "preprocessor_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "resample": 2}))
    write_manifest(src, read_manifest(src))
    out = tmp_path / "out"
    _one_line_error(cli("bake", src, "-o", out / "baked"), "can be baked")
    _one_line_error(cli("zeroshot", src, "--labels", "cat,dog", "-o", out / "zs"), "can be baked")
    assert not out.exists() or list(out.iterdir()) == []
