"""`mmdeploy eval`: task accuracy of any artifacts on the user's data, side by side.

Each ARTIFACT (a checkpoint or ``demo:NAME`` run by PyTorch, a convert/quantize/prune bundle, a
compiled bundle — one column per target —, or one component directory) becomes a *subject*:
its family adapter plus one Runner per task component.  The data set comes from
:mod:`mmdeploy.data` (ImageFolder, ``image,caption`` pairs, VQA JSONL, ``sentence1,sentence2,score``
and ``query,document`` tables for text encoders); the adapter turns samples into feeds
(``image_feeds`` / ``audio_features``, ``text_feeds`` / ``tokenize``); metrics come from
:mod:`mmdeploy.data.metrics`.  Prompt embeddings are computed once per subject, images in
batches; preprocessed feeds are shared by subjects with the same preprocessing.

Times are reported apart: ``load_seconds`` (opening the runners), ``preprocess_seconds``
(decoding is done before; this is feeds: processors, tokenizers, their lazy imports) and
``inference_seconds`` (inside ``Runner.run`` only).  The document is described in
docs/eval-json-schema.md.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.data import metrics as M
from mmdeploy.errors import InputError, UnsupportedError

SCHEMA = "mmdeploy.eval"
SCHEMA_VERSION = 1
TEXT_TASKS = ("sts", "text-retrieval")  # text encoders: sentence pairs, query -> documents
TASKS = ("classification", "retrieval", "captioning", "vqa") + TEXT_TASKS
PRIMARY = {"classification": "acc1", "retrieval": "image_retrieval_recall@1", "captioning": "cider",
           "vqa": "vqa_accuracy", "sts": "cosine_spearman", "text-retrieval": "recall@1"}
CACHE_LIMIT_BYTES = 256 << 20  # preprocessed feeds kept for the next subject up to this size


@dataclass
class Subject:
    """One column of the table: an adapter and a Runner per task component."""

    label: str
    adapter: Any
    runners: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- opening artifacts


def open_subjects(path: str | Path, threads: int | None = None, name: str | None = None,
                  task: str | None = None) -> list[Subject]:
    """The subjects of one ARTIFACT argument (several for a bundle compiled to several targets);
    ``name`` replaces the directory's name in labels; ``task`` picks the components (a text task
    needs only the text encoder)."""
    from mmdeploy.artifact import MANIFEST_NAME, bundle_dir, read_manifest
    from mmdeploy.models import adapter_for_bundle

    text = str(path)
    path = Path(text)
    if not (path / MANIFEST_NAME).is_file():
        return [_timed_open(_torch_subject, text, threads, task)]
    manifest = read_manifest(path)
    if manifest.format == "split":
        return [_timed_open(_split_subject, path, manifest, threads, task)]
    if manifest.kind == "component":
        bundle = bundle_dir(path)
        if bundle is None and task in TEXT_TASKS:  # a text encoder is one component: it is the model
            return [_timed_open(_component_subject, path, manifest, threads, task)]
        if bundle is None:
            raise UnsupportedError(f"{path} is a lone component: a task needs the model's other components",
                                   "pass the bundle directory that holds it")
        refs = read_manifest(bundle).artifacts
        adapter = _task_adapter(bundle, adapter_for_bundle(bundle), task, {r.component for r in refs})
        here = path.resolve().name
        chosen = {}
        for comp in needed_components(adapter, task, {r.component for r in refs}):
            same = [r for r in refs if r.component == comp and r.path == here]
            fp32 = [r for r in refs if r.component == comp and r.format == "onnx"]
            ref = (same or fp32 or [None])[0]
            if ref is None:
                raise UnsupportedError(f"{bundle} has no {comp!r} component", "evaluate a complete bundle")
            chosen[comp] = ref
        return [_timed_open(_bundle_subject, bundle, adapter, chosen, f"{bundle.name}/{here}", threads, task)]
    names = {r.component for r in manifest.artifacts}
    adapter = _task_adapter(path, adapter_for_bundle(path), task, names)
    needed = set(needed_components(adapter, task, names))
    groups: dict[tuple, dict] = {}
    for ref in manifest.artifacts:
        if ref.component in needed and ref.format != "tensorrt-bundle":
            groups.setdefault((ref.target or "", ref.precision), {})[ref.component] = ref
    complete = [(key, refs) for key, refs in groups.items() if needed <= set(refs)]
    if not complete:
        # a compiled bundle: components of one target next to the convert's ONNX
        onnx = {r.component: r for r in manifest.artifacts if r.format == "onnx"}
        complete = [(key, {**onnx, **refs}) for key, refs in groups.items() if needed <= set({**onnx, **refs})]
    if not complete:
        raise UnsupportedError(f"{path} lacks the components {', '.join(sorted(needed))} the task needs",
                               "evaluate the bundle written by `mmdeploy convert` (or quantize/compile)")
    subjects = []
    for (target, precision), refs in complete:
        suffix = "-".join(x for x in (target, precision if precision != "fp32" else "") if x)
        base = name or path.name
        label = f"{base}/{suffix}" if suffix and len(complete) > 1 else base
        subjects.append(_timed_open(_bundle_subject, path, adapter, refs, label, threads, task))
    return subjects


def needed_components(adapter, task: str | None, available=()) -> tuple[str, ...]:
    """The components a task runs: the text encoder for a text task, else the family's task
    components.  ``available``: the component names the artifact has."""
    if task in TEXT_TASKS:
        if text_tower(adapter) is not None:
            return ("text",)
        available = sorted(available)
        if getattr(adapter, "modality", None) == "text" and len(available) == 1:
            return (available[0],)
        raise UnsupportedError(f"{getattr(adapter, 'family', 'this model')}: no text encoder for the {task} task",
                               "pass a text encoder (sentence-transformers / BERT-family) or a dual encoder")
    return tuple(adapter.task_components())


def _task_adapter(where: Path, adapter, task: str | None = None, available=()):
    if adapter is not None and task in TEXT_TASKS:
        needed_components(adapter, task, available)  # raises when there is none
        return adapter
    if adapter is None or not tuple(adapter.task_components()):
        raise UnsupportedError(f"{where}: this model family has no task to evaluate",
                               "eval runs image/audio-text dual encoders, captioners and, with a "
                               "sentence1,sentence2,score or query,document table, text encoders")
    return adapter


def _timed_open(opener, *args) -> Subject:
    """A subject with the seconds it took to open (load its runners) in ``info["load_seconds"]``."""
    start = time.perf_counter()
    subject = opener(*args)
    subject.info["load_seconds"] = round(time.perf_counter() - start, 3)
    return subject


def _component_subject(path: Path, manifest, threads, task) -> Subject:
    """A lone text-encoder component directory (no bundle above it)."""
    from mmdeploy.backends import load_runner
    from mmdeploy.models import adapter_for_bundle

    adapter = adapter_for_bundle(path)
    if adapter is None:
        raise UnsupportedError(f"{path} is a lone component without its preprocessing",
                               "pass the bundle directory written by `mmdeploy convert`")
    comp = needed_components(adapter, task, {manifest.name})[0]
    runner = load_runner(path, **({"threads": threads} if threads else {}))
    return Subject(path.name, adapter, {comp: runner}, {"path": str(path), "precision": manifest.precision,
                                                        "format": manifest.format})


def _bundle_subject(bundle: Path, adapter, refs: dict, label: str, threads, task=None) -> Subject:
    from mmdeploy.backends import load_runner

    needed = needed_components(adapter, task, set(refs))
    runners = {c: load_runner(bundle / r.path, **({"threads": threads} if threads else {}))
               for c, r in refs.items() if c in needed}
    precisions = sorted({r.precision for c, r in refs.items() if c in runners})
    formats = sorted({r.format for c, r in refs.items() if c in runners})
    return Subject(label, adapter, runners, {"path": str(bundle), "precision": "+".join(precisions),
                                             "format": "+".join(formats)})


def _torch_subject(source: str, threads, task=None) -> Subject:
    from mmdeploy.backends.torch import TorchRunner
    from mmdeploy.models import resolve

    adapter = resolve(source)
    if task in TEXT_TASKS:
        components = adapter.components()
        needed = needed_components(adapter, task, set(components))
    else:
        needed = tuple(adapter.task_components())
        if not needed:
            _task_adapter(Path(source), None)
        components = adapter.components()
    runners = {c: TorchRunner(components[c], threads=threads) for c in needed}
    return Subject(Path(source).name if ":" not in source else source, adapter, runners,
                   {"path": source, "precision": "fp32", "format": "torch"})


def _split_subject(path: Path, manifest, threads, task=None) -> Subject:
    """A split component (edge then cloud, in this process) with the bundle's other components."""
    from mmdeploy.artifact import bundle_dir, read_manifest
    from mmdeploy.backends import load_runner
    from mmdeploy.models import adapter_for_bundle
    from mmdeploy.split.build import _Chain

    parent = Path((manifest.parent or {}).get("path", ""))
    bundle = parent if (parent / "manifest.json").is_file() else None

    if bundle is not None and read_manifest(bundle).kind != "model":
        bundle = bundle_dir(bundle)
    if bundle is None:
        raise UnsupportedError(f"{path}: the bundle it was split from ({parent}) is not available",
                               "keep the convert bundle at its path")
    adapter = _task_adapter(bundle, adapter_for_bundle(bundle), task,
                            {r.component for r in read_manifest(bundle).artifacts})
    needed = needed_components(adapter, task, {r.component for r in read_manifest(bundle).artifacts})
    refs = {r.path: r for r in manifest.artifacts}
    full = refs.get("full")
    component = full.component if full else None
    edge, cloud = load_runner(path / "edge"), load_runner(path / "cloud")
    chain = _Chain(edge, cloud, (manifest.metadata.get("cut") or {}).get("crossing", []), list(edge.input_names))
    runners = {r.component: load_runner(bundle / r.path) for r in read_manifest(bundle).artifacts
               if r.component in needed and r.component != component and r.format == "onnx"}
    runners[component] = chain
    return Subject(path.name, adapter, runners, {"path": str(path), "precision": manifest.precision,
                                                 "format": "split"})


