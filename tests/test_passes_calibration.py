"""mmdeploy.passes.calibration: what --calib accepts and how it fails."""

from __future__ import annotations

import numpy as np
import pytest

from mmdeploy.errors import CalibrationError
from mmdeploy.passes.calibration import (
    check_modality, component_modality, data_kind, feeds_reader, feeds_sha256, read_captions, split_batch,
)


def test_data_kind(tmp_path):
    from PIL import Image

    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("RGB", (8, 8), "red").save(imgs / "a.jpg")
    (imgs / "notes.md").write_text("ignored")
    assert data_kind(imgs) == "image"
    audio = tmp_path / "audio"
    audio.mkdir()
    (audio / "a.wav").write_bytes(b"RIFF")
    assert data_kind(audio) == "audio"
    caps = tmp_path / "c.txt"
    caps.write_text("one\n")
    assert data_kind(caps) == "text"
    for bad, msg in [(tmp_path / "nope", "does not exist"), (imgs / "a.jpg", "single file")]:
        with pytest.raises(CalibrationError, match=msg):
            data_kind(bad)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CalibrationError, match="is empty"):
        data_kind(empty)
    (audio / "b.png").write_bytes(b"x")
    with pytest.raises(CalibrationError, match="mixes images and audio"):
        data_kind(audio)
    # an ImageFolder (class folders, images at any depth below them) is a folder of images
    nested = tmp_path / "imagefolder"
    (nested / "cat" / "indoor").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(nested / "cat" / "indoor" / "1.JPG")
    assert data_kind(nested) == "image"
    (tmp_path / "hollow" / "sub").mkdir(parents=True)
    with pytest.raises(CalibrationError, match="holds no images or audio clips"):
        data_kind(tmp_path / "hollow")


def test_images_and_captions(tmp_path):
    from PIL import Image

    from mmdeploy.data.calib import calibration_images

    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "bad.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(CalibrationError, match="cannot be decoded .*bad.png"):
        calibration_images(tmp_path / "only")
    Image.new("L", (8, 8)).save(tmp_path / "only" / "gray.png")
    got = calibration_images(tmp_path / "only")  # the bad file is skipped and counted
    assert [img.mode for img in got.images] == ["RGB"] and len(got.skipped) == 1
    assert got.note.startswith("skipped 1 unreadable file: first: ") and "bad.png" in got.note
    caps = tmp_path / "c.txt"
    caps.write_text("\n  \n")
    with pytest.raises(CalibrationError, match="no captions"):
        read_captions(caps)
    caps.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(CalibrationError, match="not UTF-8"):
        read_captions(caps)


def test_modality():
    assert component_modality(["pixel_values"]) == "image"
    assert component_modality(["input_ids", "attention_mask"]) == "text"
    assert component_modality(["input_features"]) == "audio"
    check_modality("image", "image", "vision")
    check_modality("audio", "tensor", "custom")
    with pytest.raises(CalibrationError, match="holds audio clips but component 'text' takes captions"):
        check_modality("audio", "text", "text")


def test_batches_hash_reader():
    feeds = [{"x": np.arange(6, dtype=np.float32).reshape(3, 2)}]
    single = split_batch(feeds)
    assert len(single) == 3 and single[1]["x"].shape == (1, 2)
    assert feeds_sha256(single) == feeds_sha256(split_batch(feeds))
    assert feeds_sha256(single) != feeds_sha256(single[:2])
    reader = feeds_reader(single + [{"x": single[0]["x"], "extra": np.zeros(1)}], ["x"])
    items = []
    while (item := reader.get_next()) is not None:
        items.append(item)
    assert len(items) == 4 and set(items[-1]) == {"x"}


def test_calib_takes_the_eval_formats(tmp_path):
    """A .csv/.jsonl of image,caption pairs (or a VQA file) feeds both towers, as --eval reads it."""
    import json

    from PIL import Image

    from mmdeploy.data.calib import calibration_images
    from mmdeploy.passes.calibration import data_kinds
    from mmdeploy.stages.quantize import calibration_paths

    (tmp_path / "img").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "img" / "a.PNG")
    (tmp_path / "img" / "b.png").write_bytes(b"")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("image,caption\nimg/a.PNG,a red square\nimg/b.png,nothing\nimg/a.PNG,red\n")
    assert data_kind(pairs) == "image" and data_kinds(pairs) == ("image", "text")
    assert calibration_paths([pairs]) == {"image": pairs, "text": pairs}
    got = calibration_images(pairs)
    assert [f.name for f in got.files] == ["a.PNG"] and len(got.skipped) == 1
    assert read_captions(pairs) == ["a red square", "nothing", "red"]
    vqa = tmp_path / "vqa.jsonl"
    vqa.write_text(json.dumps({"image": "img/a.PNG", "question": "what colour?", "answer": "red"}) + "\n")
    assert data_kinds(vqa) == ("image", "text") and read_captions(vqa) == ["what colour?"]
    with pytest.raises(CalibrationError, match="both hold image data"):
        calibration_paths([pairs, tmp_path / "img"])
