"""``convert``: checkpoint → verified per-component ONNX bundle (and backend artifacts).

Each component is exported, simplified, then verified against PyTorch on several fresh inputs
(batch 1 and > 1, real images where the family has them).  The inputs and PyTorch outputs are
kept in ``reference.npz`` so every later stage can verify without the checkpoint.  The whole
output is built in a temporary directory and renamed into place only when everything passed.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from mmdeploy.artifact import (ArtifactRef, Manifest, PassRecord, atomic_output, check_output, save_reference,
                               sha256_path, tool_versions, write_manifest)
from mmdeploy.compare import DEFAULT_ATOL, verify_runner
from mmdeploy.errors import InputError, VerificationError
from mmdeploy import onnx_files
from mmdeploy.export import onnx as onnx_export

log = logging.getLogger("mmdeploy")
MODEL_FILE = "model.onnx"
MIN_TASK_AGREEMENT = 0.99
TOOLS = ("torch", "transformers", "onnx", "onnxruntime", "onnxsim")


def convert(source: str | Path, output: str | Path, *, components: list[str] | None = None,
            opset: int = onnx_export.DEFAULT_OPSET, atol: float = DEFAULT_ATOL,
            batch: int | None = None, sequence: int | None = None, simplify: bool = True,
            targets: list[str] | None = None, target_options: dict | None = None,
            family: str | None = None, allow_pickle: bool = False, processor: str | Path | None = None,
            dtype: str = "fp32", external_data: bool = False,
            progress: Callable[[str], None] | None = None, force: bool = False) -> Manifest:
    """Convert ``source`` into a model bundle at ``output``; returns the bundle manifest.

    ``processor``: a folder with the tokenizer / processor files the checkpoint lacks.
    ``dtype``: ``fp32`` (default: weights saved in fp16/bf16 are exported in float32, as Optimum
    does) or ``fp16`` / ``bf16`` (the ONNX weights are stored in that precision).
    ``external_data``: store the weights beside the graph (``model.onnx.data``) even when the model
    fits one protobuf; past 2 GB they always are.
    ``force``: replace an ``output`` holding another artifact (files mmdeploy did not write are
    never deleted)."""
    say = progress or (lambda msg: log.info(msg))
    if dtype not in ("fp32", *onnx_export.WEIGHT_DTYPES):
        raise InputError(f"--dtype {dtype!r} is not supported", "use fp32, fp16 or bf16")
    if str(source).lower().endswith(".onnx"):
        return convert_onnx_file(Path(source), Path(output), atol=atol, targets=targets,
                                 target_options=target_options, progress=say, force=force)
    origin = str(source) if str(source).startswith("demo:") else str(Path(str(source)).resolve())
    check_output(output, force=force, source=origin, format="bundle")  # before the checkpoint loads

    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner
    from mmdeploy.backends.torch import TorchRunner
    from mmdeploy.models import resolve

    if targets:  # validate target names before the slow part
        from mmdeploy.stages.compile import parse_targets

        targets = parse_targets(targets)
    options = {"processor": str(Path(processor).resolve())} if processor else None
    adapter = resolve(source, family=family, allow_pickle=allow_pickle, options=options)
    adapter.processor_dir()  # a bad --processor fails before the slow part
    say(f"loading {adapter.family} checkpoint {source}")
    for note in getattr(adapter, "notes", lambda: [])():  # e.g. preprocessing derived from config.json
        say(note)
    available = adapter.components()
    saved_dtype = _saved_dtype(adapter)
    if saved_dtype in ("float16", "bfloat16") and dtype == "fp32":
        say(f"weights saved in {saved_dtype}: exported in float32 (pass --dtype "
            f"{'fp16' if saved_dtype == 'float16' else 'bf16'} to keep them)")
    chosen = components or list(available)
    unknown = [c for c in chosen if c not in available]
    if unknown:
        raise InputError(f"unknown component {', '.join(map(repr, unknown))} for {adapter.family}",
                         "valid components: " + ", ".join(available))
    source_info = {"path": origin,
                   "sha256": sha256_path(adapter.source) if adapter.source.exists() else None}
    if str(source).startswith("demo:"):
        source_info["resolved"] = str(adapter.source)

    with atomic_output(output, force=force, source=origin, format="bundle") as tmp:
        refs, runners_onnx, runners_torch = [], {}, {}
        for name in chosen:
            component = available[name]
            cdir = tmp / name
            cdir.mkdir()
            start = time.perf_counter()
            say(f"[{name}] exporting to ONNX (opset {opset})" + (", simplifying with onnxsim" if simplify else ""))
            onnx_export.export_component(component, cdir / MODEL_FILE, opset, batch, sequence)
            # past 2 GB the exporter writes one file per weight: gathered into model.onnx.data
            data = onnx_files.consolidate(cdir / MODEL_FILE)
            export_s = time.perf_counter() - start
            if data:
                say(f"[{name}] {onnx_files.model_bytes(cdir / MODEL_FILE) / 1e9:.1f} GB: past ONNX's 2 GB "
                    f"protobuf limit, weights written as external data ({', '.join(data)})")
            passes = [PassRecord(name="export", params={"opset": opset, "batch": batch or "dynamic",
                                                        "sequence": sequence or "dynamic",
                                                        "exporter": "torch.onnx.export(dynamo=False)"},
                                 report={"seconds": round(export_s, 2)})]
            if simplify:
                passes.append(PassRecord(name="simplify", params={"tool": "onnxsim"},
                                         report=onnx_export.simplify(cdir / MODEL_FILE)))
            if external_data and not onnx_files.has_external_data(cdir / MODEL_FILE):
                onnx_files.externalize(cdir / MODEL_FILE)
            data = [f.name for f in onnx_files.data_files(cdir / MODEL_FILE)]
            if data:  # what the manifest's files hold besides the graph
                passes[0].report["external_data"] = data
            weights = None
            if dtype != "fp32":
                say(f"[{name}] storing the weights as {dtype}")
                weights = onnx_export.store_weights(cdir / MODEL_FILE, dtype)
                passes.append(PassRecord(name="weights-dtype", params={"dtype": dtype}, report=weights))
            say(f"[{name}] verifying against PyTorch")
            torch_runner = TorchRunner(component)
            model = onnx_export.load_onnx(cdir / MODEL_FILE)
            inputs, outputs = onnx_export.io_signature(model)
            feeds = adapter.verification_feeds(name)
            ort_runner = OnnxRuntimeRunner(cdir / MODEL_FILE)
            if batch or sequence:  # static shapes: verify on feeds of exactly that shape
                from mmdeploy.backends.base import StaticShapeRunner, fit_static

                feeds = [fit_static(f, inputs) for f in feeds]
                ort_runner = StaticShapeRunner(ort_runner, inputs, outputs)
            cases = [(f, torch_runner.run(f)) for f in feeds]
            save_reference(cdir, cases)
            if weights is not None and weights["weights_dtype"] != saved_dtype:  # rounded: judged by cosine
                parity = verify_runner(ort_runner, cases, atol=None, label=f"onnxruntime/{name}",
                                       min_cosine=0.999)
            else:
                parity = verify_runner(ort_runner, cases, atol=atol, label=f"onnxruntime/{name}")
            manifest = Manifest(
                kind="component", name=name, family=adapter.family, format="onnx", precision=dtype,
                source=source_info, passes=passes, tools=tool_versions(*TOOLS),
                inputs=inputs, outputs=outputs, parity={"reference": "torch", **parity},
                metadata={"model_file": MODEL_FILE, "opset": opset, "modality": component.modality,
                          "dynamic_axes": {k: {str(i): n for i, n in v.items()}
                                           for k, v in component.dynamic_axes.items()},
                          "nodes": len(model.graph.node), "saved_dtype": saved_dtype,
                          "weights_dtype": weights["weights_dtype"] if weights else "float32",
                          "compute_dtype": "float32"},
            )
            write_manifest(cdir, manifest)
            refs.append(ArtifactRef(path=name, component=name, format="onnx", precision=dtype))
            runners_onnx[name], runners_torch[name] = ort_runner, torch_runner
            log.info("[%s] ok: max abs error %.2e", name, max(m["max_abs"] for m in parity["outputs"].values()))

        bundle_parity: dict[str, Any] = {}
        task = set(adapter.task_components())
        if task and task <= set(runners_onnx):
            say("checking the task (zero-shot) from the exported towers against PyTorch")
            bundle_parity["task"] = task_parity(adapter, runners_torch, runners_onnx)
        if hasattr(adapter, "logits_parity") and set(adapter.task_components()) <= set(runners_onnx):
            say("checking logits_per_image from the exported towers and the head against the model's forward")
            bundle_parity["logits_per_image"] = adapter.logits_parity(runners_onnx)
        if getattr(adapter, "pipeline", None) and "encoder" in runners_onnx:
            say("checking sentence_embedding against SentenceTransformer.encode on real sentences")
            library = adapter.library_parity(runners_onnx)
            if library:
                bundle_parity["sentence_embedding"] = library
                if "mean_cosine" in library and library["min_cosine"] < 0.999:
                    from mmdeploy.errors import VerificationError

                    raise VerificationError(
                        f"sentence_embedding differs from SentenceTransformer.encode: min cosine "
                        f"{library['min_cosine']:.5f} on {library['n']} sentences; nothing written",
                        "report it with the model's modules.json")

        preprocess = tmp / "preprocess"
        files = adapter.preprocess_files()
        if files:
            preprocess.mkdir()
            for file in files:
                shutil.copy2(file, preprocess / file.name)
            from mmdeploy.models.preprocess import write_tokenizer_json

            note = write_tokenizer_json(preprocess)  # the runtime reads tokenizer.json alone
            if note:
                say(note)

        metadata = adapter.metadata()
        provenance = adapter.resolve_preprocessing()
        if provenance.parts:
            metadata["preprocessing"] = provenance.record()
            line = provenance.summary()
            if line:
                say(line)
        metadata["dtype"] = {"saved": saved_dtype, "weights": dtype}
        if targets:
            from mmdeploy.stages.compile import compile_bundle

            # the targets' parity checks honour --atol like the ONNX export's
            target_options = {"atol": atol, **(target_options or {})}
            refs += compile_bundle(tmp, targets, target_options, adapter=adapter, progress=say)

        bundle = Manifest(kind="model", name=_model_name(source), family=adapter.family,
                          format="bundle", source=source_info, tools=tool_versions(*TOOLS),
                          parity=bundle_parity, metadata=metadata, artifacts=refs)
        write_manifest(tmp, bundle)
    return bundle


def _saved_dtype(adapter) -> str | None:
    """The float dtype the checkpoint's weights were saved in (None if unknown)."""
    try:
        model = adapter.torch_model()
    except NotImplementedError:
        return None
    return getattr(model, "mmdeploy_saved_dtype", None)