# --------------------------------------------------------------------------- towers


def media_tower(adapter) -> tuple[str, Any, str]:
    """(component, samples -> feeds, modality) of the image or audio tower."""
    needed = tuple(adapter.task_components())
    if hasattr(adapter, "image_feeds") and "vision" in needed:
        return "vision", adapter.image_feeds, "image"
    if hasattr(adapter, "audio_features") and "audio" in needed:
        return "audio", adapter.audio_features, "audio"
    if hasattr(adapter, "pixel_values") and "vision" in needed:  # captioners
        return "vision", adapter.pixel_values, "image"
    raise UnsupportedError(f"{adapter.family}: no image or audio tower", "")


def text_tower(adapter):
    fn = getattr(adapter, "text_feeds", None) or getattr(adapter, "tokenize", None)
    if fn is None or "text" not in adapter.task_components():
        return None
    return fn


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64).reshape(len(x), -1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _first(outputs: dict) -> np.ndarray:
    return next(iter(outputs.values()))


def _preprocess_key(adapter, kind: str) -> str:
    digest = hashlib.sha256(f"{adapter.family}:{kind}".encode())
    for name in ("preprocessor_config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json",
                 "merges.txt", "special_tokens_map.json", "spiece.model"):
        f = Path(adapter.source) / name
        if f.is_file():
            digest.update(name.encode() + f.read_bytes())
    meta = getattr(adapter, "bundle_metadata", {}) or {}
    digest.update(repr((meta.get("image_size"), meta.get("text_max_length"), meta.get("text_length"))).encode())
    return digest.hexdigest()


class _Feeds:
    """Preprocessed batches, shared by subjects whose preprocessing is the same."""

    def __init__(self):
        self.cache: dict[tuple, list] = {}

    def batches(self, adapter, kind: str, fn, samples: list, batch: int) -> list[dict]:
        # media samples are the data set's own list (kept alive); texts are keyed by content
        content = id(samples) if kind != "text" else hashlib.sha256("\n".join(samples).encode()).hexdigest()
        key = (_preprocess_key(adapter, kind), content, batch)
        if key in self.cache:
            return self.cache[key]
        out = [fn(samples[i:i + batch]) for i in range(0, len(samples), batch)]
        size = sum(v.nbytes for f in out for v in f.values())
        if size <= CACHE_LIMIT_BYTES:
            self.cache[key] = out
        return out


def embed(runner, batches: list[dict], pool=None) -> np.ndarray:
    """L2-normalised embeddings of every batch (``pool(outputs, feeds)``: the default is the
    runner's first output, a dual encoder's projected embedding)."""
    pool = pool or (lambda outputs, feeds: _first(outputs))
    return _normalize(np.concatenate([pool(runner.run(f), f) for f in batches]))


# --------------------------------------------------------------------------- text encoders


def sentence_embedding(outputs: dict, feeds: dict) -> np.ndarray:
    """What a text encoder's user consumes: its ``sentence_embedding`` output when the graph has
    one (a sentence-transformers pipeline exported into it), else the attention-masked mean of
    ``last_hidden_state`` (sentence-transformers' mean pooling, as all-MiniLM-L6-v2 uses); a
    dual encoder's text tower gives its projected embedding (first output)."""
    if "sentence_embedding" in outputs:
        return np.asarray(outputs["sentence_embedding"], np.float64)
    hidden = outputs.get("last_hidden_state", outputs.get("token_embeddings"))
    if hidden is None or np.ndim(hidden) != 3:
        return np.asarray(_first(outputs), np.float64)
    mask = np.asarray(feeds.get("attention_mask", np.ones(np.shape(hidden)[:2])), np.float64)[..., None]
    return (np.asarray(hidden, np.float64) * mask).sum(axis=1) / np.maximum(mask.sum(axis=1), 1e-9)


def text_encoder_feeds(adapter, runner):
    """texts -> feeds for the text component: the dual encoder's own tokenization, else the
    bundle's tokenizer (padded per batch, truncated at sentence-transformers' ``max_seq_length``
    when ``sentence_bert_config.json`` gives one, else the tokenizer's limit)."""
    fn = text_tower(adapter)
    if fn is not None:
        return fn
    import json

    from mmdeploy.models import preprocess as pp

    tokenizer = pp.tokenizer_for(adapter.source, adapter.processor_dir(), adapter.provenance, required=True)
    if tokenizer is None:
        raise UnsupportedError(f"{adapter.source}: no tokenizer in the bundle: text cannot be encoded",
                               "convert again with the tokenizer files, or pass --processor DIR")
    limit = None
    config = Path(adapter.source) / "sentence_bert_config.json"
    if config.is_file():
        try:
            limit = int(json.loads(config.read_text()).get("max_seq_length") or 0) or None
        except (ValueError, TypeError, AttributeError):
            limit = None
    names = list(getattr(runner, "input_names", None) or ["input_ids", "attention_mask"])

    def tokenize(texts: list[str]) -> dict:
        enc = tokenizer(list(texts), padding=True, truncation=True, return_tensors="np",
                        **({"max_length": limit} if limit else {}))
        return {n: np.asarray(enc[n], dtype=np.int64) for n in names if n in enc}

    return tokenize


# --------------------------------------------------------------------------- data sets


@dataclass
class EvalData:
    task: str
    path: Path
    dataset: Any
    samples: list  # decoded images, or audio clips as (samples, rate) at their own rate
    skipped: list[dict]


def detect_task(path: Path) -> str:
    """From the data: a folder is classification; a table by its columns (``image``/``audio`` +
    ``caption``: retrieval; ``sentence1,sentence2,score``: sts; ``query,document``:
    text-retrieval); a VQA .jsonl by its questions."""
    from mmdeploy.data.vqa import is_vqa

    if path.is_dir():
        return "classification"
    if path.suffix.lower() in (".csv", ".tsv", ".jsonl", ".json"):
        from mmdeploy.data.pairs import read_rows
        from mmdeploy.data.textpairs import table_kind

        rows = read_rows(path)
        kind = table_kind(rows[0][1]) if rows else None
        return kind or ("vqa" if is_vqa(path) else "retrieval")
    raise InputError(f"--data {path}: cannot tell the task from it",
                     "pass an ImageFolder, a .csv/.tsv/.jsonl of image,caption pairs, of sentence1,sentence2,score "
                     "or of query,document, or a VQA .jsonl")


def load_data(path: str | Path, task: str = "auto", templates: str | Path | None = None,
              strict: bool = False, limit: int | None = None) -> EvalData:
    from mmdeploy.data.builtin import resolve_data
    from mmdeploy.data.media import decode_clips, decode_images

    path = resolve_data(path)
    if not path.exists():
        raise InputError(f"--data {path} does not exist",
                         "pass an ImageFolder, a .csv/.jsonl of image,caption pairs, a VQA .jsonl or builtin:NAME")
    if task == "auto":
        task = detect_task(path)
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}", "tasks: auto, " + ", ".join(TASKS))
    if task == "classification":
        from mmdeploy.data.imagefolder import read_imagefolder

        if not path.is_dir():
            raise InputError(f"--data {path}: classification needs an ImageFolder (a folder of class folders)",
                             "or pass --task retrieval for a captions file")
        ds = read_imagefolder(path, templates)
        if limit:
            idx = _balanced_head(ds.labels, limit)
            ds.files, ds.labels = [ds.files[i] for i in idx], [ds.labels[i] for i in idx]
        files = ds.files
    elif task in TEXT_TASKS:
        from mmdeploy.data.textpairs import read_query_documents, read_sentence_pairs

        if path.is_dir():
            raise InputError(f"--data {path}: {task} needs a .csv/.tsv/.jsonl table",
                             "sentence1,sentence2,score for sts; query,document for text-retrieval")
        ds = read_sentence_pairs(path) if task == "sts" else read_query_documents(path)
        count = len(ds.scores) if task == "sts" else len(ds.queries)
        if limit:
            ds = ds.keep(list(range(min(limit, count))))
        items = list(range(len(ds.scores) if task == "sts" else len(ds.queries)))
        return EvalData(task, path, ds, items, [])
    elif task in ("retrieval", "captioning"):
        from mmdeploy.data.pairs import read_pairs

        if path.is_dir():
            raise InputError(f"--data {path}: {task} needs a .csv or .jsonl of image,caption pairs",
                             "or pass --task classification for an ImageFolder")
        ds = read_pairs(path)
        if limit:
            ds = ds.keep(list(range(min(limit, len(ds.files)))))
        files = ds.files
    else:
        from mmdeploy.data.vqa import read_vqa

        ds = read_vqa(path)
        if limit:
            ds.files, ds.questions, ds.answers = ds.files[:limit], ds.questions[:limit], ds.answers[:limit]
        files = ds.files
    modality = getattr(ds, "modality", "image")
    # decoded once (clips at their own rate, resampled per model later); unreadable files skipped
    samples, kept, skipped = (decode_clips if modality == "audio" else decode_images)(files, strict=strict)
    if not samples:
        what = "audio clips" if modality == "audio" else "images"
        raise InputError(f"--data {path}: none of its {len(files)} {what} decode", "check the files")
    if skipped:
        ds = _drop(task, ds, kept)
    return EvalData(task, path, ds, samples, skipped)


