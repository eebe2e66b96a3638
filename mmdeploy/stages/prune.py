"""`mmdeploy prune`: prune a checkpoint's towers, recover by distillation, save a checkpoint.

The output is a Hugging Face checkpoint folder (safetensors, config.json, tokenizer and
processor files) that ``mmdeploy convert`` accepts like any other, plus ``prune_report.json``
and a ``manifest.json`` (kind "model", format "checkpoint") recording what was removed and
the before/after parameters, FLOPs, size, ONNX Runtime batch-1 latency (same run) and task
metric.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.errors import CalibrationError, CheckpointError, InputError, UnsupportedError
from mmdeploy.models.pruned import load_pretrained
from mmdeploy.passes import prune as P

REPORT_NAME = "prune_report.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".msgpack", ".h5")
OWN_FILES = ("config.json", "manifest.json", REPORT_NAME, "model.safetensors.index.json")
OUTPUT_NAMES = {"vision": "image_embeds", "text": "text_embeds"}
PROJECTIONS = {"vision": "visual_projection", "text": "text_projection"}


# --------------------------------------------------------------------------- the source


class Source:
    """What pruning needs from SOURCE: the torch model, its folder, family and adapter."""

    def __init__(self, source: str | Path, allow_pickle: bool = False, processor: str | Path | None = None):
        from mmdeploy.models.preprocess import processor_dir_of

        self.text = str(source)
        self.adapter = None
        self.processor_dir = processor_dir_of({"processor": str(processor) if processor else None})
        try:
            from mmdeploy.models import resolve

            self.adapter = resolve(source, allow_pickle=allow_pickle,
                                   options={"processor": str(self.processor_dir)} if self.processor_dir else None)
        except (UnsupportedError, ModuleNotFoundError):
            # no adapter (not in this build, or a family resolve does not know): config.json
            # decides below, with the list of families the pruner supports
            pass
        self.folder = self._folder()
        config = _read_config(self.folder)
        self.family = getattr(self.adapter, "family", None) or config.get("model_type")
        if self.family not in P.SUPPORTED_FAMILIES:
            raise UnsupportedError(f"cannot prune family {self.family!r}: the pruner does not understand its blocks",
                                   "supported families: " + ", ".join(P.SUPPORTED_FAMILIES))
        # the built-in shapes set is the task of models trained on it (the demo's)
        self.is_demo = getattr(self.adapter, "dataset", lambda: None)() == "demo-shapes"

    def _folder(self) -> Path:
        if self.adapter is not None:
            return Path(self.adapter.source)
        path = Path(self.text)
        if not path.exists():
            raise InputError(f"{path} does not exist", "pass a local CLIP/SigLIP checkpoint folder or demo:tiny-clip")
        if not (path / "config.json").is_file():
            raise InputError(f"{path} is not a checkpoint folder (no config.json)",
                             "pass a Hugging Face checkpoint folder saved with save_pretrained()")
        return path

    def torch_model(self):
        """The transformers model (the adapter's when it has one), in eval mode."""
        model = None
        if self.adapter is not None:
            try:
                model = self.adapter.torch_model()
            except NotImplementedError:
                model = None
        if model is None:
            model = load_pretrained(self.folder)
        return model.eval()

    def tokenizer(self):
        """--processor DIR's or the checkpoint's tokenizer; one line naming what is missing."""
        from mmdeploy.models.preprocess import tokenizer_for

        return tokenizer_for(self.folder, self.processor_dir, required=True)

    def image_processor(self):
        """--processor DIR's or the checkpoint's image processor, else the adapter's (which may
        derive it from config.json)."""
        from transformers import AutoImageProcessor

        for place in (self.processor_dir, self.folder):
            if place is not None and (Path(place) / "preprocessor_config.json").is_file():
                return AutoImageProcessor.from_pretrained(str(place), local_files_only=True)
        if self.adapter is not None and hasattr(self.adapter, "image_processor"):
            return self.adapter.image_processor
        raise CheckpointError(f"{self.folder} has no preprocessor_config.json (the image processor)",
                              "pass --processor DIR with the base model's processor files")


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        return {}


# --------------------------------------------------------------------------- data


def _to_torch(feeds: dict[str, np.ndarray]) -> dict:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()}


