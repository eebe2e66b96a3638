"""Task metrics, named and defined as LAION's CLIP_benchmark, open_clip and MTEB do.

* zero-shot classification: ``acc1``, ``acc5`` (top-k of the logits), ``mean_per_class_recall``
  (sklearn's balanced accuracy: mean over classes of recall);
* retrieval: scores are texts × images; ``image_retrieval_recall@k`` is the fraction of texts
  whose image is among the k best images, ``text_retrieval_recall@k`` the fraction of images with
  at least one of their captions among the k best texts (k = 1, 5, 10);
* text encoders: ``cosine_spearman`` (MTEB STS: Spearman correlation between the cosine of the
  two sentences' embeddings and the gold score) and ``recall@k`` (query → documents: the
  fraction of queries with one of their own documents among the k most similar);
* captioning: ``bleu4`` and ``cider`` from pycocoevalcap (the COCO caption evaluation code);
* VQA: ``vqa_accuracy`` = mean over questions of min(#reference answers equal to the prediction
  / 3, 1) after VQA answer normalisation; with one reference answer that is exact match.

Every metric is ``{"value", "n", "ci95": [low, high], "interval"}``, values as fractions
(BLEU/CIDEr raw), ``n`` the number of items the value is a mean over (texts, images, pairs...).
Intervals stay honest at 0 % and 100 %: a metric that is a fraction of hits (acc1, recall@k)
gets the Wilson score interval (``"interval": "wilson"``); any other a 95 % percentile bootstrap
over the items with a fixed seed (``"bootstrap"``), except that a sample whose items are all 0 or
all 1 gets Wilson too (a bootstrap would be zero-width there).

A metric that cannot fail on this set -- top-k or recall@k with k at least the number of
candidates -- is not a score: it is ``None`` and :func:`trivial_reason` says why.

Ties: ranks come from a stable descending sort, so among equal scores the candidate with the
lower index (first in the data set's order) ranks first.  CLIP_benchmark ranks with
``torch.topk``, whose order among ties is unspecified (on CPU it varies with the number of
candidates), so the two agree on tie-free data and may differ on exact ties only.
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


Z95 = 1.959963984540054


def wilson(hits: float, n: int, z: float = Z95) -> list[float] | None:
    """Wilson score interval of a proportion ``hits / n`` (never zero-width; None if n == 0).

    At 144/144 it is [0.974, 1.0] where a percentile bootstrap gives [1.0, 1.0]."""
    if n <= 0:
        return None
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [float(max(0.0, centre - half)), float(min(1.0, centre + half))]


def _binary(x: np.ndarray) -> bool:
    return bool(x.size) and bool(np.all((x == 0) | (x == 1)))


def mean_metric(per_sample) -> dict:
    """The mean of per-item values with n and an interval (Wilson for hits, else bootstrap)."""
    x = np.asarray(per_sample, dtype=np.float64)
    value = float(x.mean()) if x.size else float("nan")
    if _binary(x) or (x.size and np.ptp(x) == 0 and value in (0.0, 1.0)):
        return {"value": value, "n": int(x.size), "ci95": wilson(float(x.sum()), int(x.size)), "interval": "wilson"}
    return {"value": value, "n": int(x.size), "ci95": _mean_interval(x), "interval": "bootstrap"}


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


def trivial_reason(k: int, candidates: int, what: str) -> str | None:
    """Why top-k over ``candidates`` is no score (every item would count), or None."""
    return f"k={k} >= {candidates} {what}: every item would count" if k >= candidates else None


def _topk_metric(name: str, k: int, candidates: int, what: str, hits, omitted: dict | None):
    """The metric, or None (with the reason in ``omitted``) when k >= candidates."""
    reason = trivial_reason(k, candidates, what)
    if reason is None:
        return mean_metric(hits())
    if omitted is not None:
        omitted[name] = reason
    return None


def classification(logits: np.ndarray, labels, omitted: dict | None = None) -> dict:
    """``omitted``: filled with {metric: why it is None} (e.g. acc5 with 5 classes or fewer)."""
    labels = np.asarray(labels)
    predictions = np.asarray(logits).argmax(axis=1)
    classes = int(np.shape(logits)[1])
    out = {"acc1": mean_metric(topk_hits(logits, labels, 1))}
    out["acc5"] = _topk_metric("acc5", 5, classes, "classes", lambda: topk_hits(logits, labels, 5), omitted)
    value = balanced_accuracy(predictions, labels)
    record = {"value": value, "n": int(labels.size),
              "ci95": bootstrap(lambda i: balanced_accuracy(predictions[i], labels[i]), int(labels.size)),
              "interval": "bootstrap"}
    if value in (0.0, 1.0):  # every sample right (or wrong): the bootstrap is zero-width there
        record.update(ci95=wilson(value * labels.size, int(labels.size)), interval="wilson")
    out["mean_per_class_recall"] = record
    return out


# ----------------------------------------------------------------------- retrieval


def retrieval(scores: np.ndarray, caption_image, omitted: dict | None = None) -> dict:
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
        out[f"image_retrieval_recall@{k}"] = _topk_metric(
            f"image_retrieval_recall@{k}", k, n_images, "images",
            lambda: np.take_along_axis(positive, order_images[:, :k], axis=1).any(axis=1), omitted)
        out[f"text_retrieval_recall@{k}"] = _topk_metric(
            f"text_retrieval_recall@{k}", k, n_texts, "captions",
            lambda: np.take_along_axis(positive.T, order_texts[:, :k], axis=1).any(axis=1), omitted)
    return out


# ----------------------------------------------------------------------- text encoders


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties given their average rank (scipy's ``rankdata``)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, axis=-1, kind="stable")
    sorted_x = np.take_along_axis(x, order, axis=-1)
    ranks = np.empty_like(x)
    flat_sorted, flat_order, flat_ranks = (a.reshape(-1, x.shape[-1]) for a in (sorted_x, order, ranks))
    for row in range(flat_sorted.shape[0]):
        values = flat_sorted[row]
        starts = np.r_[0, np.flatnonzero(np.diff(values)) + 1]
        ends = np.r_[starts[1:], values.size]
        average = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
        flat_ranks[row, flat_order[row]] = np.repeat(average, ends - starts)
    return flat_ranks.reshape(x.shape)


def spearman(a, b) -> float:
    """Spearman's rho (Pearson correlation of average ranks), as scipy.stats.spearmanr."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(axis=-1, keepdims=True), rb - rb.mean(axis=-1, keepdims=True)
    denominator = np.sqrt((ra * ra).sum(axis=-1) * (rb * rb).sum(axis=-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (ra * rb).sum(axis=-1) / denominator


def cosine_spearman(similarity, gold) -> dict:
    """MTEB's STS main score: Spearman between the pairs' cosine similarities and gold scores;
    the interval a percentile bootstrap over the pairs."""
    similarity, gold = np.asarray(similarity, np.float64), np.asarray(gold, np.float64)
    n = int(similarity.size)
    value = float(spearman(similarity, gold)) if n >= 2 else float("nan")
    ci = None
    if n >= 3:
        rng = np.random.default_rng(SEED)
        idx = rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
        draws = spearman(similarity[idx], gold[idx])
        draws = draws[np.isfinite(draws)]  # a resample of constant gold scores has no correlation
        if draws.size:
            ci = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
    return {"value": value, "n": n, "ci95": ci, "interval": "bootstrap"}


def query_retrieval(scores: np.ndarray, positives, omitted: dict | None = None) -> dict:
    """``scores`` [n_queries, n_documents]; ``positives[q]`` the documents of query q.
    ``recall@k``: a query counts when one of its documents is among the k best (ties: lower
    document index first)."""
    scores = np.asarray(scores)
    n_queries, n_docs = scores.shape
    positive = np.zeros((n_queries, n_docs), dtype=bool)
    for q, docs in enumerate(positives):
        positive[q, list(docs)] = True
    order = np.argsort(-scores, axis=1, kind="stable")
    out = {}
    for k in RECALL_KS:
        out[f"recall@{k}"] = _topk_metric(f"recall@{k}", k, n_docs, "documents",
                                          lambda: np.take_along_axis(positive, order[:, :k], axis=1).any(axis=1),
                                          omitted)
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


def paired_drop(base, candidate, gold=None) -> dict:
    """The drop (base − candidate) of a metric measured on the same items by two models, with a
    paired 95 % interval: what the quantize guard judges a candidate by.

    ``base``/``candidate``: per-item values (hits 0/1 for acc1 and recall@k, per-question scores
    for VQA), or, with ``gold``, each item's similarity for ``cosine_spearman``.  Hits get
    Newcombe's interval for a difference of paired proportions (method 10: Wilson intervals of
    each side combined with the correlation of the pairs), honest when both sides are at 100 %;
    anything else a paired percentile bootstrap over the items (same resamples for both).
    Fractions (or correlation units), like the metrics."""
    a, b = np.asarray(base, np.float64), np.asarray(candidate, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired items differ in number: {a.shape} vs {b.shape}")
    n = int(a.size)
    if gold is not None:
        gold = np.asarray(gold, np.float64)
        drop = float(spearman(a, gold) - spearman(b, gold)) if n >= 2 else float("nan")
        ci = None
        if n >= 3:
            idx = np.random.default_rng(SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
            draws = spearman(a[idx], gold[idx]) - spearman(b[idx], gold[idx])
            draws = draws[np.isfinite(draws)]
            ci = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))] if draws.size else None
        return {"drop": drop, "n": n, "ci95": ci, "interval": "paired-bootstrap"}
    if n == 0:
        return {"drop": float("nan"), "n": 0, "ci95": None, "interval": None}
    drop = float(a.mean() - b.mean())
    if _binary(a) and _binary(b):
        return {"drop": drop, "n": n, "ci95": _newcombe_paired(a.astype(bool), b.astype(bool)), "interval": "newcombe"}
    if n < 2:
        return {"drop": drop, "n": n, "ci95": None, "interval": None}
    idx = np.random.default_rng(SEED).integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))
    draws = (a[idx] - b[idx]).mean(axis=1)
    return {"drop": drop, "n": n, "ci95": [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))],
            "interval": "paired-bootstrap"}