def _balanced_head(labels: list[int], limit: int) -> list[int]:
    """The first ``limit`` samples taking classes in turn (a small set still covers every class)."""
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    order, depth = [], 0
    while len(order) < min(limit, len(labels)):
        for idx in by_class.values():
            if depth < len(idx) and len(order) < limit:
                order.append(idx[depth])
        depth += 1
    return sorted(order)


def _drop(task: str, ds, kept: list[int]):
    if task == "classification":
        ds.files, ds.labels = [ds.files[i] for i in kept], [ds.labels[i] for i in kept]
        return ds
    if task == "vqa":
        ds.files = [ds.files[i] for i in kept]
        ds.questions, ds.answers = [ds.questions[i] for i in kept], [ds.answers[i] for i in kept]
        return ds
    return ds.keep(kept)


# --------------------------------------------------------------------------- evaluation


def _media_samples(subject: Subject, data: EvalData, modality: str) -> list:
    if modality != getattr(data.dataset, "modality", "image"):
        raise UnsupportedError(f"{subject.label} takes {modality} but --data {data.path} holds "
                               f"{getattr(data.dataset, 'modality', 'image')}",
                               f"pass {modality} data for this model")
    if modality == "audio":
        from mmdeploy.data.media import at_rate

        rate = subject.adapter.features.sampling_rate
        key = ("audio", rate)
        cache = data.__dict__.setdefault("_decoded", {})
        if key not in cache:
            cache[key] = [at_rate(samples, native, rate, Path(f).name)
                          for (samples, native), f in zip(data.samples, data.dataset.files)]
        return cache[key]
    return data.samples


