"""Train ``tiny_clap``: a small ``transformers.ClapModel`` on the synthetic audio set.

    python -m mmdeploy.demo.train_clap --output mmdeploy/demo/tiny_clap [--steps 400]

The audio tower sees the checkpoint's own log-mel features (16 kHz, 1 s, 32 mels); the text
tower learns the class prompts under a few templates.  The loss is cross-entropy of each clip
against the nine class prompts (a random template per step), so zero-shot classification with
``the sound of <class>`` is what the model learns.  CPU only, deterministic for a seed.
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

import numpy as np

TEMPLATES = ["the sound of {}", "a {}", "{}", "the sound of a {}", "a {} sound", "sounds of {}"]


def build(folder: Path, seed: int = 0):
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel

    from mmdeploy.data import synthetic_audio as audio_data
    from mmdeploy.demo.tokenizer import build_tokenizer

    words = sorted(set(audio_data.vocabulary()) | {w for t in TEMPLATES for w in t.replace("{}", "").split()})
    tok = build_tokenizer(words, max_length=12)
    torch.manual_seed(seed)
    config = ClapConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=48, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=96, max_position_embeddings=16, pad_token_id=tok.pad_token_id,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                         hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
        audio_config=dict(spec_size=64, num_mel_bins=32, window_size=4, patch_size=4, patch_stride=(4, 4),
                          depths=[1, 1], num_attention_heads=[2, 4], patch_embeds_hidden_size=24,
                          hidden_size=48, num_hidden_layers=2, hidden_dropout_prob=0.0),
        projection_dim=32)
    extractor = ClapFeatureExtractor(feature_size=32, sampling_rate=audio_data.SAMPLE_RATE, hop_length=160,
                                     max_length_s=1, fft_window_size=512, frequency_max=8000,
                                     truncation="rand_trunc", padding="repeatpad")
    return ClapModel(config), tok, extractor


def train(output: Path, steps: int = 400, batch: int = 36, seed: int = 0, threads: int = 2,
          n_train: int | None = None) -> dict:
    import torch
    import torch.nn.functional as F

    from mmdeploy.data import synthetic_audio as audio_data

    torch.set_num_threads(threads)
    model, tok, extractor = build(output, seed)
    clips, labels = audio_data.make_split("train", n_train)
    feats = np.concatenate([extractor(clips[i:i + 200], sampling_rate=audio_data.SAMPLE_RATE,
                                      truncation="rand_trunc", padding="repeatpad",
                                      return_tensors="np")["input_features"] for i in range(0, len(clips), 200)])
    feats = torch.from_numpy(feats.astype(np.float32))
    labels_t = torch.tensor(labels)
    names = audio_data.CLASS_NAMES
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps, pct_start=0.1)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    start = time.time()
    for step in range(steps):
        idx = torch.randint(0, len(feats), (batch,), generator=gen)
        prompts = [rng.choice(TEMPLATES).format(n) for n in names]
        enc = tok(prompts, padding="max_length", max_length=12, truncation=True, return_tensors="pt")
        audio = model.get_audio_features(input_features=feats[idx]).pooler_output
        text = model.get_text_features(**enc).pooler_output
        logits = model.logit_scale_a.exp() * audio @ text.T
        loss = F.cross_entropy(logits, labels_t[idx]) + F.cross_entropy(
            model.logit_scale_t.exp() * text @ audio.T, _class_targets(labels_t[idx], len(names)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale_a.clamp_(0, 4.6)
            model.logit_scale_t.clamp_(0, 4.6)
        if step % 50 == 0 or step == steps - 1:
            acc = (logits.argmax(1) == labels_t[idx]).float().mean().item()
            print(f"step {step:4d} loss {loss.item():.3f} batch acc {acc:.2f} ({time.time() - start:.0f} s)",
                  flush=True)
    model.eval()
    output.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(output)
    tok.save_pretrained(output)
    extractor.save_pretrained(output)
    return {"seconds": round(time.time() - start, 1), "steps": steps}


def _class_targets(labels, n_classes: int):
    """For text→audio: each class prompt's target is a soft distribution over its clips."""
    import torch

    onehot = torch.nn.functional.one_hot(labels, n_classes).float().T  # [classes, batch]
    return onehot / onehot.sum(1, keepdim=True).clamp(min=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--output", type=Path, default=Path(__file__).resolve().parent / "tiny_clap")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    info = train(args.output, args.steps, seed=args.seed, threads=args.threads)

    from mmdeploy.backends.torch import TorchRunner
    from mmdeploy.models import resolve

    adapter = resolve(args.output)
    result = adapter.evaluate({n: TorchRunner(c) for n, c in adapter.components().items()})
    print(f"trained in {info['seconds']} s; zero-shot top-1 on {result.n} eval clips: {result.value:.1%}")


if __name__ == "__main__":
    main()
