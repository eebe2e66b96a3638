"""Corpus of real-world inputs: checkpoints as people save them (issue 12).

Each case is a folder a user could plausibly bring — ``pytorch_model.bin``, sharded weights, a
missing shard, fp16/bf16 weights, a ``save_pretrained()`` of the model alone, a tokenizer config
without its tokenizer — built here from tiny configs.  Every case either works or ends with one
line and exit code 2; none prints ``internal error``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mmdeploy.artifact import read_manifest
from builders import tiny_blip_checkpoint, tiny_clap_checkpoint

WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def one_line_error(done, *needles: str, code: int = 2) -> str:
    """The CLI failed with ``code`` and a single ``error:`` line mentioning every needle."""
    err = done.stderr.strip()
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "internal error" not in err and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def ok(done):
    assert done.returncode == 0, done.stderr[-3000:]
    assert "internal error" not in done.stderr
    return done


def bare_copy(src: Path, dst: Path) -> Path:
    """What a training script leaves: ``model.save_pretrained()`` alone (config + weights)."""
    dst.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", *WEIGHTS):
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    for shard in src.glob("model-*.safetensors"):
        shutil.copy2(shard, dst / shard.name)
    return dst


def tiny_bert(folder: Path, dtype: str | None = None, shard: str | None = None, pickle: bool = False,
              tokenizer: bool = True) -> Path:
    import torch
    from transformers import BertConfig, BertModel

    from mmdeploy.demo.tokenizer import build_tokenizer

    tok = build_tokenizer(max_length=32)
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=64, max_position_embeddings=32, pad_token_id=0)).eval()
    if dtype:
        model = model.to(getattr(torch, dtype))
    kwargs = {"max_shard_size": shard} if shard and not pickle else {}
    model.save_pretrained(folder, **kwargs)
    if pickle:
        _as_pickles(Path(folder), shards=2 if shard else 1)
    if tokenizer:
        tok.save_pretrained(folder)
    return Path(folder)


def _as_pickles(folder: Path, shards: int) -> None:
    """Replace model.safetensors by ``torch.save`` state dicts, as older transformers wrote them:
    ``pytorch_model.bin``, or shards ``pytorch_model-0000i-of-0000n.bin`` with an index."""
    import torch
    from safetensors.torch import load_file

    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return
    keys = sorted(state)
    weight_map = {}
    for i in range(shards):
        name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
        part = keys[i::shards]
        torch.save({k: state[k] for k in part}, folder / name)
        weight_map.update({k: name for k in part})
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def tiny_vit(folder: Path) -> Path:
    """A ViT encoder saved without its image processor (config + weights only)."""
    import torch
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                       intermediate_size=64)).eval().save_pretrained(folder)
    return Path(folder)


@pytest.fixture(scope="module")
def bert(tmp_path_factory) -> Path:
    return tiny_bert(tmp_path_factory.mktemp("corpus") / "bert")


# ---- weights in every form ------------------------------------------------------------------

def test_pytorch_model_bin_loads_with_weights_only(tmp_path, cli):
    src = tiny_bert(tmp_path / "bin", pickle=True)
    assert (src / "pytorch_model.bin").is_file() and not (src / "model.safetensors").exists()
    ok(cli("convert", src, "--output", tmp_path / "out"))
    assert read_manifest(tmp_path / "out" / "encoder").parity["passed"]


def test_sharded_safetensors_and_a_missing_shard(tmp_path, cli):
    src = tiny_bert(tmp_path / "sharded", shard="20KB")
    shards = sorted(src.glob("model-*.safetensors"))
    assert len(shards) > 1 and (src / "model.safetensors.index.json").is_file()
    ok(cli("convert", src, "--output", tmp_path / "out"))

    broken = tmp_path / "broken"
    shutil.copytree(src, broken)
    (broken / shards[1].name).unlink()
    one_line_error(cli("convert", broken, "--output", tmp_path / "out2"), shards[1].name, "missing")
    assert not (tmp_path / "out2").exists()


def test_sharded_pytorch_bin_and_a_missing_shard(tmp_path, cli):
    src = tiny_bert(tmp_path / "binshards", shard="20KB", pickle=True)
    shards = sorted(src.glob("pytorch_model-*.bin"))
    assert len(shards) > 1 and (src / "pytorch_model.bin.index.json").is_file()
    ok(cli("convert", src, "--output", tmp_path / "out"))
    (src / shards[0].name).unlink()
    one_line_error(cli("convert", src, "--output", tmp_path / "out2"), shards[0].name)


def test_corrupt_shard_index_is_one_line(tmp_path, cli):
    src = tiny_bert(tmp_path / "sharded", shard="20KB")
    (src / "model.safetensors.index.json").write_text("{not json")
    one_line_error(cli("convert", src, "--output", tmp_path / "out"), "model.safetensors.index.json")


# ---- fp16 / bf16 weights ----------------------------------------------------------------------

def _initializer_dtypes(path: Path) -> set[str]:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path))
    return {TensorProto.DataType.Name(t.data_type) for t in model.graph.initializer if len(t.dims) >= 2}


@pytest.mark.parametrize("saved", ["float16", "bfloat16"])
def test_half_precision_weights_export_fp32_by_default(tmp_path, cli, saved):
    src = tiny_bert(tmp_path / saved, dtype=saved)
    done = ok(cli("convert", src, "--output", tmp_path / "out"))
    assert f"weights saved in {saved}: exported in float32" in done.stderr
    comp = read_manifest(tmp_path / "out" / "encoder")
    assert comp.precision == "fp32" and comp.metadata["saved_dtype"] == saved
    assert {t.dtype for t in comp.outputs} == {"float32"} and _initializer_dtypes(tmp_path / "out/encoder/model.onnx") == {"FLOAT"}
    assert comp.parity["passed"] and comp.parity["atol"] == 1e-4
    assert read_manifest(tmp_path / "out").metadata["dtype"] == {"saved": saved, "weights": "fp32"}

    keep = "fp16" if saved == "float16" else "bf16"
    ok(cli("convert", src, "--output", tmp_path / "kept", "--dtype", keep))
    comp = read_manifest(tmp_path / "kept" / "encoder")
    assert comp.precision == keep and comp.metadata["weights_dtype"] == saved
    assert comp.metadata["compute_dtype"] == "float32" and {t.dtype for t in comp.outputs} == {"float32"}
    assert _initializer_dtypes(tmp_path / "kept/encoder/model.onnx") == {"FLOAT16" if keep == "fp16" else "BFLOAT16"}
    # the saved weights round-trip exactly: parity holds at the fp32 tolerance
    assert comp.parity["atol"] == 1e-4 and comp.parity["passed"]
    size = lambda d: (tmp_path / d / "encoder" / "model.onnx").stat().st_size  # noqa: E731
    assert size("kept") < 0.7 * size("out")


def test_fp16_checkpoint_quantizes(tmp_path, cli):
    src = tiny_bert(tmp_path / "half", dtype="float16")
    ok(cli("convert", src, "--output", tmp_path / "out"))
    ok(cli("quantize", tmp_path / "out", "--int8", "--method", "ort-static", "--output", tmp_path / "q",
           "--latency-runs", "0"))
    assert read_manifest(tmp_path / "q" / "encoder").precision == "int8"


def test_bad_dtype_is_one_line(bert, tmp_path, cli):
    one_line_error(cli("convert", bert, "--output", tmp_path / "out", "--dtype", "int4"), "--dtype")


def test_target_checks_honour_atol(bert, tmp_path, cli):
    ok(cli("convert", bert, "--output", tmp_path / "out", "--target", "openvino", "--atol", "0.003"))
    bundle = read_manifest(tmp_path / "out")
    ov = [a for a in bundle.artifacts if a.format == "openvino" and a.precision == "fp32"]
    assert ov and read_manifest(tmp_path / "out" / ov[0].path).parity["atol"] == 0.003


# ---- a checkpoint without its tokenizer or processor ------------------------------------------

def test_tokenizer_config_without_tokenizer_json(bert, tmp_path, cli):
    src = tmp_path / "notok"
    shutil.copytree(bert, src)
    (src / "tokenizer.json").unlink()
    assert (src / "tokenizer_config.json").is_file()
    # export never needs it: convert works and says so in the manifest
    ok(cli("convert", src, "--output", tmp_path / "out"))
    prep = read_manifest(tmp_path / "out").metadata["preprocessing"]
    assert prep["parts"]["tokenizer"] == "none" and "tokenizer.json" in prep["notes"][0]
    # calibrating on the user's sentences really needs it: one line naming the missing file
    captions = tmp_path / "captions.txt"
    captions.write_text("a red circle\na blue square\n")
    one_line_error(cli("quantize", tmp_path / "out", "--calib", captions, "--output", tmp_path / "q"),
                   "tokenizer.json")
    # --processor DIR supplies it
    ok(cli("quantize", tmp_path / "out", "--calib", captions, "--output", tmp_path / "q", "--processor", bert,
           "--latency-runs", "0"))


def test_text_encoder_without_tokenizer_calibrates_on_vocabulary_ids(tmp_path, cli):
    src = tiny_bert(tmp_path / "bare", tokenizer=False)
    done = ok(cli("convert", src, "--output", tmp_path / "out"))
    assert "preprocessing (none): no tokenizer" in done.stderr
    q = ok(cli("quantize", tmp_path / "out", "--output", tmp_path / "q", "--latency-runs", "0",
               "--method", "ort-static"))
    assert read_manifest(tmp_path / "q" / "encoder").precision == "int8", q.stderr


def test_vision_encoder_without_image_processor(tmp_path, cli):
    src = tiny_vit(tmp_path / "vit")
    done = ok(cli("convert", src, "--output", tmp_path / "out"))
    lines = [line for line in done.stderr.splitlines() if "preprocessing" in line]
    assert len(lines) == 1 and "derived from config.json" in lines[0] and "32x32" in lines[0]
    meta = read_manifest(tmp_path / "out").metadata["preprocessing"]
    assert meta["source"] == "derived" and (tmp_path / "out" / "preprocess" / "preprocessor_config.json").is_file()
    saved = json.loads((tmp_path / "out" / "preprocess" / "preprocessor_config.json").read_text())
    assert saved["image_mean"] == [0.5, 0.5, 0.5] and saved["size"] == {"height": 32, "width": 32}
    ok(cli("quantize", tmp_path / "out", "--output", tmp_path / "q", "--latency-runs", "0"))


def test_processor_option_must_be_a_processor_folder(bert, tmp_path, cli):
    one_line_error(cli("convert", bert, "--output", tmp_path / "o", "--processor", tmp_path / "nowhere"),
                   "--processor", "not a folder")
    (tmp_path / "empty").mkdir()
    one_line_error(cli("convert", bert, "--output", tmp_path / "o", "--processor", tmp_path / "empty"),
                   "no tokenizer or processor files")


@pytest.fixture(scope="module")
def blip_full(tmp_path_factory) -> Path:
    return tiny_blip_checkpoint(tmp_path_factory.mktemp("corpus-blip") / "full")


def test_blip_saved_without_processor_or_tokenizer(blip_full, tmp_path, cli):
    src = bare_copy(blip_full, tmp_path / "bare")
    done = ok(cli("convert", src, "--output", tmp_path / "out"))
    lines = [line for line in done.stderr.splitlines() if "preprocessing" in line]
    assert len(lines) == 1 and "BlipImageProcessor, 32x32" in lines[0] and "no tokenizer" in lines[0]
    bundle = read_manifest(tmp_path / "out")
    assert bundle.metadata["preprocessing"]["source"] == "derived"
    assert bundle.parity["task"]["top1_agreement"] == 1.0  # token agreement needs no tokenizer
    # the derived processor equals the one the checkpoint was saved with (same size, BLIP mean/std)
    from mmdeploy.models import adapter_for_bundle, resolve

    image = resolve(blip_full).eval_images(2)[1]
    np.testing.assert_allclose(adapter_for_bundle(tmp_path / "out").pixel_values([image])["pixel_values"],
                               resolve(blip_full).pixel_values([image])["pixel_values"], atol=1e-6)
    # decoding a caption really needs the tokenizer
    image.save(tmp_path / "img.png")
    one_line_error(cli("caption", tmp_path / "out", tmp_path / "img.png"), "no tokenizer", "--processor")
    # --processor DIR at convert time: taken from there, recorded so, and caption works
    done = ok(cli("convert", src, "--output", tmp_path / "out2", "--processor", blip_full))
    assert read_manifest(tmp_path / "out2").metadata["preprocessing"]["source"] == "processor-dir"
    assert (tmp_path / "out2" / "preprocess" / "tokenizer.json").is_file()
    ok(cli("caption", tmp_path / "out2", tmp_path / "img.png"))


def test_clap_saved_without_feature_extractor_or_tokenizer(tmp_path, cli):
    full = tiny_clap_checkpoint(tmp_path / "full")
    src = bare_copy(full, tmp_path / "bare")
    done = ok(cli("convert", src, "--output", tmp_path / "out"))
    lines = [line for line in done.stderr.splitlines() if "preprocessing" in line]
    assert len(lines) == 1 and "CLAP feature extractor derived from config.json (32 mels" in lines[0]
    bundle = read_manifest(tmp_path / "out")
    assert bundle.metadata["preprocessing"]["parts"] == {"feature_extractor": "derived", "tokenizer": "none"}
    assert "task" not in bundle.parity  # no prompts without a tokenizer: the zero-shot check is skipped
    ok(cli("quantize", tmp_path / "out", "--output", tmp_path / "q", "--latency-runs", "0"))
    ok(cli("convert", src, "--output", tmp_path / "out2", "--processor", full))
    bundle = read_manifest(tmp_path / "out2")
    assert bundle.metadata["preprocessing"]["source"] == "processor-dir" and bundle.parity["task"]["top1_agreement"] == 1.0


def test_derived_processor_leaves_nothing_in_tmpdir(tmp_path):
    """A checkpoint without its processor: the derived one is saved into the bundle, and the
    folder it was saved through is gone when the command ends (it used to stay in $TMPDIR)."""
    import os
    import subprocess
    import sys

    src = tiny_vit(tmp_path / "vit")
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    done = subprocess.run([sys.executable, "-m", "mmdeploy", "convert", str(src), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmpdir)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "out" / "preprocess" / "preprocessor_config.json").is_file()
    assert not [p.name for p in tmpdir.iterdir() if p.name.startswith("mmdeploy-derived-")]