class _TimedRunner:
    """A runner whose ``run`` calls are timed (inference apart from preprocessing)."""

    def __init__(self, runner, clock: list):
        self._runner, self._clock = runner, clock

    def run(self, feeds):
        start = time.perf_counter()
        try:
            return self._runner.run(feeds)
        finally:
            self._clock[0] += time.perf_counter() - start

    def __getattr__(self, name):
        return getattr(self._runner, name)


def evaluate_subject(subject: Subject, data: EvalData, feeds: _Feeds, batch: int = 32) -> dict:
    """{"metrics": {name: {value, n, ci95, interval} or None}, "omitted": {name: why},
    "predictions": [...], "items": per-item values of the primary metric (for paired
    comparisons; None for corpus metrics), "seconds", "inference_seconds", "cpu_seconds"}."""
    start, cpu_start = time.perf_counter(), time.process_time()
    clock = [0.0]
    runners = {c: _TimedRunner(r, clock) for c, r in subject.runners.items()}
    adapter, task = subject.adapter, data.task
    omitted: dict[str, str] = {}
    items, gold = None, None
    if task in ("classification", "retrieval"):
        text_fn = text_tower(adapter)
        if text_fn is None:
            raise UnsupportedError(f"{subject.label}: {task} needs an image/audio-text dual encoder "
                                   f"({adapter.family} has no text tower)",
                                   "use --task captioning for captioners")
        comp, media_fn, modality = media_tower(adapter)
        samples = _media_samples(subject, data, modality)
        media = embed(runners[comp], feeds.batches(adapter, modality, media_fn, samples, batch))
        if task == "classification":
            from mmdeploy.data.templates import fill

            ds = data.dataset
            texts = [fill(t, c) for c in ds.classnames for t in ds.templates]
            text = embed(runners["text"], feeds.batches(adapter, "text", text_fn, texts, batch))
            classes = _normalize(text.reshape(len(ds.classnames), len(ds.templates), -1).mean(axis=1))
            logits = 100.0 * media @ classes.T
            metrics = M.classification(logits, ds.labels, omitted)
            predictions = logits.argmax(axis=1).tolist()
            items = M.topk_hits(logits, ds.labels, 1).astype(float)
        else:
            ds = data.dataset
            text = embed(runners["text"], feeds.batches(adapter, "text", text_fn, ds.captions, batch))
            scores = text @ media.T  # texts x images, as CLIP_benchmark
            metrics = M.retrieval(scores, ds.caption_file, omitted)
            predictions = np.argsort(-scores, axis=1, kind="stable")[:, 0].tolist()
            items = (np.asarray(predictions) == np.asarray(ds.caption_file)).astype(float)
    elif task in TEXT_TASKS:
        comp = needed_components(adapter, task, set(runners))[0]
        runner = runners[comp]
        fn = text_encoder_feeds(adapter, runner)
        pool = sentence_embedding

        def encode(texts: list[str]) -> np.ndarray:
            return embed(runner, feeds.batches(adapter, "text", fn, texts, batch), pool)

        ds = data.dataset
        if task == "sts":
            cosine = (encode(ds.sentence1) * encode(ds.sentence2)).sum(axis=1)
            metrics = {"cosine_spearman": M.cosine_spearman(cosine, ds.scores)}
            predictions, items, gold = None, cosine, np.asarray(ds.scores, np.float64)
        else:
            scores = encode(ds.queries) @ encode(ds.documents).T
            metrics = M.query_retrieval(scores, ds.positives, omitted)
            predictions = np.argsort(-scores, axis=1, kind="stable")[:, 0].tolist()
            items = np.array([p in docs for p, docs in zip(predictions, ds.positives)], dtype=float)
    elif task == "captioning":
        if not hasattr(adapter, "captions"):
            raise UnsupportedError(f"{subject.label}: {adapter.family} does not write captions",
                                   "captioning needs a captioner (BLIP); use --task retrieval for dual encoders")
        ds = data.dataset
        predictions = []
        for i in range(0, len(data.samples), batch):
            rows = adapter.captions(runners, data.samples[i:i + batch])
            predictions += [adapter.decode(r) for r in rows]
        metrics = M.captioning(predictions, ds.references())
    else:
        answer = getattr(adapter, "answer", None)
        if answer is None:
            raise UnsupportedError(f"{subject.label}: {adapter.family} does not answer questions (VQA)",
                                   "VQA needs a BLIP question-answering bundle")
        ds = data.dataset
        predictions = [answer(runners, image, question) for image, question in zip(data.samples, ds.questions)]
        items = M.vqa_scores(predictions, ds.answers)
        metrics = {"vqa_accuracy": M.mean_metric(items)}
    return {"metrics": metrics, "omitted": omitted, "predictions": predictions, "items": items, "gold": gold,
            "seconds": time.perf_counter() - start, "inference_seconds": clock[0],
            "cpu_seconds": time.process_time() - cpu_start}


