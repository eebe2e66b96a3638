"""mmdeploy.passes.prune: the structure really shrinks, reloads, and importance picks weak parts."""

from __future__ import annotations

import pytest
import torch

from mmdeploy.errors import InputError, UnsupportedError
from mmdeploy.passes import prune as P


def tiny_clip(heads=4, seed=0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    cfg = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=heads,
                         vocab_size=100, max_position_embeddings=16, bos_token_id=0, eos_token_id=2, pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=heads,
                           image_size=32, patch_size=8),
        projection_dim=16)
    return CLIPModel(cfg).eval()


def calib(n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (n, 16), generator=g)
    return {"vision": [{"pixel_values": torch.randn(n, 3, 32, 32, generator=g)}],
            "text": [{"input_ids": ids, "attention_mask": torch.ones_like(ids)}]}


def test_heads_shrink_projections_params_and_flops():
    model, data = tiny_clip(), calib()
    params, flops = P.count_params(model), P.count_flops(model, "vision", {"pixel_values": data["vision"][0]["pixel_values"][:1]})
    report = P.prune_structured(model, "heads", 0.3, data, ["vision"])
    attn = model.vision_model.encoder.layers[0].self_attn
    assert attn.q_proj.weight.shape == (24, 32) and attn.out_proj.weight.shape == (32, 24)
    assert [len(r) for r in report["vision"]["removed_heads"]] == [1, 1]
    assert model.text_model.encoder.layers[0].self_attn.q_proj.weight.shape == (32, 32)  # text untouched
    assert P.count_params(model)["vision"] < params["vision"]
    assert P.count_params(model)["text"] == params["text"]
    assert P.count_flops(model, "vision", {"pixel_values": data["vision"][0]["pixel_values"][:1]}) < flops
    assert P.structure(model)["vision"]["heads"] == [3, 3]
    assert model.config.mmdeploy_pruning == {"vision": {"heads": [3, 3], "intermediate": [64, 64]}}
    out = P._run_tower(model, "vision", data["vision"][0])
    assert out.shape == (8, 16) and torch.isfinite(out).all()


def test_floor_of_one_head_per_layer():
    model = tiny_clip(heads=2)
    P.prune_structured(model, "heads", 0.99, calib(), ["text"])
    assert P.structure(model)["text"]["heads"] == [1, 1]


def test_head_importance_removes_the_dead_head():
    model, data = tiny_clip(), calib()
    for layer in model.vision_model.encoder.layers:  # head 2 contributes nothing to out_proj
        with torch.no_grad():
            layer.self_attn.out_proj.weight[:, 16:24] = 0
    ref = P._run_tower(model, "vision", data["vision"][0])
    report = P.prune_structured(model, "heads", 0.25, data, ["vision"])
    assert report["vision"]["removed_heads"] == [[2], [2]]
    # removing a head that contributed nothing leaves the outputs unchanged
    torch.testing.assert_close(P._run_tower(model, "vision", data["vision"][0]), ref, atol=1e-5, rtol=1e-4)


def test_mlp_channels_by_importance_and_plain_reload(tmp_path):
    from transformers import CLIPModel

    model, data = tiny_clip(), calib()
    for layer in model.text_model.encoder.layers:  # channels 0..31 are dead: fc2 ignores them
        with torch.no_grad():
            layer.mlp.fc2.weight[:, :32] = 0
    ref = P._run_tower(model, "text", data["text"][0])
    P.prune_structured(model, "mlp", 0.5, data, ["text"])
    fc1 = model.text_model.encoder.layers[1].mlp.fc1
    assert fc1.weight.shape == (32, 32) and model.text_model.encoder.layers[1].mlp.fc2.weight.shape == (32, 32)
    torch.testing.assert_close(P._run_tower(model, "text", data["text"][0]), ref, atol=1e-5, rtol=1e-4)
    assert model.config.text_config.intermediate_size == 32
    assert not hasattr(model.config, P.STRUCTURE_KEY)  # uniform: expressible natively
    model.save_pretrained(tmp_path)
    again = CLIPModel.from_pretrained(tmp_path).eval()  # plain transformers loads it
    torch.testing.assert_close(P._run_tower(again, "text", data["text"][0]), ref, atol=1e-5, rtol=1e-4)


def test_pruned_heads_reload_with_load_pretrained(tmp_path):
    model, data = tiny_clip(), calib()
    P.prune_structured(model, "heads", 0.5, data)
    P.prune_structured(model, "mlp", 0.25, data)
    want = {c: P._run_tower(model, c, data[c][0]) for c in ("vision", "text")}
    model.save_pretrained(tmp_path)
    again = P.load_pretrained(tmp_path)
    assert P.structure(again) == P.structure(model)
    for c in want:
        torch.testing.assert_close(P._run_tower(again, c, data[c][0]), want[c], atol=1e-5, rtol=1e-4)


def test_magnitude_per_layer_and_global():
    model = tiny_clip()
    targets = P.prune_magnitude(model, 0.5, "per-layer", ["vision"])
    report = P.finalize_magnitude(targets)
    assert all(abs(v - 0.5) < 0.01 for v in report["per_layer"].values())
    assert "no faster" in report["note"]
    assert not any(n.endswith("weight_orig") for n, _ in model.named_parameters())  # masks made permanent
    model = tiny_clip()
    before = P.compressed_size(model)
    report = P.finalize_magnitude(P.prune_magnitude(model, 0.7, "global"))
    assert abs(report["sparsity"] - 0.7) < 0.01
    assert len(set(report["per_layer"].values())) > 1  # global: layers differ
    assert P.compressed_size(model) < before


def test_siglip_heads():
    from transformers import SiglipConfig, SiglipModel

    torch.manual_seed(0)
    model = SiglipModel(SiglipConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=100, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           image_size=32, patch_size=8))).eval()
    data = {"vision": [{"pixel_values": torch.randn(2, 3, 32, 32)}], "text": [{"input_ids": torch.randint(0, 100, (2, 16))}]}
    P.prune_structured(model, "heads", 0.5, data)
    assert P.structure(model)["vision"]["heads"] == [2, 2]
    assert P._run_tower(model, "text", data["text"][0]).shape[0] == 2


def test_unsupported_model_and_bad_options():
    from transformers import BertConfig, BertModel

    bert = BertModel(BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32))
    with pytest.raises(UnsupportedError) as exc:
        P.towers(bert)
    assert "supported: clip, siglip" in exc.value.one_line()
    with pytest.raises(InputError) as exc:
        P.towers(tiny_clip(), ["audio"])
    assert "this model has: vision, text" in exc.value.one_line()
    with pytest.raises(InputError, match="outside"):
        P.check_amount(1.0)
    with pytest.raises(InputError) as exc:
        P.check_method("random")
    assert "heads, mlp, magnitude" in exc.value.one_line()
    with pytest.raises(ValueError):
        P.PruneConfig(method="heads", amount=0)
