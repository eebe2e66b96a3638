"""Tests of the bundled ``demo:tiny-clip`` model, its data and tokenizer (fast, CPU, offline)."""

from __future__ import annotations

import hashlib
import json
import random

import numpy as np
import pytest

from mmdeploy.data import shapes as data
from mmdeploy.demo import DEMO_MODELS, demo_path
from mmdeploy.demo.evaluate import zero_shot_logits
from mmdeploy.demo.tokenizer import DEFAULT_WORDS, build_tokenizer, clip_text_ids, save_tokenizer

MODEL = demo_path("tiny-clip")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _digest(img) -> str:
    return hashlib.sha256(img.tobytes()).hexdigest()


# ---------------------------------------------------------------- registry


def test_demo_path():
    assert demo_path("tiny-clip") == DEMO_MODELS["tiny-clip"] == demo_path("demo:tiny-clip")
    assert MODEL.is_dir()
    with pytest.raises(KeyError):
        demo_path("no-such-model")


# ---------------------------------------------------------------- data


def test_eval_split_is_deterministic():
    a_imgs, a_labels = data.make_split("eval")
    b_imgs, b_labels = data.make_split("eval")
    assert len(a_imgs) == data.SPLIT_SIZES["eval"] == len(a_labels)
    assert a_labels == b_labels
    assert [_digest(i) for i in a_imgs] == [_digest(i) for i in b_imgs]
    assert all(i.size == (data.IMAGE_SIZE, data.IMAGE_SIZE) and i.mode == "RGB" for i in a_imgs)
    # balanced over all classes
    assert sorted(set(a_labels)) == list(range(len(data.CLASS_NAMES)))
    # a prefix does not depend on n
    c_imgs, c_labels = data.make_split("eval", 20)
    assert c_labels == a_labels[:20] and [_digest(i) for i in c_imgs] == [_digest(i) for i in a_imgs[:20]]


def test_splits_use_disjoint_seeds():
    assert len(set(data.SPLIT_SEEDS.values())) == len(data.SPLIT_SEEDS) == 3
    eval_digests = {_digest(i) for i in data.make_split("eval")[0]}
    train_digests = {_digest(i) for i in data.make_split("train", 3000)[0]}
    calib_digests = {_digest(i) for i in data.make_split("calib")[0]}
    assert len(eval_digests) == data.SPLIT_SIZES["eval"]  # no duplicates within eval
    assert not eval_digests & train_digests
    assert not calib_digests & (train_digests | eval_digests)
    with pytest.raises(ValueError):
        data.make_split("test")


def test_prompts_and_captions():
    prompts = data.class_prompts()
    assert len(prompts) == len(data.CLASS_NAMES) == len(set(prompts))
    assert prompts[0] == data.PROMPT_TEMPLATE.format(data.CLASS_NAMES[0])
    vocab = set(data.vocabulary())
    rng = random.Random(0)
    _, metas = data.generate("train", 200)
    for m in metas:
        cap = data.random_caption(m.label, rng, m)
        assert data.CLASS_NAMES[m.label] in cap.replace("small ", "").replace("large ", "")
        assert set(cap.split()) <= vocab
    assert all(set(p.split()) <= vocab for p in prompts)


# ---------------------------------------------------------------- tokenizer