def task_parity(adapter, reference_runners: dict, runners: dict, label: str = "onnxruntime") -> dict:
    """Zero-shot logits and top-1 of ``runners`` against the PyTorch towers'."""
    import numpy as np

    ref = adapter.evaluate(reference_runners)
    got = adapter.evaluate(runners)
    if ref is None or got is None:
        return {"skipped": "the family has no evaluation data here"}
    agreement = got.agreement(ref)
    record = {
        "metric": ref.name, "n": ref.n, "dataset": ref.extra.get("dataset"),
        "reference_value": ref.value, "value": got.value, "top1_agreement": agreement,
        "max_abs_logit_error": float(np.abs(ref.extra["logits"] - got.extra["logits"]).max()),
    }
    if agreement < MIN_TASK_AGREEMENT:
        raise VerificationError(
            f"{label}: zero-shot predictions agree with PyTorch on only {agreement:.1%} of "
            f"{ref.n} images (need {MIN_TASK_AGREEMENT:.0%})",
            "rerun with --debug; the exported towers do not reproduce logits_per_image")
    return record


def _model_name(source) -> str:
    text = str(source)
    if text.startswith("demo:"):
        return text.split(":", 1)[1]
    if ".py:" in text:
        return Path(text.split(".py:")[0]).stem
    return Path(text).resolve().name


