"""Corpus: text-encoder evaluation sets as users bring them -- sentence pairs with gold scores
(``sentence1,sentence2,score``: STS-B, SICK, MTEB) and ``query,document`` tables, as CSV with
header variants, quoted commas and a BOM, as TSV and as JSONL -- through `mmdeploy eval` and the
quantize guard, on a tiny BERT-like encoder (real ONNX Runtime, no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

PAIRS = [("a red circle", "a red circle on grey", 4.5), ("a blue square", "the green triangle", 0.5),
         ("a photo of a red star", "a red star", 4.0), ("a small blue circle", "a large blue circle", 3.0),
         ("the green cross, on the left", "a yellow square", 0.2), ("red", "a red thing", 3.5)]
QUERIES = [("red circle", "a red circle on a photo"), ("blue square", "a blue square"),
           ("green triangle", "the green triangle, small"), ("red circle", "a photo of a red circle")]


def _csv_field(text: str) -> str:
    return f'"{text}"' if "," in text else text


@pytest.fixture(scope="module")
def sts_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text-sets") / "sts.csv"
    path.write_text("sentence1,sentence2,score\n" + "".join(
        f"{_csv_field(a)},{_csv_field(b)},{s}\n" for a, b, s in PAIRS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def bert_text_bundle(bert_dir, tmp_path_factory) -> Path:
    from mmdeploy.stages.convert import convert

    out = tmp_path_factory.mktemp("bert-text") / "bundle"
    convert(bert_dir, out)
    return out


def test_sentence_pair_variants_read_alike(tmp_path, sts_csv):
    """Header case and spaces, an STS-B-like alias (similarity_score), a BOM, quoted commas,
    a blank line, TSV and JSONL: the same pairs."""
    from mmdeploy.data.textpairs import read_sentence_pairs

    expected = read_sentence_pairs(sts_csv)
    assert expected.sentence1[4] == "the green cross, on the left" and expected.scores[0] == 4.5
    variants = {
        "bom.csv": ("\ufeffSentence1, Sentence2 ,similarity_score\n"
                    + "".join(f"{_csv_field(a)},{_csv_field(b)},{s}\n\n" for a, b, s in PAIRS)),
        "pairs.tsv": "sentence1\tsentence2\tscore\n" + "".join(f"{a}\t{b}\t{s}\n" for a, b, s in PAIRS),
        "pairs.jsonl": "".join(json.dumps({"sentence1": a, "sentence2": b, "score": s}) + "\n" for a, b, s in PAIRS),
    }
    for name, text in variants.items():
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        got = read_sentence_pairs(path)
        assert (got.sentence1, got.sentence2, got.scores) == (expected.sentence1, expected.sentence2,
                                                             expected.scores), name


def test_query_document_table_and_anchor_positive(tmp_path):
    from mmdeploy.data.textpairs import read_query_documents
    from mmdeploy.stages.eval import detect_task

    path = tmp_path / "qd.csv"
    path.write_text("anchor,positive\n" + "".join(f"{q},{_csv_field(d)}\n" for q, d in QUERIES))
    ds = read_query_documents(path)
    # 'red circle' asked twice: one query with two documents; every document is a candidate
    assert ds.queries == ["red circle", "blue square", "green triangle"] and len(ds.documents) == 4
    assert ds.positives == [[0, 3], [1], [2]]
    assert detect_task(path) == "text-retrieval"
    sts = tmp_path / "sts.tsv"
    sts.write_text("Sentence1\tSentence2\tScore\na\tb\t1\nc\td\t2\ne\tf\t3\n")
    assert detect_task(sts) == "sts"


def _one_line(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip() and not line.startswith("·")]
    assert "Traceback" not in result.stderr and len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize("text, fragments", [
    ("sentence1,sentence2,score\na,b,high\nc,d,2\ne,f,3\n", ["row 2", "'high' is not a number"]),
    ("sentence1,sentence2\na,b\n", ["lacks a sentence1, sentence2 or score column"]),
    ("sentence1,sentence2,score\na,b,1\nc,d,1\ne,f,1\n", ["same score"]),
    ("sentence1,sentence2,score\na,b,1\nc,d,2\n", ["at least 3"]),
    ("sentence1,sentence2,score\na,b,c,1\n", ["row 2 has 4 fields", "quote"]),
    ("sentence1,sentence2,score\na,,1\nc,d,2\ne,f,3\n", ["row 2 has an empty 'sentence2'"]),
])
def test_bad_sentence_pairs_are_one_line(cli, bert_text_bundle, tmp_path, text, fragments):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    _one_line(cli("eval", str(bert_text_bundle), "--data", str(path), "--task", "sts"), str(path), *fragments)


def _plain_embeddings(folder: Path, texts: list[str]) -> np.ndarray:
    """BertModel + its tokenizer, mean-pooled over the mask and L2-normalised (nothing from mmdeploy)."""
    import torch
    from transformers import AutoTokenizer, BertModel

    model = BertModel.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = []
    with torch.no_grad():
        for text in texts:
            enc = tokenizer([text], return_tensors="pt", truncation=True)
            hidden = model(**enc).last_hidden_state
            pooled = hidden.mean(dim=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out).astype(np.float64)


def test_sts_equals_plain_transformers_for_torch_and_onnx(bert_dir, bert_text_bundle, sts_csv):
    from scipy.stats import spearmanr

    from mmdeploy.stages.eval import run_eval

    a = _plain_embeddings(bert_dir, [p[0] for p in PAIRS])
    b = _plain_embeddings(bert_dir, [p[1] for p in PAIRS])
    expected = spearmanr((a * b).sum(1), [p[2] for p in PAIRS]).statistic

    doc = run_eval([str(bert_dir), bert_text_bundle], sts_csv, batch=4)  # batches pad: the mask must hold
    assert doc["schema"] == "mmdeploy.eval" and doc["schema_version"] == 1
    assert doc["task"] == "sts" and doc["primary_metric"] == "cosine_spearman"
    assert doc["data"]["unit"] == "pairs" and doc["data"]["pairs"] == len(PAIRS)
    for entry in doc["results"]:
        m = entry["metrics"]["cosine_spearman"]
        assert m["value"] == pytest.approx(expected, abs=1e-6) and m["n"] == len(PAIRS)
        assert m["interval"] == "bootstrap" and m["ci95"][0] <= m["value"] <= m["ci95"][1]
        assert entry["inference_seconds"] <= entry["seconds"] and entry["load_seconds"] >= 0
    paired = doc["results"][1]["paired_delta"]
    assert paired["metric"] == "cosine_spearman" and paired["value"] == pytest.approx(0, abs=1e-6)


def test_query_document_recall_equals_plain_transformers(bert_dir, bert_text_bundle, tmp_path, cli):
    path = tmp_path / "qd.csv"
    path.write_text("query,document\n" + "".join(f"{q},{_csv_field(d)}\n" for q, d in QUERIES))
    queries = ["red circle", "blue square", "green triangle"]
    documents = [d for _, d in QUERIES]
    positives = [{0, 3}, {1}, {2}]
    scores = _plain_embeddings(bert_dir, queries) @ _plain_embeddings(bert_dir, documents).T
    best = np.argsort(-scores, axis=1, kind="stable")[:, 0]
    expected = np.mean([b in p for b, p in zip(best, positives)])

    result = cli("eval", str(bert_text_bundle), "--data", str(path), "--json")
    assert result.returncode == 0, result.stderr
    entry = json.loads(result.stdout)["results"][0]
    assert entry["metrics"]["recall@1"]["value"] == pytest.approx(expected) and entry["metrics"]["recall@1"]["n"] == 3
    # 4 documents: recall@5 and @10 would count every query: omitted, with the reason
    assert entry["metrics"]["recall@5"] is None and "4 documents" in entry["omitted"]["recall@5"]
    table = cli("eval", str(bert_text_bundle), "--data", str(path))
    assert table.returncode == 0 and "3 queries, 4 documents" in table.stdout and "recall@10: omitted" in table.stdout


def test_quantize_guarded_by_sentence_pairs(bert_text_bundle, sts_csv, tmp_path):
    """`quantize --eval pairs.csv`: the guard scores cosine_spearman through the text encoder."""
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    m = quantize(bert_text_bundle, tmp_path / "q", QuantizeOptions(
        eval_data=str(sts_csv), accuracy_budget=200, method="ort-static", accuracy_aware=False, latency_runs=0),
        log=lambda msg: None)
    acc = m.metadata["quantize"]["accuracy"]
    assert acc["metric"] == "task" and acc["task"] == f"cosine_spearman on {sts_csv.name}"
    assert acc["n"] == len(PAIRS) and acc["ok"]


def test_bench_times_the_shapes_asked_and_states_them(bert_text_bundle, cli):
    """`bench --batch 3 --sequence 24` (trtexec --shapes, benchmark_app -shape): the text encoder
    is timed on [3, 24] token inputs, and the JSON and Markdown say so; without --sequence the
    reference input's own length is timed, and stated too."""
    from mmdeploy.bench import BenchSettings, bench
    from mmdeploy.bench.report import markdown

    fast = dict(warmup=1, iters=2, isolated_memory=False)
    doc = bench([bert_text_bundle], BenchSettings(batch=3, sequence=24, **fast))
    row = doc["results"][0]
    assert row["shapes"] == {"input_ids": [3, 24], "attention_mask": [3, 24]} and row["sequence"] == 24
    assert doc["settings"]["sequence"] == 24
    text = markdown(doc)
    assert "sequence 24 tokens" in text and "- encoder: input_ids [3, 24], attention_mask [3, 24]" in text
    plain = bench([bert_text_bundle], BenchSettings(**fast))["results"][0]
    length = plain["shapes"]["input_ids"][1]
    assert plain["shapes"]["input_ids"][0] == 1 and plain["sequence"] == length and plain["input_source"] == "reference.npz"
    result = cli("bench", str(bert_text_bundle), "--sequence", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_sequence_on_a_fixed_length_input_is_refused(tmp_path):
    from mmdeploy.artifact import Manifest, TensorSpec
    from mmdeploy.bench.harness import resize_sequence
    from mmdeploy.errors import InputError

    manifest = Manifest(kind="component", name="text", format="onnx", precision="fp32",
                        inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", 77])])
    feeds = {"input_ids": np.ones((1, 77), np.int64)}
    assert resize_sequence(feeds, manifest, 77, tmp_path)["input_ids"].shape == (1, 77)
    with pytest.raises(InputError, match="fixed length of 77 tokens.*--sequence 16"):
        resize_sequence(feeds, manifest, 16, tmp_path)


def test_bench_accuracy_on_a_sentence_pairs_set(bert_text_bundle, sts_csv, cli):
    result = cli("bench", str(bert_text_bundle), "--iters", "2", "--warmup", "0", "--accuracy", "--eval", str(sts_csv),
                 "--json")
    assert result.returncode == 0, result.stderr
    acc = json.loads(result.stdout)["accuracy"][0]
    assert acc["metric"] == f"cosine_spearman on {sts_csv.name}" and acc["n"] == len(PAIRS)
    assert acc["drop_pts"] == pytest.approx(0.0)


def test_task_evaluator_scores_a_text_set_and_pairs_the_drop(bert_text_bundle, sts_csv):
    """The quantize guard's interface: TaskEvaluator(data, adapter).components / score / drop."""
    from mmdeploy.backends import load_runner
    from mmdeploy.models import adapter_for_bundle
    from mmdeploy.stages.eval import TaskEvaluator

    evaluator = TaskEvaluator(sts_csv, adapter_for_bundle(bert_text_bundle))
    assert evaluator.components({"encoder"}) == ("encoder",) and evaluator.name == f"cosine_spearman on {sts_csv.name}"
    runners = {"encoder": load_runner(bert_text_bundle / "encoder")}
    base = evaluator.score(runners)
    assert base["n"] == len(PAIRS) and base["ci95"][0] <= base["value"] <= base["ci95"][1] and base["predictions"] is None
    same = evaluator.drop(base, evaluator.score(runners))
    assert same["drop"] == pytest.approx(0.0, abs=1e-9) and same["interval"] == "paired-bootstrap"


# --------------------------------------------------------------------------- sentence-transformers folders


def _st_folder(bert_dir: Path, out: Path, mode: str) -> Path:
    """A sentence-transformers folder as `model.save()` leaves it: Transformer -> Pooling(mode) -> Normalize."""
    import shutil

    shutil.copytree(bert_dir, out)
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (out / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 32, "do_lower_case": False}))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                               f"pooling_mode_{mode}": True}))
    (out / "2_Normalize").mkdir()
    return out


