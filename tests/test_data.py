"""mmdeploy.data: the user-format readers and the CLIP_benchmark metric definitions."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmdeploy.data import metrics as M
from mmdeploy.errors import InputError


def test_classification_metrics_by_hand():
    logits = np.array([[3, 2, 1, 0, 0, 0], [0, 3, 2, 1, 0, 0], [0, 0, 0, 0, 1, 3], [1, 0, 0, 0, 0, 0]], float)
    labels = [0, 2, 5, 1]
    out = M.classification(logits, labels)
    assert out["acc1"]["value"] == pytest.approx(0.5)  # rows 0 and 2
    assert out["acc5"]["value"] == pytest.approx(1.0)  # label 1 is 2nd in row 3
    # recalls per class: 0 -> 1, 1 -> 0, 2 -> 0, 5 -> 1
    assert out["mean_per_class_recall"]["value"] == pytest.approx(0.5)
    assert M.classification(logits[:, :4], [0, 2, 1, 1])["acc5"] is None  # fewer than 5 classes


def test_retrieval_metrics_by_hand():
    # 3 images, 4 texts (image 0 has two captions); scores are texts x images
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.1, 0.7, 0.3], [0.5, 0.0, 0.4]])
    owner = [0, 0, 1, 2]
    out = M.retrieval(scores, owner)
    # text->image top-1: t0 ok (0), t1 wrong (1), t2 ok (1), t3 wrong (0)
    assert out["image_retrieval_recall@1"]["value"] == pytest.approx(0.5)
    # image->text top-1: img0 best text t0 (owner 0) ok; img1 best t1 (owner 0) wrong; img2 best t3 ok
    assert out["text_retrieval_recall@1"]["value"] == pytest.approx(2 / 3)
    # k >= the candidates (3 images, 4 texts): every item would count, so no score (and why)
    omitted = {}
    out = M.retrieval(scores, owner, omitted)
    assert out["image_retrieval_recall@5"] is None and out["text_retrieval_recall@5"] is None
    assert omitted["image_retrieval_recall@5"] == "k=5 >= 3 images: every item would count"
    assert out["image_retrieval_recall@1"]["n"] == 4 and out["text_retrieval_recall@1"]["n"] == 3


def test_vqa_accuracy_definition():
    ten = ["2"] * 2 + ["3"] * 8
    assert M.vqa_scores(["two"], [ten])[0] == pytest.approx(2 / 3)  # min(2/3, 1), "two" -> "2"
    assert M.vqa_scores(["3"], [ten])[0] == 1.0
    assert M.vqa_scores(["A cat."], [["cat"]])[0] == 1.0  # one answer: exact match after normalisation
    assert M.vqa_scores(["dog"], [["cat"]])[0] == 0.0


def test_captioning_uses_pycocoevalcap():
    refs = [["a red star on grey", "a red star"], ["a blue circle", "one blue circle"]]
    same = M.captioning(["a red star", "a blue circle"], refs)
    other = M.captioning(["a green square", "a yellow cross"], refs)
    assert same["bleu4"]["n"] == 2 and same["cider"]["value"] > other["cider"]["value"]
    assert other["bleu4"]["value"] < 0.01


def test_bootstrap_interval_contains_value_and_shrinks_with_n():
    small = M.mean_metric([1, 0] * 10)
    large = M.mean_metric([1, 0] * 500)
    for m in (small, large):
        assert m["ci95"][0] <= m["value"] <= m["ci95"][1]
    assert M.half_width(large) < M.half_width(small)
    assert M.resolution(small) == pytest.approx(5.0)


def test_imagefolder_classnames_and_templates(tmp_path):
    from PIL import Image

    from mmdeploy.data.imagefolder import read_imagefolder

    for cls in ("b_dog", "a_cat"):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (8, 8)).save(tmp_path / cls / "x.png")
    ds = read_imagefolder(tmp_path)
    assert ds.classnames == ["a cat", "b dog"] and ds.labels == [0, 1] and ds.templates_source == "default"
    (tmp_path / "classnames.txt").write_text("cat\ndog\n")
    (tmp_path / "templates.txt").write_text("a {c}\n")
    ds = read_imagefolder(tmp_path)
    assert ds.classnames == ["cat", "dog"] and ds.templates == ["a {c}"]
    (tmp_path / "classnames.txt").write_text("cat\n")
    with pytest.raises(InputError, match="1 names for 2 class folders"):
        read_imagefolder(tmp_path)
    (tmp_path / "classnames.txt").unlink()
    (tmp_path / "templates.txt").write_text("a photo\n")
    with pytest.raises(InputError, match=r"template 1 .* has no \{c\}"):
        read_imagefolder(tmp_path)


def test_pairs_csv_and_jsonl_group_captions(tmp_path):
    from PIL import Image

    from mmdeploy.data.pairs import read_pairs

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    (tmp_path / "p.csv").write_text("image,caption\na.png,one\nb.png,two\na.png,three\n")
    ds = read_pairs(tmp_path / "p.csv")
    assert [f.name for f in ds.files] == ["a.png", "b.png"] and ds.caption_file == [0, 1, 0]
    assert ds.references() == [["one", "three"], ["two"]]
    (tmp_path / "p.jsonl").write_text(json.dumps({"image": "a.png", "captions": ["x", "y"]}) + "\n")
    assert read_pairs(tmp_path / "p.jsonl").captions == ["x", "y"]
    (tmp_path / "q.csv").write_text("audio,caption\nmissing.wav,a tone\n")
    with pytest.raises(InputError, match="row 2: missing.wav does not exist"):
        read_pairs(tmp_path / "q.csv")


def test_builtin_sets_are_in_user_formats(tmp_path):
    from mmdeploy.data.builtin import builtin_path
    from mmdeploy.data.imagefolder import read_imagefolder
    from mmdeploy.data.pairs import read_pairs
    from mmdeploy.data.vqa import read_vqa

    captions = read_pairs(builtin_path("skimage-captions", root=tmp_path))
    assert len(captions.files) >= 15 and len(captions.captions) == 3 * len(captions.files)
    vqa = read_vqa(builtin_path("skimage-vqa", root=tmp_path))
    assert len(vqa.questions) >= 10 and all(vqa.answers)
    shapes = read_imagefolder(builtin_path("demo-shapes", root=tmp_path))
    assert len(shapes) == 360 and len(shapes.classnames) == 36 and shapes.templates == ["a photo of a {c}"]
    audio = read_imagefolder(builtin_path("synthetic-audio", root=tmp_path))
    assert audio.modality == "audio" and len(audio.classnames) == 9
    with pytest.raises(InputError, match="unknown built-in"):
        builtin_path("nope", root=tmp_path)