def _batched(feeds: list[dict[str, np.ndarray]], batch_size: int) -> list[dict]:
    """Concatenate feeds of equal shapes along the batch axis and cut into torch batches."""
    groups: dict[tuple, list[dict]] = {}
    for f in feeds:
        groups.setdefault(tuple((k, v.shape[1:]) for k, v in sorted(f.items())), []).append(f)
    batches = []
    for group in groups.values():
        joined = {k: np.concatenate([f[k] for f in group]) for k in group[0]}
        n = len(next(iter(joined.values())))
        batches += [_to_torch({k: v[i:i + batch_size] for k, v in joined.items()}) for i in range(0, n, batch_size)]
    return batches


def _text_feeds(src: Source, texts: list[str]) -> dict[str, np.ndarray]:
    tok = src.tokenizer()
    kwargs = {"padding": "max_length", "truncation": True, "return_tensors": "np"}
    if getattr(tok, "model_max_length", 0) and tok.model_max_length < 10_000:
        kwargs["max_length"] = tok.model_max_length
    enc = tok(list(texts), **kwargs)
    feeds = {"input_ids": enc["input_ids"].astype(np.int64)}
    if "attention_mask" in enc and src.family == "clip":
        feeds["attention_mask"] = enc["attention_mask"].astype(np.int64)
    return feeds


def _image_feeds(src: Source, images) -> dict[str, np.ndarray]:
    pix = src.image_processor()(images=list(images), return_tensors="np")["pixel_values"]
    return {"pixel_values": pix.astype(np.float32)}


def _demo_feeds(src: Source, component: str, split: str, n: int) -> dict[str, np.ndarray]:
    import random

    from mmdeploy.data import shapes as data

    images, metas = data.generate(split, n)
    if component == "vision":
        return _image_feeds(src, images)
    rng = random.Random(n)
    texts = [data.random_caption(m.label, rng, m) for m in metas] + data.class_prompts()
    return _text_feeds(src, texts)


def _path_feeds(src: Source, component: str, path, n: int) -> dict[str, np.ndarray]:
    """Calibration from a user path: images (a folder, an ImageFolder, a pairs file, or images
    already decoded) for vision, a text file of captions otherwise."""
    if component == "vision":
        from mmdeploy.data.calib import calibration_images

        return _image_feeds(src, calibration_images(path, n).images)  # folder or ImageFolder; unreadable skipped
    path = Path(path)
    if not path.exists():
        raise CalibrationError(f"--calib {path} does not exist", "pass a folder of images or a captions .txt file")
    from mmdeploy.data.calib import calibration_texts

    files = sorted(path.glob("*.txt")) if path.is_dir() else [path]  # captions .txt(s), or a pairs / VQA file
    if not files:
        raise CalibrationError(f"--calib {path} holds no captions (.txt, one per line)", "pass a captions file")
    return _text_feeds(src, [t for f in files for t in calibration_texts(f)][:n])


def _random_feeds(model, component: str, n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    if component == "vision":
        cfg = model.config.vision_config
        return {"pixel_values": rng.standard_normal((n, cfg.num_channels, cfg.image_size, cfg.image_size)).astype(np.float32)}
    cfg = model.config.text_config
    seq = min(int(cfg.max_position_embeddings), 77)
    ids = rng.integers(0, cfg.vocab_size, (n, seq)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)} if model.config.model_type == "clip" else {"input_ids": ids}


def feeds_for(src: Source, model, component: str, calib: Path | None, n: int, split: str, seed: int):
    """(list of numpy feeds, where they came from) for one component: --calib, the adapter's
    calibration data, the demo dataset, or random inputs as a last resort."""
    if calib is not None:
        origin, data = str(calib), calib
        if component == "vision":  # decoded once, through mmdeploy.data; unreadable files skipped and noted
            from mmdeploy.data.calib import calibration_images

            data = calibration_images(calib, n)
            origin += f" ({data.note})" if data.note else ""
        if src.adapter is not None:
            try:
                return src.adapter.calibration_feeds(component, data, limit=n), origin
            except NotImplementedError:
                pass
        return [_path_feeds(src, component, data, n)], origin
    if src.is_demo:
        return [_demo_feeds(src, component, split, n)], f"demo:{split}"
    if src.adapter is not None:
        try:
            feeds = src.adapter.calibration_feeds(component, None, limit=n)
            if feeds:
                return feeds, "adapter"
        except NotImplementedError:
            pass
    return [_random_feeds(model, component, n, seed)], "random"