@pytest.mark.parametrize("mode", ["mean_tokens", "cls_token", "max_tokens", "lasttoken"])
def test_sentence_transformers_pooling_exported_into_the_graph(bert_dir, tmp_path, mode):
    """The issue's finding: modules.json / 1_Pooling were ignored and users pooled by hand.  Every
    pooling mode sentence-transformers saves is exported into the graph: `sentence_embedding`
    equals SentenceTransformer.encode on the same sentences."""
    sentence_transformers = pytest.importorskip("sentence_transformers")
    from mmdeploy.runtime import load
    from mmdeploy.stages.convert import convert

    folder = _st_folder(bert_dir, tmp_path / "st", mode)
    convert(folder, tmp_path / "bundle")
    texts = ["a red circle", "the green triangle on the left of a blue square", "red"]
    want = sentence_transformers.SentenceTransformer(str(folder), device="cpu").encode(texts, convert_to_numpy=True)
    got = load(tmp_path / "bundle").embed_texts(texts)
    assert got.shape == want.shape
    assert np.min((got * want).sum(1)) > 0.9999


def test_guard_judges_what_users_consume():
    """The issue's finding: the guard compared BERT's pooler_output (a head sentence encoders never
    use) and token embeddings with their padding.  A quantized model wrong only there scores 1.0;
    one wrong on a real token does not."""
    from mmdeploy.passes.accuracy import embedding_cosines

    rng = np.random.default_rng(0)
    hidden = rng.normal(size=(2, 5, 8)).astype(np.float32)
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=np.int64)
    ref = {"last_hidden_state": hidden, "pooler_output": np.tanh(hidden[:, 0])}
    noisy = hidden.copy()
    noisy[0, 3:] = rng.normal(size=(2, 8))  # padding positions only
    got = {"last_hidden_state": noisy, "pooler_output": -ref["pooler_output"]}

    class Fixed:
        def __init__(self, out):
            self.out = out

        def run(self, feeds):
            return self.out

    feeds = [{"input_ids": np.zeros((2, 5), np.int64), "attention_mask": mask}]
    assert embedding_cosines(Fixed(ref), Fixed(got), feeds) == pytest.approx((1.0, 1.0))
    wrong = noisy.copy()
    wrong[1, 2] = -wrong[1, 2]  # a real token
    mean, worst = embedding_cosines(Fixed(ref), Fixed({**got, "last_hidden_state": wrong}), feeds)
    assert worst < 0.9 and mean < 1.0
