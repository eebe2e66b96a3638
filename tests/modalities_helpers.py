"""Tiny CLAP / BLIP checkpoints and a minimal exporter for the modality tests.

The checkpoints are random (seeded) with a word-level tokenizer built offline; bundles come
from the real ``convert`` pipeline, runners from ``mmdeploy.backends.load_runner``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np



def _tokenizer(words, max_length):
    from mmdeploy.demo.tokenizer import build_tokenizer

    return build_tokenizer(words, max_length=max_length)


def tiny_clap_checkpoint(folder: Path) -> Path:
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from mmdeploy.data import synthetic_audio as audio_data

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


def convert_bundle(checkpoint: Path, out: Path) -> Path:
    """The real convert pipeline (export, onnxsim, verification, task parity) into a bundle."""
    from mmdeploy.stages.convert import convert

    convert(checkpoint, out)
    return out


def max_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


class OpenVINORunner:
    """OpenVINO straight from an ONNX component artifact (until the openvino backend lands)."""

    name = "openvino"

    def __init__(self, artifact_dir: Path):
        import openvino as ov

        from mmdeploy.artifact import read_manifest

        manifest = read_manifest(artifact_dir)
        self.compiled = ov.Core().compile_model(str(Path(artifact_dir) / manifest.metadata["model_file"]), "CPU",
                                               {"INFERENCE_PRECISION_HINT": "f32"})
        self.input_names = [i.get_any_name() for i in self.compiled.inputs]
        self.output_names = [o.get_any_name() for o in self.compiled.outputs]

    def run(self, feeds):
        result = self.compiled({n: np.ascontiguousarray(feeds[n]) for n in self.input_names})
        return {o.get_any_name(): np.asarray(v) for o, v in result.items()}


def openvino_runner(artifact_dir: Path):
    """The backends' OpenVINO runner when it exists, else :class:`OpenVINORunner`."""
    try:
        from mmdeploy.backends import get_backend

        backend = get_backend("openvino")
    except ImportError:
        return OpenVINORunner(artifact_dir)
    ok, _ = backend.available()
    if not ok:
        return OpenVINORunner(artifact_dir)
    try:
        return backend.load(Path(artifact_dir))  # loads ONNX directly if the backend supports it
    except Exception:  # noqa: BLE001 - the backend may want a compiled IR artifact
        return OpenVINORunner(artifact_dir)


VQA_WORDS = CAPTION_WORDS + "what shape color is in how many are there large or small yes no one two ?".split()


def tiny_blip_vqa_checkpoint(folder: Path, max_length: int = 8) -> Path:
    """A tiny random ``BlipForQuestionAnswering`` saved like a real one (weights, tokenizer, processor)."""
    import torch
    from transformers import BlipConfig, BlipForQuestionAnswering, BlipImageProcessorPil

    tok = _tokenizer(VQA_WORDS, 24)
    torch.manual_seed(0)
    config = BlipConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         sep_token_id=tok.eos_token_id),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    model = BlipForQuestionAnswering(config).eval()
    torch.manual_seed(1)  # wider weights so answers depend on image and question and vary in length
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() >= 2:
                param.normal_(0, 0.1)
    model.generation_config.max_length = max_length
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    BlipImageProcessorPil(size={"height": 32, "width": 32}).save_pretrained(folder)
    return Path(folder)
