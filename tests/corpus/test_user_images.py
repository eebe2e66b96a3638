"""Corpus: images as phones and editors save them (EXIF-rotated JPEG, 16-bit PNG, CMYK JPEG,
transparent RGBA, palette PNG, upper-case extension, WebP) give the picture the user sees, and the
same calibration feeds, eval predictions and `mmdeploy classify` result as the plain 8-bit RGB
picture on the demo bundle.  Bad files in the same folder are skipped and counted."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from tests.corpus.images import close, plain_picture, write_variants
from mmdeploy.data.media import image_array

SAME_PICTURE = ("exif6", "exif8", "rgb48", "cmyk", "rgba", "upper_case", "webp")  # show plain_picture()


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    return write_variants(tmp_path_factory.mktemp("phone-pictures") / "pictures")


@pytest.fixture(scope="module")
def imagefolder(variants, tmp_path_factory):
    """An ImageFolder as a user's export looks: one class, the pictures in nested folders, plus an
    empty file and a truncated JPEG."""
    from PIL import Image

    root = tmp_path_factory.mktemp("user-imagefolder")
    for i, name in enumerate(("plain",) + SAME_PICTURE):
        sub = root / "red_triangle" / ("phone" if name.startswith("exif") else "editor") / f"{i:02d}"
        sub.mkdir(parents=True)
        shutil.copy(variants[name].path, sub / variants[name].path.name)
    (root / "red_triangle" / "editor" / "empty.png").write_bytes(b"")
    (root / "blue_circle").mkdir()
    blue = plain_picture(label="blue circle")
    Image.fromarray(blue).save(root / "blue_circle" / "b.png")
    data = variants["upper_case"].path.read_bytes()
    (root / "red_triangle" / "phone" / "cut.jpg").write_bytes(data[: len(data) // 2])
    return root


@pytest.mark.parametrize("case", ["plain", *SAME_PICTURE, "gray16", "gray", "bw", "palette", "palette_transparent"])
def test_decodes_to_the_picture_the_user_sees(variants, case):
    variant = variants[case]
    assert close(image_array(variant.path), variant), case
    if variant.wrong is not None:  # the case bites: ignoring its point gives another picture
        assert not close(variant.wrong, variant)


def test_same_calibration_feeds_as_the_plain_picture(demo_bundle, imagefolder):
    from mmdeploy.data.calib import calibration_images
    from mmdeploy.models import adapter_for_bundle

    adapter = adapter_for_bundle(demo_bundle)
    read = calibration_images(imagefolder / "red_triangle")
    feeds = adapter.calibration_feeds("vision", imagefolder / "red_triangle")
    assert len(feeds) == len(read.files) == 1 + len(SAME_PICTURE) and len(read.skipped) == 2
    assert read.note.startswith("skipped 2 unreadable files: first: ")
    plain = adapter.image_feeds([plain_picture()])["pixel_values"]
    stored = adapter.image_feeds([np.rot90(plain_picture()).copy()])["pixel_values"]
    wrong = float(np.abs(stored - plain).mean())
    for file, feed in zip(read.files, feeds):
        diff = float(np.abs(feed["pixel_values"] - plain).mean())
        assert diff < 0.05 < wrong, (file, diff, wrong)


def test_same_eval_result_as_the_plain_picture(demo_bundle, imagefolder):
    from mmdeploy.stages.eval import run_eval

    notes = []
    doc = run_eval([demo_bundle], imagefolder, log=notes.append)
    assert doc["data"]["n"] == 2 + len(SAME_PICTURE) and len(doc["data"]["skipped"]) == 2
    assert any(n.startswith("skipped 2 unreadable files: first: ") for n in notes)
    assert doc["results"][0]["metrics"]["acc1"]["value"] == 1.0  # every variant read as the red triangle


def test_classify_gives_the_plain_pictures_result(cli, demo_bundle, variants, imagefolder, tmp_path):
    from mmdeploy.data import shapes

    zs = tmp_path / "zs"
    made = cli("zeroshot", demo_bundle, "--labels", ",".join(shapes.CLASS_NAMES), "--template", "a photo of a {}",
               "-o", zs)
    assert made.returncode == 0, made.stderr
    files = [variants[n].path for n in ("plain",) + SAME_PICTURE] + [imagefolder / "red_triangle" / "editor" /
                                                                      "empty.png"]
    result = cli("classify", zs, *files, "--top", "3", "--json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    rows = doc["results"]
    assert [r["image"] for r in rows] == [str(f) for f in files[:-1]] and len(doc["skipped"]) == 1
    plain = rows[0]
    assert plain["label"] == "red triangle", plain  # the demo model reads the upright picture right
    for row in rows[1:]:
        assert row["label"] == plain["label"], row
        assert row["top"][0]["probability"] == pytest.approx(plain["top"][0]["probability"], abs=0.05), row


def test_a_pairs_file_calibrates_both_towers(demo_bundle, variants, tmp_path):
    """--calib takes what --eval takes: a CSV of image,caption rows feeds vision and text."""
    from mmdeploy.models import adapter_for_bundle
    from mmdeploy.stages.quantize import calibration_paths

    rows = [f"{variants[n].path},a photo of a red triangle" for n in ("plain",) + SAME_PICTURE]
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,caption\n" + "\n".join(rows) + "\n")
    assert calibration_paths([pairs]) == {"image": pairs, "text": pairs}
    adapter = adapter_for_bundle(demo_bundle)
    vision = adapter.calibration_feeds("vision", pairs)
    text = adapter.calibration_feeds("text", pairs)
    assert len(vision) == len(text) == len(rows)
    plain = adapter.image_feeds([plain_picture()])["pixel_values"]
    assert all(float(np.abs(f["pixel_values"] - plain).mean()) < 0.05 for f in vision)


def test_quantize_calibrates_on_an_imagefolder_skipping_bad_files(demo_bundle, imagefolder, tmp_path):
    """`quantize --calib` takes the ImageFolder (nested folders) and skips its two bad files with a
    note, recorded in the manifest."""
    from mmdeploy.artifact import read_manifest
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    lines = []
    options = QuantizeOptions(calib=imagefolder, components=["vision"], method="ort-static", accuracy_aware=False,
                              metric="cosine", accuracy_budget=0.5, latency_runs=0)  # a fixed method: fast
    quantize(demo_bundle, tmp_path / "q", options, log=lines.append)
    record = read_manifest(tmp_path / "q" / "vision").metadata["calibration"]
    assert record["source"] == str(imagefolder) and record["samples"] == 2 + len(SAME_PICTURE)
    assert record["skipped"] == 2 and record["note"].startswith("skipped 2 unreadable files: first: ")
    assert record["note"] in lines