def _newcombe_paired(x: np.ndarray, y: np.ndarray) -> list[float]:
    """Newcombe (1998, Statist. Med. 17:2635) method 10: 95 % interval of P(x) − P(y) for paired
    binary outcomes."""
    n = x.size
    both, only_x = int(np.sum(x & y)), int(np.sum(x & ~y))
    only_y, neither = int(np.sum(~x & y)), int(np.sum(~x & ~y))
    p1, p2 = (both + only_x) / n, (both + only_y) / n
    l1, u1 = wilson(both + only_x, n)
    l2, u2 = wilson(both + only_y, n)
    # the correlation of the pairs, with Newcombe's continuity correction (as in Altman et al.,
    # "Statistics with confidence", 2000, p. 52)
    margins = (both + only_x) * (only_y + neither) * (both + only_y) * (only_x + neither)
    cross = both * neither - only_x * only_y
    cross = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = cross / np.sqrt(margins) if margins else 0.0
    d = p1 - p2
    lower = np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    upper = np.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return [float(max(-1.0, d - lower)), float(min(1.0, d + upper))]


def resolution(metric: dict) -> float:
    """The smallest change one sample makes, in points (100 / n)."""
    return 100.0 / max(int(metric.get("n") or 0), 1)


def half_width(metric: dict) -> float | None:
    ci = metric.get("ci95")
    return None if not ci else 100.0 * (ci[1] - ci[0]) / 2.0
