"""mmdeploy.data.metrics: intervals honest at 0 and 100 %, trivial top-k omitted, the tie rule,
MTEB's cosine_spearman, query -> document recall@k, the paired interval of a drop."""

from __future__ import annotations

import numpy as np
import pytest

from mmdeploy.data import metrics as M


def test_wilson_at_100_and_0_percent_is_not_zero_width():
    """n=144 all right: [97.4, 100] (a percentile bootstrap gave [100, 100])."""
    top = M.mean_metric([1] * 144)
    assert top["value"] == 1.0 and top["interval"] == "wilson"
    assert top["ci95"][0] == pytest.approx(0.9740, abs=1e-4) and top["ci95"][1] == 1.0
    bottom = M.mean_metric([0] * 144)
    assert bottom["ci95"][0] == 0.0 and bottom["ci95"][1] == pytest.approx(1 - 0.9740, abs=1e-4)
    # the textbook value: 8 of 10 -> [0.490, 0.943]
    assert M.wilson(8, 10) == pytest.approx([0.4902, 0.9433], abs=1e-4)
    # per-class recall all right: Wilson too (its bootstrap would be zero-width)
    logits = np.eye(4)[[0, 1, 2, 3] * 5]
    out = M.classification(logits, [0, 1, 2, 3] * 5)
    assert out["mean_per_class_recall"]["ci95"][0] < 1.0 and out["mean_per_class_recall"]["interval"] == "wilson"


def test_non_binary_items_get_a_bootstrap():
    m = M.mean_metric([1.0, 2 / 3, 0.0, 1.0, 1 / 3] * 4)
    assert m["interval"] == "bootstrap" and m["ci95"][0] < m["value"] < m["ci95"][1]


def test_topk_is_omitted_with_its_reason_when_k_reaches_the_candidates():
    logits = np.random.default_rng(0).standard_normal((12, 5))
    labels = np.arange(12) % 5
    omitted: dict = {}
    out = M.classification(logits, labels, omitted)
    assert out["acc5"] is None and omitted == {"acc5": "k=5 >= 5 classes: every item would count"}
    assert M.classification(np.c_[logits, logits[:, :1]], labels)["acc5"] is not None  # 6 classes
    omitted = {}
    out = M.query_retrieval(np.eye(6), [[i] for i in range(6)], omitted)
    assert out["recall@1"]["value"] == 1.0 and out["recall@5"]["n"] == 6
    assert out["recall@10"] is None and "documents" in omitted["recall@10"]


def test_ties_rank_in_data_set_order():
    """Equal scores: the lower index ranks first (stable sort), for every metric alike."""
    scores = np.array([[0.5, 0.5, 0.1], [0.5, 0.5, 0.1], [0.2, 0.2, 0.2]] + [[0, 0, 1.0]] * 0)
    # text 0 -> image 0 (tie with image 1: 0 first): hit; text 1 -> image 1 ranked 2nd: miss at k=1
    out = M.retrieval(scores, [0, 1, 2])
    assert out["image_retrieval_recall@1"]["value"] == pytest.approx(1 / 3)
    logits = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    assert M.topk_hits(logits, [0, 1], 1).tolist() == [True, False]
    assert "lower index" in M.__doc__ and "torch.topk" in M.__doc__


def test_spearman_equals_scipy_with_ties():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    gold = rng.integers(0, 6, 40).astype(float)  # many ties, like 0-5 STS scores
    sim = gold / 5 + rng.normal(0, 0.3, 40)
    m = M.cosine_spearman(sim, gold)
    assert m["value"] == pytest.approx(spearmanr(sim, gold).statistic, abs=1e-12)
    assert m["n"] == 40 and m["ci95"][0] < m["value"] < m["ci95"][1] and m["interval"] == "bootstrap"


def test_query_retrieval_by_hand():
    # 3 queries, 4 documents; query 1 has two documents (1 and 3)
    scores = np.array([[0.9, 0.1, 0.0, 0.2], [0.1, 0.2, 0.8, 0.7], [0.3, 0.1, 0.9, 0.0]])
    out = M.query_retrieval(scores, [[0], [1, 3], [2]])
    assert out["recall@1"]["value"] == pytest.approx(2 / 3)  # query 1's best is document 2
    assert out["recall@1"]["n"] == 3


def test_paired_drop_at_100_percent_and_with_lost_items():
    same = M.paired_drop([1] * 144, [1] * 144)
    assert same["drop"] == 0.0 and same["interval"] == "newcombe"
    assert same["ci95"][0] == pytest.approx(-0.026, abs=1e-3) and same["ci95"][1] == pytest.approx(0.026, abs=1e-3)
    base = np.array([1] * 120 + [0] * 24)
    cand = base.copy()
    cand[:5] = 0  # five items lost, none gained: a real drop of 3.5 pp
    lost = M.paired_drop(base, cand)
    assert lost["drop"] == pytest.approx(5 / 144)
    assert 0 < lost["ci95"][0] < lost["drop"] < lost["ci95"][1]
    # paired is much tighter than the two sets' own intervals (about ±6 pp each)
    own = M.wilson(120, 144)
    assert lost["ci95"][1] - lost["ci95"][0] < own[1] - own[0]
    # it agrees with a paired bootstrap on a large set
    rng = np.random.default_rng(1)
    a = rng.random(2000) < 0.8
    b = a.copy()
    b[rng.choice(2000, 60, replace=False)] ^= True
    newcombe = M.paired_drop(a, b)["ci95"]
    boot = M.paired_drop(a.astype(float), b.astype(float) * 0.999999 + 0.0)  # non-binary: bootstrap
    assert newcombe == pytest.approx(boot["ci95"], abs=0.006)


def test_paired_drop_of_spearman_and_of_scores():
    rng = np.random.default_rng(0)
    gold = rng.random(30) * 5
    base = gold + rng.normal(0, 0.5, 30)
    worse = gold + rng.normal(0, 3.0, 30)
    d = M.paired_drop(base, worse, gold)
    assert d["drop"] > 0 and d["ci95"][0] <= d["drop"] <= d["ci95"][1] and d["interval"] == "paired-bootstrap"
    v = M.paired_drop([1, 2 / 3, 0, 1] * 5, [1, 1 / 3, 0, 1] * 5)
    assert v["drop"] == pytest.approx(1 / 12) and v["interval"] == "paired-bootstrap"
    with pytest.raises(ValueError):
        M.paired_drop([1, 0], [1])