def run_eval(artifacts: list[str | Path], data: str | Path, task: str = "auto",
             templates: str | Path | None = None, strict: bool = False, limit: int | None = None,
             threads: int | None = None, batch: int = 32, log=lambda msg: None,
             names: list[str] | None = None) -> dict:
    """The evaluation document: data set, one entry per subject, deltas against the first."""
    if not artifacts:
        raise InputError("no ARTIFACT given", "pass one or more artifacts, the reference (fp32) first")
    if batch < 1:
        raise InputError(f"--batch {batch} must be at least 1", "e.g. --batch 32")
    loaded = load_data(data, task, templates, strict, limit)
    if loaded.skipped:
        from mmdeploy.data.media import skipped_note

        log(skipped_note(loaded.skipped))
    names = list(names or []) + [None] * len(artifacts)
    subjects = [s for a, n in zip(artifacts, names) for s in open_subjects(a, threads, n, loaded.task)]
    _unique_labels(subjects)
    feeds = _Feeds()
    results = []
    for subject in subjects:
        log(f"evaluating {subject.label}")
        results.append((subject, evaluate_subject(subject, loaded, feeds, batch)))
    ref_index = next((i for i, (s, _) in enumerate(results) if s.info.get("precision") == "fp32"), 0)
    reference = results[ref_index][1]
    first = results[0][1]
    entries = []
    for i, (subject, res) in enumerate(results):
        deltas = {k: (None if v is None or first["metrics"].get(k) is None
                      else v["value"] - first["metrics"][k]["value"]) for k, v in res["metrics"].items()}
        entry = {"artifact": subject.label, **subject.info, "metrics": res["metrics"], "omitted": res["omitted"],
                 "delta": deltas, "paired_delta": None,
                 "agreement": M.agreement(res["predictions"], reference["predictions"]),
                 "seconds": round(res["seconds"], 3), "inference_seconds": round(res["inference_seconds"], 3),
                 "cpu_seconds": round(res["cpu_seconds"], 3)}
        entry.setdefault("load_seconds", None)
        if i and res["items"] is not None and first["items"] is not None:
            paired = M.paired_drop(first["items"], res["items"], first["gold"])
            # a delta (this minus the first column) is the negative of a drop
            flip = [0.0 - x for x in paired["ci95"][::-1]] if paired["ci95"] is not None else None
            entry["paired_delta"] = {"metric": PRIMARY[loaded.task], "value": 0.0 - paired["drop"], "n": paired["n"],
                                     "ci95": flip, "interval": paired["interval"]}
        entries.append(entry)
    ds = loaded.dataset
    return {
        "schema": SCHEMA, "schema_version": SCHEMA_VERSION,
        "task": loaded.task, "primary_metric": PRIMARY[loaded.task], "tie_rule": TIE_RULE,
        "data": {"path": str(loaded.path), "n": len(loaded.samples), "skipped": loaded.skipped,
                 **_data_summary(loaded.task, ds)},
        "reference": results[ref_index][0].label, "results": entries,
    }