# --------------------------------------------------------------------------- runners


class TorchTowerRunner:
    """A Runner over one tower of a torch model (for the adapter's task metric)."""

    def __init__(self, model, component: str):
        self.model, self.component = model, component
        self.name = f"torch-{component}"
        self.input_names = ["pixel_values"] if component == "vision" else ["input_ids", "attention_mask"]
        self.output_names = [OUTPUT_NAMES[component]]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        with torch.no_grad():
            out = P._run_tower(self.model, self.component, _to_torch(feeds))
        return {self.output_names[0]: out.float().numpy()}


def _embed(model, component: str, batches: list[dict]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([P._run_tower(model, component, b).float().numpy() for b in batches])


def _cosine(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    cos = (a * b).sum(axis=1)
    return {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5)}


def task_metric(src: Source, model, limit: int | None = None, scorer=None) -> dict | None:
    """The family's task metric on ``model`` (demo: zero-shot top-1), or None if it has none;
    with ``scorer`` (``--eval``) the primary metric on the user's set."""
    if scorer is not None and src.adapter is not None:
        runners = {c: TorchTowerRunner(model, c) for c in src.adapter.task_components()}
        score = scorer(src.adapter, runners)
        return {"name": score["name"], "value": float(score["value"]), "n": score["n"], "ci95": score["ci95"]}
    if src.adapter is not None and src.adapter.task_components():
        try:
            runners = {c: TorchTowerRunner(model, c) for c in src.adapter.task_components()}
            result = src.adapter.evaluate(runners, limit=limit)
            if result is not None:
                return {"name": result.name, "value": float(result.value), "n": result.n}
        except NotImplementedError:
            pass
    if src.is_demo:
        from mmdeploy.data import shapes as data
        from mmdeploy.models.dual_encoder import zero_shot_logits

        images, labels = data.make_split("eval", limit)
        img = _embed(model, "vision", _batched([_image_feeds(src, images)], 64))
        txt = _embed(model, "text", _batched([_text_feeds(src, data.class_prompts())], 64))
        logits = zero_shot_logits(img, txt, model.logit_scale.detach().numpy())
        return {"name": "zero-shot-top1", "value": float((logits.argmax(1) == np.asarray(labels)).mean()),
                "n": len(labels)}
    return None


# --------------------------------------------------------------------------- recovery


def distill(student, teacher, train: dict[str, list[dict]], steps: int, lr: float, seed: int = 0,
            anchors: dict[str, list[dict]] | None = None) -> list[float]:
    """Recover the pruned towers by distillation from the unpruned model, training only the
    pruned towers (and their projections).

    Per tower: cosine + scaled MSE to the teacher's embeddings.  With ``anchors`` (inputs of
    the *other* tower, e.g. captions for the vision tower) also a KL term between the
    teacher's and student's similarity distributions over the teacher's anchor embeddings:
    what zero-shot classification and retrieval actually use.  Returns the loss curve."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    modules = [getattr(student, P.TOWERS[c]) for c in train]
    modules += [getattr(student, n) for c in train for n in (PROJECTIONS[c],) if hasattr(student, n)]
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    with torch.no_grad():
        targets = {c: [P._run_tower(teacher, c, b) for b in batches] for c, batches in train.items()}
        other = {"vision": "text", "text": "vision"}
        anchor = {c: F.normalize(torch.cat([P._run_tower(teacher, other[c], b) for b in anchors[other[c]]]), dim=-1)
                  for c in train if anchors and anchors.get(other[c])}
        scale = float(teacher.logit_scale.exp()) if hasattr(teacher, "logit_scale") else 1.0
    student.train()
    losses = []
    for step in range(steps):
        loss = 0.0
        for c, batches in train.items():
            i = step % len(batches)
            got, want = P._run_tower(student, c, batches[i]), targets[c][i]
            cos = F.cosine_similarity(got, want, dim=-1)
            loss = loss + (1 - cos).mean() + (got - want).pow(2).mean() / want.pow(2).mean().clamp_min(1e-8)
            if c in anchor:
                log_p = F.log_softmax(scale * F.normalize(got, dim=-1) @ anchor[c].T, dim=-1)
                q = F.softmax(scale * F.normalize(want, dim=-1) @ anchor[c].T, dim=-1)
                loss = loss + F.kl_div(log_p, q, reduction="batchmean")
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(round(float(loss.detach()), 5))
    student.eval()
    return losses


# --------------------------------------------------------------------------- latency


def _tower_module(model, component: str, names: list[str]):
    """One tower as an nn.Module taking ``names`` positionally (what torch.onnx.export needs)."""
    import torch

    class Tower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return P._run_tower(self.model, component, dict(zip(names, inputs)))

    return Tower().eval()


def export_tower(model, component: str, feeds: dict, path: Path) -> Path:
    """torch.onnx.export of one tower (opset 17), for the same-run latency comparison."""
    import warnings

    import torch

    names = list(feeds)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shape checks turned constant
        torch.onnx.export(_tower_module(model, component, names), tuple(feeds[n] for n in names), str(path),
                          input_names=names, output_names=[OUTPUT_NAMES[component]], opset_version=17,
                          dynamo=False, dynamic_axes={n: {0: "batch"} for n in names})
    return path


def ort_latency(models: dict[str, Path], feeds: dict[str, np.ndarray], runs: int = 20,
                threads: int | None = None, rounds: int = 2) -> dict[str, float]:
    """Median batch-1 latency (ms) of several ONNX files, timed in alternating blocks in one
    process (spinning off, so an idle session does not steal cores)."""
    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner

    runners = {k: OnnxRuntimeRunner(p, threads=threads) for k, p in models.items()}
    samples: dict[str, list[float]] = {k: [] for k in runners}
    for r in runners.values():
        for _ in range(3):
            r.run(feeds)
    for _ in range(rounds):
        for k, r in runners.items():
            for _ in range(max(1, runs // rounds)):
                t0 = time.perf_counter()
                r.run(feeds)
                samples[k].append((time.perf_counter() - t0) * 1000)
    return {k: round(statistics.median(v), 3) for k, v in samples.items()}


# --------------------------------------------------------------------------- the command


def _weights_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def _copy_preprocess(src: Source, out: Path) -> list[str]:
    files = list(src.adapter.preprocess_files()) if src.adapter is not None else []
    if not files:
        files = [p for p in src.folder.iterdir() if p.is_file() and p.suffix not in WEIGHT_SUFFIXES
                 and p.name not in OWN_FILES and not p.name.startswith(".")]
    copied = []
    for f in files:
        f = Path(f)
        if f.is_file() and f.name not in OWN_FILES and f.suffix not in WEIGHT_SUFFIXES:
            shutil.copy2(f, out / f.name)
            copied.append(f.name)
    return sorted(copied)


def prune(source: str | Path, output: str | Path, method: str, amount: float,
          components: list[str] | None = None, recover_steps: int = 0, calib: str | Path | None = None,
          scope: str = "per-layer", recover_lr: float = 1e-4, batch_size: int = 16, calib_size: int = 64,
          measure_latency: bool = True, latency_runs: int = 20, threads: int | None = None,
          eval_limit: int | None = None, allow_pickle: bool = False, seed: int = 0,
          eval_data: str | None = None, processor: str | Path | None = None) -> dict[str, Any]:
    """Prune SOURCE's towers (``method``: heads, mlp, heads,mlp or magnitude; ``amount`` in
    (0, 1)), optionally recover by distillation, and write a checkpoint folder at ``output``.

    Returns the report (also written to ``prune_report.json``).  ``threads`` applies to torch
    (restored afterwards) and ONNX Runtime: on a busy machine extra OpenMP threads mostly spin.
    """
    import torch

    options = dict(locals())
    del options["torch"]
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        return _prune(**options)
    finally:
        torch.set_num_threads(previous)


def _prune(source: str | Path, output: str | Path, method: str, amount: float,
          components: list[str] | None = None, recover_steps: int = 0, calib: str | Path | None = None,
          scope: str = "per-layer", recover_lr: float = 1e-4, batch_size: int = 16, calib_size: int = 64,
          measure_latency: bool = True, latency_runs: int = 20, threads: int | None = None,
          eval_limit: int | None = None, allow_pickle: bool = False, seed: int = 0,
          eval_data: str | None = None, processor: str | Path | None = None) -> dict[str, Any]:
    from mmdeploy.artifact import atomic_output, check_output

    P.check_method(method)
    P.check_amount(amount)
    check_output(output)  # before the checkpoint loads
    if scope not in ("per-layer", "global"):
        raise InputError(f"unknown --scope {scope!r}", "use per-layer or global")
    if recover_steps < 0:
        raise InputError(f"--recover-steps {recover_steps} is negative", "give 0 or more steps")
    user_scorer = None
    if eval_data is not None:  # --eval: before/after on the user's set (read once)
        from mmdeploy.stages.eval import scorer

        user_scorer = scorer(eval_data, limit=eval_limit)
    config = P.PruneConfig(method=method, amount=amount, components=components, scope=scope,
                           recover_steps=recover_steps, recover_lr=recover_lr, batch_size=batch_size, seed=seed)
    src = Source(source, allow_pickle=allow_pickle, processor=processor)
    with atomic_output(output) as tmp:  # checks --output now; it appears only on success
        return _run(src, Path(tmp), Path(output).name, config, calib=calib, calib_size=calib_size,
                    measure_latency=measure_latency, latency_runs=latency_runs, threads=threads,
                    eval_limit=eval_limit, user_scorer=user_scorer)


def _run(src: Source, tmp: Path, name: str, config: "P.PruneConfig", *, calib, calib_size: int,
         measure_latency: bool, latency_runs: int, threads: int | None, eval_limit: int | None,
         user_scorer=None) -> dict[str, Any]:
    """The work of :func:`prune`, writing into the temporary output directory ``tmp``."""
    import torch

    from mmdeploy.artifact import Manifest, PassRecord, sha256_path, tool_versions, write_manifest

    method, methods, amount, components = config.method, P.check_method(config.method), config.amount, config.components
    recover_steps, recover_lr, batch_size, seed = config.recover_steps, config.recover_lr, config.batch_size, config.seed
    scope = config.scope
    torch.manual_seed(seed)

    model = src.torch_model()
    chosen = list(P.towers(model, components))  # validates --components
    teacher = copy.deepcopy(model).eval()

    # data: calibration for importance, a larger (train) split for recovery, held-out for cosine
    calib_path = Path(calib) if calib else None
    calib_feeds, origin = {}, {}
    for c in chosen:
        calib_feeds[c], origin[c] = feeds_for(src, model, c, calib_path, calib_size, "calib", seed)
    calib_b = {c: _batched(f, batch_size) for c, f in calib_feeds.items()}
    heldout = {c: _batched(feeds_for(src, model, c, None, 32, "eval", seed + 1)[0], batch_size) for c in chosen}
    batch1 = {c: {k: v[:1] for k, v in calib_b[c][0].items()} for c in chosen}

    before = {
        "params": P.count_params(model),
        "flops": {c: P.count_flops(model, c, batch1[c]) for c in chosen},
        "metric": task_metric(src, model, eval_limit, user_scorer),
    }

    # prune
    targets: list = []
    if methods == ["magnitude"]:
        targets = P.prune_magnitude(model, amount, scope, chosen)
        details: dict[str, Any] = {"scope": scope}
    else:
        details = {m: P.prune_structured(model, m, amount, calib_b, chosen) for m in methods}
    after_prune = {"metric": task_metric(src, model, eval_limit, user_scorer),
                   "cosine": {c: _cosine(_embed(teacher, c, heldout[c]), _embed(model, c, heldout[c])) for c in chosen}}

    losses: list[float] = []
    if recover_steps:
        n_train = max(calib_size, min(recover_steps * batch_size, 4096))
        train = {c: _batched(feeds_for(src, model, c, calib_path, n_train, "train", seed + 2)[0], batch_size)
                 for c in chosen}
        # the other modality's calibration inputs anchor the similarity (KL) term
        anchors = {c: calib_b.get(c) or _batched(feeds_for(src, model, c, None, calib_size, "calib", seed)[0],
                                                 batch_size)
                   for c in P.towers(model)}
        losses = distill(model, teacher, train, recover_steps, recover_lr, seed, anchors)
    if methods == ["magnitude"]:
        details.update(P.finalize_magnitude(targets))
        details["compressed_bytes"] = {"before": P.compressed_size(teacher, chosen),
                                       "after": P.compressed_size(model, chosen)}
    P.update_config(model)

    after = {
        "params": P.count_params(model),
        "flops": {c: P.count_flops(model, c, batch1[c]) for c in chosen},
        "metric": task_metric(src, model, eval_limit, user_scorer) if recover_steps else after_prune["metric"],
        "cosine": {c: _cosine(_embed(teacher, c, heldout[c]), _embed(model, c, heldout[c])) for c in chosen},
    }

    latency = {}
    if measure_latency:
        from mmdeploy.artifact import scratch_dir

        with scratch_dir("mmdeploy-prune-") as scratch:
            for c in chosen:
                feeds = dict(batch1[c])
                files = {"before": export_tower(teacher, c, feeds, Path(scratch) / f"{c}-before.onnx"),
                         "after": export_tower(model, c, feeds, Path(scratch) / f"{c}-after.onnx")}
                ms = ort_latency(files, {k: v.numpy() for k, v in feeds.items()}, latency_runs, threads)
                latency[c] = {**ms, "speedup": round(ms["before"] / ms["after"], 3), "runs": latency_runs,
                              "threads": threads, "runtime": "onnxruntime fp32, batch 1, same run"}

    def ratio(a, b):
        return round(1 - b / a, 4) if a else 0.0

    metric = None
    if before["metric"] is not None:
        metric = {"name": before["metric"]["name"], "n": before["metric"]["n"],
                  "before": before["metric"]["value"], "after_prune": after_prune["metric"]["value"],
                  "after": after["metric"]["value"],
                  "delta_pp": round(100 * (after["metric"]["value"] - before["metric"]["value"]), 2)}
    report: dict[str, Any] = {
        "method": method, "amount": amount, "components": chosen, "recover_steps": recover_steps,
        "data": origin,
        "params": {"before": before["params"], "after": after["params"],
                   "reduction": ratio(before["params"]["total"], after["params"]["total"])},
        "flops": {c: {"before": before["flops"][c], "after": after["flops"][c],
                      "reduction": ratio(before["flops"][c], after["flops"][c])} for c in chosen},
        "latency_ms": latency,
        "metric": metric,
        "embedding_cosine": {c: {"after_prune": after_prune["cosine"][c], "after": after["cosine"][c]}
                             for c in chosen},
        "recovery_loss": {"first": losses[0], "last": losses[-1]} if losses else None,
        "pruned": details,
        "structure": P.structure(model),
    }
    if methods == ["magnitude"]:
        report["note"] = details["note"]

    model.save_pretrained(str(tmp), safe_serialization=True)
    preprocess = _copy_preprocess(src, tmp)
    report["size_bytes"] = {"before": _weights_bytes(src.folder), "after": _weights_bytes(tmp)}
    (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    manifest = Manifest(
        kind="model", name=name, family=src.family, format="checkpoint",
        source={"path": src.text, "sha256": sha256_path(src.folder)},
        passes=[PassRecord(name="prune", params=config.model_dump(), report=report)],
        tools=tool_versions("torch", "transformers", "onnx", "onnxruntime"),
        metadata={"loader": "mmdeploy.models.pruned:load_pretrained", "report": REPORT_NAME,
                  "preprocess_files": preprocess},
    )
    write_manifest(tmp, manifest)
    return report

