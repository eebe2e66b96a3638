"""Tiny CLAP / BLIP checkpoints and a minimal exporter for the modality tests.

The checkpoints are random (seeded) with a word-level tokenizer built offline; the exporter
writes a component artifact (model.onnx, reference.npz, manifest) the way ``convert`` does,
so runners come from ``mmdeploy.backends.load_runner``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdeploy.artifact import Manifest, TensorSpec, save_reference, write_manifest


def _tokenizer(words, max_length):
    from mmdeploy.demo.tokenizer import build_tokenizer

    return build_tokenizer(words, max_length=max_length)


def tiny_clap_checkpoint(folder: Path) -> Path:
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from mmdeploy.demo import audio_data

    tok = _tokenizer(audio_data.vocabulary(), 16)
    torch.manual_seed(0)
    config = ClapConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=24, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id),
        audio_config=dict(spec_size=64, num_mel_bins=32, window_size=4, patch_size=4, patch_stride=(4, 4),
                          depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16,
                          hidden_size=32, num_hidden_layers=2),
        projection_dim=16)
    ClapModel(config).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    ClapFeatureExtractor(feature_size=32, sampling_rate=16000, hop_length=160, max_length_s=1,
                         fft_window_size=512, frequency_max=8000, truncation="rand_trunc",
                         padding="repeatpad").save_pretrained(folder)
    return Path(folder)


CAPTION_WORDS = "a an the of photo picture red green blue circle square star on with small large".split()


def tiny_blip_checkpoint(folder: Path, max_length: int = 12) -> Path:
    import torch
    from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil

    tok = _tokenizer(CAPTION_WORDS, 24)
    torch.manual_seed(0)
    config = BlipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         sep_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    model = BlipForConditionalGeneration(config).eval()
    # wider weights than the default init so captions depend on the image and vary in length
    torch.manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.1)
    model.generation_config.max_length = max_length
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    BlipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)


def export_component(adapter, name: str, out: Path, opset: int = 17) -> Path:
    """torch.onnx.export one adapter component into a component artifact with reference cases."""
    import torch

    comp = adapter.components()[name]
    feeds = adapter.verification_feeds(name)
    out.mkdir(parents=True, exist_ok=True)
    args = tuple(torch.from_numpy(feeds[0][n]) for n in comp.input_names)
    with comp.export_context(), torch.no_grad():
        torch.onnx.export(comp.module, args, str(out / "model.onnx"), dynamo=False, opset_version=opset,
                          input_names=comp.input_names, output_names=comp.output_names,
                          dynamic_axes=comp.dynamic_axes)
    cases = []
    for f in feeds:
        with torch.no_grad():
            res = comp.module(*(torch.from_numpy(f[n]) for n in comp.input_names))
        res = res if isinstance(res, (tuple, list)) else (res,)
        cases.append((f, {n: r.numpy() for n, r in zip(comp.output_names, res)}))
    save_reference(out, cases)
    spec = lambda d: [TensorSpec(name=k, dtype=str(v.dtype), shape=list(v.shape)) for k, v in d.items()]  # noqa: E731
    write_manifest(out, Manifest(name=name, family=adapter.family, format="onnx", inputs=spec(cases[0][0]),
                                 outputs=spec(cases[0][1]), metadata={"model_file": "model.onnx"}))
    return out


def export_bundle(adapter, out: Path) -> Path:
    """A model bundle: each component exported, preprocess/ copied, family metadata."""
    import shutil

    from mmdeploy.artifact import ArtifactRef

    out.mkdir(parents=True, exist_ok=True)
    refs = []
    for name in adapter.components():
        export_component(adapter, name, out / name)
        refs.append(ArtifactRef(path=name, component=name, format="onnx"))
    (out / "preprocess").mkdir()
    for file in adapter.preprocess_files():
        shutil.copy(file, out / "preprocess" / file.name)
    write_manifest(out, Manifest(kind="model", name=out.name, family=adapter.family,
                                 metadata=adapter.metadata(), artifacts=refs))
    return out


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