TIE_RULE = ("equal scores rank in data-set order (stable sort: the lower index first); CLIP_benchmark's "
            "torch.topk leaves the order among ties unspecified")


def _data_summary(task: str, ds) -> dict:
    """What the set holds, per unit (``n`` above counts the samples the media tower embeds)."""
    if task == "classification":
        return {"unit": "images", "images": len(ds.files), "classes": len(ds.classnames),
                "templates": len(ds.templates), "templates_from": ds.templates_source, "modality": ds.modality}
    if task in ("retrieval", "captioning"):
        unit = "audio_clips" if ds.modality == "audio" else "images"
        return {"unit": unit, unit: len(ds.files), "captions": len(ds.captions), "modality": ds.modality}
    if task == "sts":
        return {"unit": "pairs", "pairs": len(ds.scores), "modality": "text"}
    if task == "text-retrieval":
        return {"unit": "queries", "queries": len(ds.queries), "documents": len(ds.documents), "modality": "text"}
    return {"unit": "questions", "questions": len(ds.questions)}


def _unique_labels(subjects: list[Subject]) -> None:
    seen: dict[str, int] = {}
    for s in subjects:
        if s.label in seen:
            seen[s.label] += 1
            s.label = f"{s.label}#{seen[s.label]}"
        else:
            seen[s.label] = 1