def test_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    tok = build_tokenizer()
    save_tokenizer(tok, tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert loaded.get_vocab() == tok.get_vocab()
    assert (loaded.pad_token_id, loaded.bos_token_id, loaded.unk_token_id, loaded.eos_token_id) == (0, 1, 3, 4)
    assert loaded.eos_token_id != 2  # 2 would switch CLIP's pooling to the legacy argmax(input_ids)
    assert len(loaded) == 5 + len(set(DEFAULT_WORDS))

    text = "A photo of a RED circle, on the left."
    enc = loaded(text, padding="max_length", max_length=loaded.model_max_length, truncation=True)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert len(ids) == len(mask) == loaded.model_max_length == 16
    n = sum(mask)
    assert ids[0] == loaded.bos_token_id and ids[n - 1] == loaded.eos_token_id
    assert ids[n:] == [loaded.pad_token_id] * (16 - n)
    assert loaded.decode(ids, skip_special_tokens=True) == "a photo of a red circle , on the left ."
    assert loaded("zebra")["input_ids"] == [1, loaded.unk_token_id, 4]
    # truncation keeps the final eos
    long = loaded(" ".join(["red"] * 40), padding="max_length", max_length=16, truncation=True)["input_ids"]
    assert len(long) == 16 and long[-1] == loaded.eos_token_id


def test_tiny_random_clip_pools_at_eos():
    """The tokenizer can back tiny random checkpoints: CLIP pools at the first eos."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    tok = build_tokenizer()
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, **clip_text_ids(tok)),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(cfg).eval()
    enc = tok(["a photo of a cat", "dog"], padding="max_length", max_length=16, return_tensors="pt")
    with torch.no_grad():
        out = model.text_model(**enc)
        eos = (enc["input_ids"] == tok.eos_token_id).int().argmax(-1)
        assert eos.tolist() == [6, 2]
        torch.testing.assert_close(out.pooler_output, out.last_hidden_state[torch.arange(2), eos])
        # padding after eos does not change the pooled embedding (causal mask)
        unpadded = model.text_model(**tok(["dog"], return_tensors="pt")).pooler_output
        torch.testing.assert_close(unpadded[0], out.pooler_output[1], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- numpy helper


def test_zero_shot_logits():
    rng = np.random.default_rng(0)
    img, txt = rng.normal(size=(5, 8)), rng.normal(size=(3, 8))
    logits = zero_shot_logits(img, txt, np.log(10.0))
    ref = 10.0 * (img / np.linalg.norm(img, axis=1, keepdims=True)) @ (txt / np.linalg.norm(txt, axis=1, keepdims=True)).T
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(zero_shot_logits(img, txt, 10.0, -2.0, scale_is_log=False), ref - 2.0, rtol=1e-5, atol=1e-5)
    assert logits.shape == (5, 3) and logits.dtype == np.float32
    with pytest.raises(ValueError):
        zero_shot_logits(img, txt[:, :4], 0.0)


# ---------------------------------------------------------------- committed checkpoint


def test_checkpoint_files_and_size():
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "preprocessor_config.json", "eval_results.json"):
        assert (MODEL / name).is_file(), name
    weights = sum(p.stat().st_size for p in MODEL.glob("*.safetensors"))
    assert 0 < weights <= 10 * 1024 * 1024
    assert not list(MODEL.glob("*.bin"))
    results = json.loads((MODEL / "eval_results.json").read_text())
    assert results["zero_shot_top1"] >= 0.8 and results["seed"] == 0


def test_checkpoint_loads_offline_and_matches_model_logits():
    import torch

    from mmdeploy.demo.evaluate import _features, load

    model, tok, proc = load(MODEL)
    cfg = model.config
    assert cfg.vision_config.image_size == data.IMAGE_SIZE
    assert cfg.text_config.eos_token_id == tok.eos_token_id != 2
    assert cfg.text_config.max_position_embeddings == tok.model_max_length
    images, _ = data.make_split("calib", 4)
    big = images[0].resize((96, 80))  # a larger "photo" is resized + cropped
    assert tuple(proc(images=[big], return_tensors="pt")["pixel_values"].shape) == (1, 3, 32, 32)

    prompts = data.class_prompts()[:5]
    pix = proc(images=images, return_tensors="pt")["pixel_values"]
    enc = tok(prompts, padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=pix, **enc)
        img = _features(model.get_image_features(pixel_values=pix)).numpy()
        txt = _features(model.get_text_features(**enc)).numpy()
    np.testing.assert_allclose(
        zero_shot_logits(img, txt, model.logit_scale.item()), out.logits_per_image.numpy(), rtol=1e-4, atol=1e-4
    )


def test_checkpoint_zero_shot_accuracy():
    from mmdeploy.demo.evaluate import zero_shot_top1

    top1 = zero_shot_top1(MODEL)  # real evaluation on the held-out eval split
    assert top1 >= 0.8, top1
    recorded = json.loads((MODEL / "eval_results.json").read_text())["zero_shot_top1"]
    assert abs(top1 - recorded) < 0.01