def convert_onnx_file(path: Path, output: Path, *, atol: float = DEFAULT_ATOL,
                      targets: list[str] | None = None, target_options: dict | None = None,
                      progress: Callable[[str], None] | None = None, force: bool = False) -> Manifest:
    """An existing .onnx: no export, but checked, run once, and given a manifest.

    With no PyTorch model, the reference outputs are ONNX Runtime's own on random inputs; they
    still let later stages (compile, quantize) verify their artifacts against this graph.
    """
    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner
    from mmdeploy.errors import CheckpointError

    say = progress or (lambda msg: log.info(msg))
    if not path.is_file():
        raise InputError(f"{path} does not exist", "pass an existing .onnx file")
    origin = str(path.resolve())
    check_output(output, force=force, source=origin, format="bundle")
    if targets:
        from mmdeploy.stages.compile import NEEDS_TORCH, parse_targets, tflite_needs_torch

        targets = parse_targets(targets)
        if NEEDS_TORCH & {t.backend for t in targets}:
            raise tflite_needs_torch({"path": str(path)})
    say(f"checking {path}")
    model = onnx_export.load_onnx(path)
    inputs, outputs = onnx_export.io_signature(model)
    name = "model"
    with atomic_output(output, force=force, source=origin, format="bundle") as tmp:
        cdir = tmp / name
        cdir.mkdir()
        onnx_files.copy_model(path, cdir / MODEL_FILE)
        try:
            runner = OnnxRuntimeRunner(cdir / MODEL_FILE)
            cases = [(f, runner.run(f)) for f in (onnx_export.synthesize_feeds(inputs, 1, 1),
                                                  onnx_export.synthesize_feeds(inputs, 2, 2))]
        except Exception as exc:  # noqa: BLE001 - ORT rejects graphs in many ways
            first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
            raise CheckpointError(f"{path} does not run in ONNX Runtime ({first})",
                                  "check the graph with onnx.checker and its opset") from None
        save_reference(cdir, cases)
        source = {"path": str(path.resolve()), "sha256": sha256_path(path)}
        manifest = Manifest(kind="component", name=name, format="onnx", source=source,
                            passes=[PassRecord(name="import", params={"from": "onnx"})],
                            tools=tool_versions("onnx", "onnxruntime"), inputs=inputs, outputs=outputs,
                            parity={"reference": "onnxruntime (no PyTorch model)", "cases": len(cases)},
                            metadata={"model_file": MODEL_FILE, "opset": _opset(model),
                                      "nodes": len(model.graph.node)})
        write_manifest(cdir, manifest)
        refs = [ArtifactRef(path=name, component=name, format="onnx")]
        if targets:
            from mmdeploy.stages.compile import compile_bundle

            refs += compile_bundle(tmp, targets, target_options or {}, adapter=None, progress=say)
        bundle = Manifest(kind="model", name=path.stem, format="bundle", source=source,
                          tools=tool_versions("onnx", "onnxruntime"), artifacts=refs)
        write_manifest(tmp, bundle)
    return bundle


def _opset(model) -> int | None:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    return None
