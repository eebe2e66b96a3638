"""Task metrics, named and defined as LAION's CLIP_benchmark and open_clip do.

* zero-shot classification: ``acc1``, ``acc5`` (top-k of the logits; ``None`` with fewer than 5
  classes), ``mean_per_class_recall`` (sklearn's balanced accuracy: mean over classes of recall);
* retrieval: scores are texts × images; ``image_retrieval_recall@k`` is the fraction of texts
  whose image is among the k best images, ``text_retrieval_recall@k`` the fraction of images with
  at least one of their captions among the k best texts (k = 1, 5, 10);
* captioning: ``bleu4`` and ``cider`` from pycocoevalcap (the COCO caption evaluation code);
* VQA: ``vqa_accuracy`` = mean over questions of min(#reference answers equal to the prediction
  / 3, 1) after VQA answer normalisation; with one reference answer that is exact match.

Every metric is ``{"value", "n", "ci95": [low, high]}``: a 95 % percentile bootstrap over the
evaluation samples (fixed seed), values as fractions (BLEU/CIDEr raw).
"""

from __future__ import annotations

import re

import numpy as np

RECALL_KS = (1, 5, 10)
BOOTSTRAP_RESAMPLES = 1000
SEED = 0


def bootstrap(statistic, n: int, resamples: int = BOOTSTRAP_RESAMPLES):
    """95 % percentile bootstrap interval of ``statistic(indices)`` over n samples (None if n < 2)."""
    if n < 2:
        return None
    rng = np.random.default_rng(SEED)
    draws = np.array([statistic(idx) for idx in rng.integers(0, n, size=(resamples, n))], dtype=np.float64)
    return [float(np.percentile(draws, 2.5, axis=0)), float(np.percentile(draws, 97.5, axis=0))] \
        if draws.ndim == 1 else [np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)]


def mean_metric(per_sample) -> dict:
    x = np.asarray(per_sample, dtype=np.float64)
    return {"value": float(x.mean()) if x.size else float("nan"), "n": int(x.size),
            "ci95": _mean_interval(x)}


def _mean_interval(x: np.ndarray):
    """Percentile bootstrap of a mean, vectorised (the common case; same scheme as _interval)."""
    if x.size < 2:
        return None
    rng = np.random.default_rng(SEED)
    idx = rng.integers(0, x.size, size=(BOOTSTRAP_RESAMPLES, x.size))
    means = x[idx].mean(axis=1)
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


# ----------------------------------------------------------------------- classification


def topk_hits(logits: np.ndarray, labels, k: int) -> np.ndarray:
    logits = np.asarray(logits)
    topk = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return (topk == np.asarray(labels)[:, None]).any(axis=1)


def balanced_accuracy(predictions, labels) -> float:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    recalls = [np.mean(predictions[labels == c] == c) for c in np.unique(labels)]
    return float(np.mean(recalls))


def classification(logits: np.ndarray, labels) -> dict:
    labels = np.asarray(labels)
    predictions = np.asarray(logits).argmax(axis=1)
    out = {"acc1": mean_metric(topk_hits(logits, labels, 1))}
    out["acc5"] = mean_metric(topk_hits(logits, labels, 5)) if np.shape(logits)[1] >= 5 else None
    out["mean_per_class_recall"] = {
        "value": balanced_accuracy(predictions, labels), "n": int(labels.size),
        "ci95": bootstrap(lambda i: balanced_accuracy(predictions[i], labels[i]), int(labels.size))}
    return out


# ----------------------------------------------------------------------- retrieval


def retrieval(scores: np.ndarray, caption_image) -> dict:
    """``scores`` [n_texts, n_images]; ``caption_image[t]`` the image of text t."""
    scores = np.asarray(scores)
    caption_image = np.asarray(caption_image)
    n_texts, n_images = scores.shape
    positive = np.zeros((n_texts, n_images), dtype=bool)
    positive[np.arange(n_texts), caption_image] = True
    out = {}
    order_images = np.argsort(-scores, axis=1, kind="stable")  # per text
    order_texts = np.argsort(-scores.T, axis=1, kind="stable")  # per image
    for k in RECALL_KS:
        hits_i = np.take_along_axis(positive, order_images[:, :k], axis=1).any(axis=1)
        hits_t = np.take_along_axis(positive.T, order_texts[:, :k], axis=1).any(axis=1)
        out[f"image_retrieval_recall@{k}"] = mean_metric(hits_i)
        out[f"text_retrieval_recall@{k}"] = mean_metric(hits_t)
    return out


# ----------------------------------------------------------------------- captioning

_PUNCT = re.compile(r"[^\w\s]")


def caption_tokens(text: str) -> str:
    """Lower-case, punctuation removed: what COCO's PTB tokenizer leaves for BLEU/CIDEr."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def _bleu_cider(predictions: list[str], references: list[list[str]]) -> tuple[float, float]:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    res = {i: [caption_tokens(p) or "-"] for i, p in enumerate(predictions)}
    gts = {i: [caption_tokens(r) for r in refs] for i, refs in enumerate(references)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return float(bleu[3]), float(cider)


def captioning(predictions: list[str], references: list[list[str]]) -> dict:
    """Corpus BLEU-4 and CIDEr (pycocoevalcap); intervals from resampling the images."""
    bleu, cider = _bleu_cider(predictions, references)
    n = len(predictions)
    out = {"bleu4": {"value": bleu, "n": n, "ci95": None}, "cider": {"value": cider, "n": n, "ci95": None}}
    ci = bootstrap(lambda idx: _bleu_cider([predictions[i] for i in idx], [references[i] for i in idx]),
                   n, resamples=200)
    if ci is not None:
        for j, key in enumerate(("bleu4", "cider")):
            out[key]["ci95"] = [float(ci[0][j]), float(ci[1][j])]
    return out


# ----------------------------------------------------------------------- VQA

_ARTICLES = {"a", "an", "the"}
_NUMBERS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
            "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}


def normalize_answer(text: str) -> str:
    """VQA answer normalisation (lower case, punctuation, articles, number words)."""
    words = _PUNCT.sub(" ", text.lower().replace("'", "")).split()
    return " ".join(_NUMBERS.get(w, w) for w in words if w not in _ARTICLES)


def vqa_scores(predictions: list[str], answers: list[list[str]]) -> np.ndarray:
    scores = []
    for prediction, refs in zip(predictions, answers):
        p = normalize_answer(prediction)
        matches = sum(normalize_answer(r) == p for r in refs)
        scores.append(float(matches == len(refs) if len(refs) == 1 else min(matches / 3.0, 1.0)))
    return np.asarray(scores)


def vqa(predictions: list[str], answers: list[list[str]]) -> dict:
    return {"vqa_accuracy": mean_metric(vqa_scores(predictions, answers))}


# ----------------------------------------------------------------------- comparison


def agreement(a, b) -> float | None:
    """Fraction of samples where two models predicted the same thing."""
    if a is None or b is None or len(a) != len(b) or not len(a):
        return None
    return float(np.mean([x == y for x, y in zip(a, b)]))


def resolution(metric: dict) -> float:
    """The smallest change one sample makes, in points (100 / n)."""
    return 100.0 / max(int(metric.get("n") or 0), 1)


def half_width(metric: dict) -> float | None:
    ci = metric.get("ci95")
    return None if not ci else 100.0 * (ci[1] - ci[0]) / 2.0
