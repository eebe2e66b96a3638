"""BLIP question answering on a tiny random checkpoint: four components export and match
PyTorch; the greedy loop over ONNX Runtime and OpenVINO runners reproduces
``BlipForQuestionAnswering.generate()`` token for token; ``answer()`` and `mmdeploy vqa`."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmdeploy.artifact import load_reference, read_manifest
from mmdeploy.backends import load_runner
from mmdeploy.backends.torch import TorchRunner
from mmdeploy.compare import verify_runner
from mmdeploy.models import adapter_for_bundle, resolve
from builders import convert_bundle, openvino_runner, tiny_blip_vqa_checkpoint

COMPONENTS = ("vision", "question_encoder", "text_decoder", "text_decoder_with_past")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_blip_vqa_checkpoint(tmp_path_factory.mktemp("blip-vqa") / "ckpt")


@pytest.fixture(scope="module")
def adapter(checkpoint):
    return resolve(checkpoint)


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    return convert_bundle(checkpoint, tmp_path_factory.mktemp("blip-vqa-bundle") / "bundle")


def _generate(adapter, image, question: str) -> str:
    """What a transformers user runs: processor + tokenizer, generate(), decode."""
    import torch

    pixels = torch.from_numpy(adapter.pixel_values([image])["pixel_values"])
    enc = adapter.tokenizer(question, return_tensors="pt")
    with torch.no_grad():
        out = adapter.torch_model().generate(input_ids=enc["input_ids"], pixel_values=pixels,
                                             attention_mask=enc["attention_mask"], do_sample=False, num_beams=1,
                                             max_length=adapter.settings().max_length)
    return adapter.tokenizer.decode(out[0], skip_special_tokens=True).strip()


def test_detected_and_torch_loop_matches_generate(adapter):
    assert adapter.family == "blip-vqa" and set(adapter.components()) == set(COMPONENTS)
    torch_runners = {n: TorchRunner(c) for n, c in adapter.components().items()}
    result = adapter.evaluate(torch_runners)
    assert result.name == "answer-token-agreement" and result.value == 1.0 and result.extra["exact_match"] == 1.0
    assert len({tuple(r) for r in adapter.reference_tokens()}) > 1, "answers should depend on image/question"
    image = adapter.eval_images(3)[2]
    for question in ("what color is the shape?", "how many stars are there?"):
        assert adapter.answer(torch_runners, image, question) == _generate(adapter, image, question)


def test_bundle_answers_equal_generate_on_ort_and_openvino(bundle, adapter):
    manifest = read_manifest(bundle)
    assert manifest.family == "blip-vqa" and [a.component for a in manifest.artifacts] == list(COMPONENTS)
    assert manifest.parity["task"]["top1_agreement"] == 1.0
    assert manifest.metadata["task"] == "vqa" and manifest.metadata["questions"]
    assert manifest.metadata["preprocessing"]["source"] == "checkpoint"
    # the question length is a dynamic axis of the question encoder and of the cross keys/values
    qe = read_manifest(bundle / "question_encoder")
    assert [t.shape for t in qe.inputs if t.name == "input_ids"] == [["batch", "question"]]
    bundle_adapter = adapter_for_bundle(bundle)  # no weights
    image = adapter.eval_images(5)[4]
    expected = _generate(adapter, image, "is the shape large or small?")
    for backend, make in (("onnxruntime", load_runner), ("openvino", openvino_runner)):
        runners = {n: make(bundle / n) for n in COMPONENTS}
        for name in COMPONENTS:
            verify_runner(runners[name], load_reference(bundle / name), atol=1e-4, label=f"{backend}/{name}")
        result = bundle_adapter.evaluate(runners)
        assert result.value == 1.0 and result.extra["exact_match"] == 1.0, backend
        no_past = bundle_adapter.evaluate({k: v for k, v in runners.items() if k != "text_decoder_with_past"})
        assert no_past.predictions == result.predictions
        assert bundle_adapter.answer(runners, image, "is the shape large or small?") == expected, backend


def test_vqa_cli(bundle, adapter, tmp_path, cli, cli_subprocess):
    image = adapter.eval_images(3)[1]
    image.save(tmp_path / "shape.png")
    question = "what shape is in the picture?"
    done = cli("vqa", bundle, tmp_path / "shape.png", question, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["answer"] == _generate(adapter, image, question) and result["question"] == question
    plain = cli("vqa", bundle, tmp_path / "shape.png", question, "--backend", "openvino")
    assert plain.returncode == 2 and "lacks a openvino artifact" in plain.stderr  # not compiled for it
    plain = cli("vqa", bundle, tmp_path / "shape.png", question, "--backend", "onnxruntime")
    assert plain.returncode == 0 and plain.stdout.strip() == result["answer"]
    empty = cli("vqa", bundle, tmp_path / "shape.png", "  ")
    assert empty.returncode == 2 and empty.stderr.startswith("error: the question is empty")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not an image")
    bad = cli_subprocess("vqa", bundle, tmp_path / "broken.png", question)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert "broken.png: not a readable image" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_vqa_rejects_a_captioning_bundle(tmp_path, cli):
    from PIL import Image

    from mmdeploy.artifact import Manifest, write_manifest

    (tmp_path / "b").mkdir()
    write_manifest(tmp_path / "b", Manifest(kind="model", name="x", family="blip"))
    Image.new("RGB", (8, 8)).save(tmp_path / "i.png")
    done = cli("vqa", tmp_path / "b", tmp_path / "i.png", "what is it?")
    assert done.returncode == 2 and "not a BLIP question answering model bundle" in done.stderr


def test_calibration_feeds_for_every_component(bundle):
    adapter = adapter_for_bundle(bundle)
    for name in COMPONENTS:
        feeds = adapter.calibration_feeds(name, limit=3)
        assert feeds, name
        inputs = {t.name for t in read_manifest(bundle / name).inputs}
        assert all(set(f) == inputs for f in feeds), name
        assert all(np.isfinite(v).all() for f in feeds for v in f.values() if v.dtype.kind == "f")


def test_eval_vqa_on_a_user_file(bundle, adapter, tmp_path, cli):
    """`mmdeploy eval --task vqa` on a user's JSONL: the ONNX bundle's answers are PyTorch's
    generate() answers, and vqa_accuracy counts them against the references."""
    rows, expected = [], []
    for i, image in enumerate(adapter.eval_images(3)):
        image.save(tmp_path / f"img{i}.png")
        question = ["what color is the shape?", "how many shapes?", "what shape is it?"][i]
        expected.append(_generate(adapter, image, question))
        answer = expected[-1] if i < 2 else expected[-1] + " not"  # two right, one wrong
        rows.append(json.dumps({"image": f"img{i}.png", "question": question, "answer": answer}))
    (tmp_path / "vqa.jsonl").write_text("\n".join(rows) + "\n")
    done = cli("eval", bundle, "--data", tmp_path / "vqa.jsonl", "--task", "vqa", "--json")
    assert done.returncode == 0, done.stderr
    metric = json.loads(done.stdout)["results"][0]["metrics"]["vqa_accuracy"]
    assert metric["n"] == 3 and abs(metric["value"] - 2 / 3) < 1e-6, metric


def test_runtime_answers_without_toolchain(bundle, adapter, tmp_path):
    """mmdeploy.runtime with the toolchain unimportable: answers equal generate()'s, token for
    token, for every question whose text tokenizes back to the stored ids (the demo's id 3 is a
    special token that decoding drops); the runtime's ids are transformers' for every question."""
    from _no_toolchain import run_python

    reference = read_manifest(bundle).metadata["reference_tokens"]
    args, expected = [], []
    for i, ((image, question), ref) in enumerate(zip(adapter.eval_pairs(len(reference)), reference)):
        text = adapter.tokenizer.decode(question["input_ids"][0], skip_special_tokens=True)
        image.save(tmp_path / f"{i}.png")
        args += [tmp_path / f"{i}.png", text]
        same = adapter.tokenizer(text)["input_ids"] == question["input_ids"][0].tolist()
        expected.append((ref if same else None, adapter.tokenizer(text)["input_ids"]))
    code = ("import json, mmdeploy.runtime as rt\nm = rt.load(sys.argv[1]); a = sys.argv[2:]\n"
            "print(json.dumps({'tokens': [m.answer_tokens(a[i], a[i + 1]) for i in range(0, len(a), 2)], "
            "'ids': [m.tokenizer.ids(a[i + 1]) for i in range(0, len(a), 2)], "
            "'text': m.answer(a[0], a[1]), 'leaked': _leaked()}))")
    done = run_python(code, bundle, *args)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert got["leaked"] == [] and got["ids"] == [ids for _, ids in expected]
    compared = [(mine, ref) for mine, (ref, _) in zip(got["tokens"], expected) if ref is not None]
    assert len(compared) >= 4 and all(mine == ref for mine, ref in compared)
    assert got["text"] == adapter.decode(got["tokens"][0])
