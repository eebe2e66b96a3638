"""mmdeploy.stages.prune and `mmdeploy prune`: checkpoints that convert, recovery, report, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mmdeploy.artifact import read_manifest
from mmdeploy.stages.prune import prune


@pytest.fixture
def clip_dir(tiny_clip_dir) -> Path:
    return tiny_clip_dir  # conftest's session checkpoint; prune never writes into its source


def _onnx_weight_shapes(path: Path) -> list[tuple[int, ...]]:
    import onnx

    model = onnx.load(str(path))
    return [tuple(t.dims) for t in model.graph.initializer]


@pytest.mark.slow
def test_heads_checkpoint_converts_with_smaller_graph(clip_dir, tmp_path):
    from mmdeploy.stages.convert import convert
    from mmdeploy.models import resolve

    out = tmp_path / "pruned"
    report = prune(clip_dir, out, "heads,mlp", 0.5, recover_steps=3, latency_runs=4, batch_size=8,
                   threads=1, eval_limit=4)
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json",
            "prune_report.json", "manifest.json"} <= {p.name for p in out.iterdir()}
    manifest = read_manifest(out)
    assert (manifest.kind, manifest.format, manifest.family) == ("model", "checkpoint", "clip")
    assert manifest.passes[0].name == "prune" and manifest.passes[0].params["method"] == "heads,mlp"
    assert json.loads((out / "prune_report.json").read_text())["structure"] == report["structure"]
    assert report["structure"]["vision"] == {"heads": [1, 1], "intermediate": [32, 32]}
    assert report["params"]["after"]["total"] < report["params"]["before"]["total"]
    assert all(f["after"] < f["before"] for f in report["flops"].values())
    assert report["size_bytes"]["after"] < report["size_bytes"]["before"]
    assert set(report["latency_ms"]) == {"vision", "text"} and report["latency_ms"]["vision"]["after"] > 0
    assert report["metric"]["name"] == "zero-shot-top1"

    # `mmdeploy convert` takes it like any checkpoint, and the exported graph is smaller
    assert resolve(out).family == "clip"
    bundle = convert(out, tmp_path / "bundle")
    shapes = _onnx_weight_shapes(tmp_path / "bundle" / "vision" / "model.onnx")
    original = convert(clip_dir, tmp_path / "orig")
    orig_shapes = _onnx_weight_shapes(tmp_path / "orig" / "vision" / "model.onnx")
    # out_proj was 32x32 (two 16-wide heads); one head is left: a 16x32 MatMul per layer
    assert shapes.count((16, 32)) == 2 and orig_shapes.count((16, 32)) == 0
    assert shapes.count((32, 16)) == 7 and orig_shapes.count((32, 16)) == 1  # q/k/v x2 + projection
    assert sum(map(np.prod, shapes)) < sum(map(np.prod, orig_shapes))
    assert bundle.family == original.family == "clip"

    # ... and the converted pruned bundle quantizes like any other (prune → convert → quantize)
    from mmdeploy.backends import load_runner
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    q = quantize(tmp_path / "bundle", tmp_path / "int8", QuantizeOptions(method="ort-dynamic", latency_runs=0,
                                                                       accuracy_aware=False), log=lambda *a: None)
    assert q.kind == "model" and {a.component for a in q.artifacts} == {"vision", "text"}
    runner = load_runner(tmp_path / "int8" / "vision")
    assert runner.run({"pixel_values": np.zeros((1, 3, 32, 32), np.float32)})["image_embeds"].shape == (1, 16)


def test_recovery_improves_the_pruned_model(clip_dir, tmp_path):
    kwargs = dict(components=["vision"], measure_latency=False, batch_size=16, calib_size=32, threads=1,
                  eval_limit=4)
    report = prune(clip_dir, tmp_path / "a", "mlp", 0.75, recover_steps=20, recover_lr=3e-3, **kwargs)
    cos = report["embedding_cosine"]["vision"]
    assert cos["after"]["mean"] > cos["after_prune"]["mean"]
    assert report["recovery_loss"]["last"] < report["recovery_loss"]["first"]
    assert report["structure"]["vision"]["intermediate"] == [16, 16]
    assert report["structure"]["text"]["intermediate"] == [64, 64]  # untouched tower


def test_magnitude_reports_sparsity_and_no_dense_speedup(clip_dir, tmp_path):
    report = prune(clip_dir, tmp_path / "m", "magnitude", 0.6, scope="global", measure_latency=False,
                   threads=1, eval_limit=4)
    assert abs(report["pruned"]["sparsity"] - 0.6) < 0.01
    assert report["pruned"]["compressed_bytes"]["after"] < report["pruned"]["compressed_bytes"]["before"]
    assert "no faster" in report["note"]
    assert report["params"]["after"] == report["params"]["before"]  # dense shapes are unchanged
    from safetensors.numpy import load_file

    weights = load_file(str(tmp_path / "m" / "model.safetensors"))
    fc1 = weights["vision_model.encoder.layers.0.mlp.fc1.weight"]
    assert 0.2 < float((fc1 == 0).mean()) < 1.0


def test_siglip_heads(tiny_siglip_dir, tmp_path):
    report = prune(tiny_siglip_dir, tmp_path / "out", "heads", 0.5, measure_latency=False, threads=1, eval_limit=4)
    assert report["structure"]["vision"]["heads"] == [1, 1]
    from mmdeploy.models import resolve

    model = resolve(tmp_path / "out").torch_model()  # reloads through the adapter
    assert model.vision_model.encoder.layers[0].self_attn.q_proj.out_features == 16


# --------------------------------------------------------------------------- the CLI


def _cli(args, capsys):
    from mmdeploy.cli import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    return exc.value.code, captured.out, captured.err


@pytest.mark.parametrize("extra, message", [
    (["--method", "heads", "--amount", "1.5"], "outside (0, 1)"),
    (["--method", "heads", "--amount", "0"], "outside (0, 1)"),
    (["--method", "channels", "--amount", "0.3"], "unknown pruning method 'channels'"),
    (["--method", "heads", "--amount", "0.3", "--components", "audio"], "this model has: vision, text"),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(clip_dir, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    code, _, err = _cli(["prune", str(clip_dir), "--output", str(out), *extra], capsys)
    assert code == 2
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and not any(tmp_path.glob(".out*"))


def test_cli_unsupported_family(tmp_path, capsys):
    from transformers import BertConfig, BertModel

    src = tmp_path / "bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=50)).save_pretrained(src)
    code, _, err = _cli(["prune", str(src), "--method", "heads", "--amount", "0.3", "--output",
                         str(tmp_path / "out")], capsys)
    assert code == 2 and "supported families: clip, siglip" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_json(clip_dir, tmp_path, capsys):
    code, out, _ = _cli(["prune", str(clip_dir), "--method", "mlp", "--amount", "0.5", "--no-latency",
                         "--components", "text", "--threads", "1", "--output", str(tmp_path / "o"), "--json"], capsys)
    assert code == 0
    report = json.loads(out)
    assert report["components"] == ["text"] and report["structure"]["text"]["intermediate"] == [32, 32]
    assert np.isfinite(report["embedding_cosine"]["text"]["after"]["mean"])


# --------------------------------------------------------------------------- the demo


@pytest.mark.slow
def test_demo_heads_mlp_with_recovery_keeps_zero_shot(tmp_path):
    report = prune("demo:tiny-clip", tmp_path / "demo", "heads,mlp", 0.3, recover_steps=150,
                   recover_lr=5e-4, measure_latency=False, batch_size=32, threads=1)
    metric = report["metric"]
    assert metric["name"] == "zero-shot-top1" and metric["n"] >= 100
    assert metric["after"] >= metric["after_prune"]
    # the target is <= 2 pp (measured -1.4 pp by benchmarks/prune_clip_b32.py --demo);
    # the test keeps a margin so a retrained demo model does not make it flaky
    assert metric["delta_pp"] >= -3.0
    assert report["flops"]["vision"]["reduction"] > 0.2


def test_cli_refuses_a_users_directory_before_any_work(clip_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, err = _cli(["prune", str(clip_dir), "--method", "mlp", "--amount", "0.3", "--output", str(out)], capsys)
    assert code == 2 and "not an mmdeploy artifact" in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_calib_folder_of_images_for_the_vision_tower(clip_dir, tmp_path):
    from PIL import Image

    calib = tmp_path / "images"
    calib.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        sub = calib / ("class_a" if i % 2 else "class_b") / "nested"  # an ImageFolder, files at any depth
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(sub / f"{i}.png")
    (calib / "class_a" / "empty.png").write_bytes(b"")  # skipped and counted, not the whole set
    report = prune(clip_dir, tmp_path / "out", "heads", 0.5, components=["vision"], calib=calib,
                   recover_steps=2, measure_latency=False, threads=1, eval_limit=4)
    assert report["data"] == {"vision": f"{calib} (skipped 1 unreadable file: first: "
                                        f"{calib / 'class_a' / 'empty.png'} (empty file))"}
    assert report["structure"]["vision"]["heads"] == [1, 1]