# --------------------------------------------------------------------------- one metric (guards)


class TaskEvaluator:
    """A user set scored through an adapter's runners: the quantize guard's and prune's metric.

    ``score(runners)`` returns the primary metric in points with n, its interval, and the
    predictions (for agreement).  Data are read and preprocessed once.
    """

    def __init__(self, data: str | Path, adapter, task: str = "auto", templates=None, limit: int | None = None,
                 batch: int = 32):
        self.data = load_data(data, task, templates, limit=limit)
        self.adapter = adapter
        self.metric = PRIMARY[self.data.task]
        self.feeds = _Feeds()
        self.batch = batch

    @property
    def name(self) -> str:
        return f"{self.metric} on {self.data.path.name}"

    def components(self, available=()) -> tuple[str, ...]:
        """The components the set is scored through: the family's task components, or for a text
        set the text encoder (``available``: the component names the artifact has)."""
        if self.adapter is None:
            return ()
        try:
            return needed_components(self.adapter, self.data.task, available)
        except UnsupportedError:
            return ()

    def score(self, runners: dict) -> dict:
        """The primary metric in points: value, n, ci95, predictions, resolution (one item, pp),
        half_width, and ``items`` (+ ``gold`` for sts) for :meth:`drop`."""
        subject = Subject("candidate", self.adapter, runners)
        res = evaluate_subject(subject, self.data, self.feeds, self.batch)
        m = res["metrics"][self.metric]
        if m is None:
            raise InputError(f"--eval {self.data.path}: {self.metric} {res['omitted'].get(self.metric, 'is not measurable')}",
                             "add candidates to the set")
        return {"value": 100.0 * m["value"], "n": m["n"], "ci95": [100.0 * x for x in m["ci95"]] if m["ci95"] else None,
                "predictions": res["predictions"], "resolution": M.resolution(m), "half_width": M.half_width(m),
                "items": res["items"], "gold": res["gold"]}

    @staticmethod
    def drop(baseline: dict, result: dict) -> dict | None:
        """The drop baseline − result in points on the same items, with its paired 95 % interval
        (:func:`mmdeploy.data.metrics.paired_drop`); None for a corpus metric (CIDEr)."""
        if baseline.get("items") is None or result.get("items") is None:
            return None
        paired = M.paired_drop(baseline["items"], result["items"], baseline.get("gold"))
        return {"drop": 100.0 * paired["drop"], "n": paired["n"], "interval": paired["interval"],
                "ci95": None if paired["ci95"] is None else [100.0 * x for x in paired["ci95"]]}


def scorer(data: str | Path, task: str = "auto", templates=None, limit: int | None = None):
    """``scorer(adapter, runners)`` -> the primary metric on ``data`` as a fraction, with n, ci95
    and predictions: what ``bench --accuracy --eval`` measures (data read once)."""
    loaded = load_data(data, task, templates, limit=limit)
    feeds = _Feeds()
    key = PRIMARY[loaded.task]

    def score(adapter, runners) -> dict:
        res = evaluate_subject(Subject("bench", adapter, runners), loaded, feeds)
        m = res["metrics"][key]
        if m is None:
            raise InputError(f"--eval {loaded.path}: {key} {res['omitted'].get(key, 'is not measurable')}",
                             "add candidates to the set")
        return {"name": f"{key} on {loaded.path.name}", "value": m["value"], "n": m["n"], "ci95": m["ci95"],
                "predictions": res["predictions"]}

    # the components the set is scored through (a text set: the text encoder alone)
    score.components = lambda adapter, available=(): needed_components(adapter, loaded.task, available)
    return score
