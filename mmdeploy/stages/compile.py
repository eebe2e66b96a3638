"""Compile ONNX component artifacts into backend artifacts (the `--target` of convert/compile).

Target syntax: ``onnxruntime,openvino,tflite,tensorrt``; a precision may be named
(``openvino:fp16`` or ``openvino-fp16``).  A bare backend name gives its default precisions
(OpenVINO and TFLite: fp32 and fp16; ONNX Runtime and TensorRT: fp32).  Each component gets one
directory per target and precision inside the bundle: ``<component>-<backend>[-<precision>]``
(``vision-openvino``, ``vision-openvino-fp16``, ``text-tflite``, ``vision-tensorrt``), each verified
against the PyTorch reference kept with the ONNX parent.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable, Iterable

from mmdeploy.artifact import (LOG_DIR, MANIFEST_NAME, ArtifactRef, Manifest, atomic_output, check_output,
                               read_manifest,
                               write_manifest)
from mmdeploy.errors import InputError, UnsupportedError, VerificationError

# valid precisions per backend (first = what a bare name gives, with the rest of DEFAULTS)
PRECISIONS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("fp32",),
    "openvino": ("fp32", "fp16"),
    "tflite": ("fp32", "fp16"),
    "tensorrt": ("fp32", "fp16", "int8"),
}
DEFAULTS: dict[str, tuple[str, ...]] = {
    "onnxruntime": ("fp32",), "openvino": ("fp32", "fp16"), "tflite": ("fp32", "fp16"), "tensorrt": ("fp32",),
}
INSTALL = {
    "onnxruntime": "core dependency (pip install mmdeploy)",
    "openvino": 'pip install "mmdeploy[openvino]"',
    "tflite": 'pip install "mmdeploy[tflite]"',
    "tensorrt": "pip install tensorrt on a machine with an NVIDIA GPU",
}
NEEDS_TORCH = {"tflite"}  # litert-torch converts from the PyTorch module
MIN_TASK_AGREEMENT = 0.99  # fp32 targets vs PyTorch on the family's task (zero-shot top-1)


class TargetSpec(str):
    """A backend and precision; as a string, the artifact suffix ("openvino", "openvino-fp16")."""

    backend: str
    precision: str

    def __new__(cls, backend: str, precision: str = "fp32"):
        spec = super().__new__(cls, backend if precision == "fp32" else f"{backend}-{precision}")
        spec.backend, spec.precision = backend, precision
        return spec

    @property
    def suffix(self) -> str:
        return str(self)

    def __repr__(self) -> str:
        return f"TargetSpec({self.backend!r}, {self.precision!r})"


def _valid_names() -> str:
    return ", ".join(PRECISIONS) + " (optionally with :precision, e.g. openvino:fp16)"


def parse_targets(value: str | Iterable[str] | None) -> list[TargetSpec]:
    """'openvino,tflite:fp16' -> TargetSpecs; InputError listing the valid names."""
    from mmdeploy.backends import ALIASES

    if value is None:
        raise InputError("no --target given", "valid targets: " + _valid_names())
    items = value.split(",") if isinstance(value, str) else [i for v in value for i in str(v).split(",")]
    specs: list[TargetSpec] = []
    for raw in (i.strip().lower() for i in items):
        if not raw:
            continue
        name, _, precision = raw.partition(":")
        if not precision and "-" in name and name.rsplit("-", 1)[1] in ("fp32", "fp16", "int8"):
            name, precision = name.rsplit("-", 1)
        backend = ALIASES.get(name, name)
        if backend not in PRECISIONS:
            raise InputError(f"unknown target {raw!r}", "valid targets: " + _valid_names())
        if precision and precision not in PRECISIONS[backend]:
            raise InputError(f"target {backend} has no precision {precision!r}",
                             f"{backend} precisions: {', '.join(PRECISIONS[backend])}")
        for p in [precision] if precision else DEFAULTS[backend]:
            spec = TargetSpec(backend, p)
            if spec not in specs:
                specs.append(spec)
    if not specs:
        raise InputError("empty --target", "valid targets: " + _valid_names())
    return specs


def list_targets() -> list[dict[str, Any]]:
    """Every backend: available or not, and why (what to install)."""
    from mmdeploy.backends import get_backend

    rows = []
    for name in PRECISIONS:
        backend = get_backend(name)
        ok, reason = backend.available()
        rows.append({"target": name, "available": ok, "reason": reason, "format": backend.format,
                     "precisions": list(PRECISIONS[name]), "install": INSTALL[name],
                     "extra": backend.extra,
                     "note": "off-device: writes a TensorRT-ready bundle" if name == "tensorrt" else ""})
    return rows


def onnx_components(bundle_dir: Path) -> list[tuple[str, Path, Manifest]]:
    """(component name, directory, manifest) of the ONNX components of a bundle (being built)."""
    bundle_dir = Path(bundle_dir)
    found = []
    if (bundle_dir / MANIFEST_NAME).is_file() and read_manifest(bundle_dir).kind == "model":
        for ref in read_manifest(bundle_dir).artifacts:
            if ref.format == "onnx" and ref.target in (None, "onnx"):
                found.append((ref.component, bundle_dir / ref.path, read_manifest(bundle_dir / ref.path)))
        return found
    for sub in sorted(p for p in bundle_dir.iterdir() if (p / MANIFEST_NAME).is_file()):
        manifest = read_manifest(sub)
        if manifest.kind == "component" and manifest.format == "onnx" and manifest.target in (None, "onnx"):
            found.append((manifest.metadata.get("component", sub.name), sub, manifest))
    return found


def compile_bundle(bundle_dir: Path, targets: list[str] | list[TargetSpec] | str, options: dict[str, Any] | None = None,
                   adapter=None, progress: Callable[[str], None] | None = None) -> list[ArtifactRef]:
    """Write ``<component>-<target>`` artifacts next to the bundle's ONNX components.

    Called by ``convert --target`` (on the bundle being built, adapter given) and by
    ``mmdeploy compile`` (on a copy).  Returns the refs to add to the bundle manifest.
    """
    from mmdeploy.backends import get_backend

    say = progress or (lambda msg: None)
    bundle_dir = Path(bundle_dir)
    options = dict(options or {})
    if isinstance(targets, list) and targets and all(isinstance(t, TargetSpec) for t in targets):
        specs = list(targets)
    else:
        specs = parse_targets(targets)
    components = onnx_components(bundle_dir)
    if not components:
        if _already_compiled(bundle_dir, specs):  # e.g. quantize --method auto chose OpenVINO IRs
            return []
        raise InputError(f"{bundle_dir} holds no ONNX component", "pass a bundle written by `mmdeploy convert`")
    wanted = options.get("components")
    if wanted:
        unknown = sorted(set(wanted) - {c for c, _, _ in components})
        if unknown:
            raise InputError(f"no component {', '.join(unknown)} in {bundle_dir}",
                             "components: " + ", ".join(c for c, _, _ in components))
        components = [c for c in components if c[0] in wanted]

    backends = {s.backend: get_backend(s.backend) for s in specs}
    for name, backend in backends.items():  # fail before writing anything
        if name != "tensorrt":
            backend.require()
    torch_components = {}
    if NEEDS_TORCH & set(backends):
        if adapter is None:
            raise tflite_needs_torch(read_manifest(bundle_dir).source)
        torch_components = adapter.components()
    if not options.get("sequence_length"):  # TFLite's static length, TensorRT's max: the model's max
        options["sequence_length"] = model_max_length(bundle_dir, adapter)

    refs: list[ArtifactRef] = []
    for component, onnx_dir, _ in components:
        for spec in specs:
            out = bundle_dir / f"{onnx_dir.name}-{spec.suffix}"  # e.g. vision-openvino, vision-int8-openvino
            if out.exists():
                shutil.rmtree(out)
            out.mkdir(parents=True)
            say(f"[{component}] compiling for {spec.suffix}")
            opts = {**options, "precision": spec.precision, "component": component,
                    "torch_component": torch_components.get(component)}
            try:
                manifest = backends[spec.backend].compile(onnx_dir, out, opts)
            except BaseException:
                shutil.rmtree(out, ignore_errors=True)
                raise
            refs.append(ArtifactRef(path=out.name, component=component, format=manifest.format or spec.backend,
                                    precision=manifest.precision, target=spec.backend))
    if adapter is not None and options.get("evaluate", True):
        say("checking the task on each target against PyTorch")
        record_task_agreement(bundle_dir, refs, adapter, options.get("eval_limit"))
    return refs


def _already_compiled(bundle_dir: Path, specs: list[TargetSpec]) -> bool:
    """Every component of the bundle is already in each requested backend's format."""
    from mmdeploy.targets import BACKEND_FORMATS

    manifest_path = Path(bundle_dir) / MANIFEST_NAME
    if not manifest_path.is_file() or read_manifest(bundle_dir).kind != "model":
        return False
    refs = read_manifest(bundle_dir).artifacts
    return bool(refs) and all(r.format in BACKEND_FORMATS.get(s.backend, ()) for r in refs for s in specs)


def record_task_agreement(bundle_dir: Path, refs: list[ArtifactRef], adapter, limit: int | None = None,
                          torch_reference: bool = True) -> dict:
    """For families with a task (zero-shot top-1...): each target's task metric and its agreement
    with PyTorch, written into the parity of that target's component manifests.

    The reference is the PyTorch towers, or, for an adapter without weights
    (``torch_reference=False``), the bundle's fp32 ONNX components, themselves verified against
    PyTorch at convert time.
    """
    from mmdeploy.backends import load_runner
    from mmdeploy.backends.torch import TorchRunner

    try:
        needed = tuple(adapter.task_components())
        if not needed:
            return {}
        if torch_reference:
            torch_components = adapter.components()
            ref_runners = {c: TorchRunner(torch_components[c]) for c in needed}
        else:
            sources = {c: d for c, d, m in onnx_components(bundle_dir) if m.precision == "fp32"}
            if not set(needed) <= set(sources):
                return {}
            ref_runners = {c: load_runner(sources[c]) for c in needed}
        reference = adapter.evaluate(ref_runners, limit=limit)
    except NotImplementedError:
        return {}
    if reference is None:
        return {}
    results = {}
    by_target: dict[tuple[str, str], dict[str, ArtifactRef]] = {}
    for ref in refs:
        by_target.setdefault((ref.target or "", ref.precision), {})[ref.component] = ref
    for key, group in by_target.items():
        if not set(needed) <= set(group) or group[needed[0]].format == "tensorrt-bundle":
            continue
        result = adapter.evaluate({c: load_runner(bundle_dir / group[c].path) for c in needed}, limit=limit)
        agreement = result.agreement(reference)
        task = {"name": result.name, "value": result.value, "n": result.n,
                "pytorch_value": reference.value, "agreement_with_pytorch": agreement,
                "reference": "pytorch" if torch_reference else "fp32 onnx (verified against pytorch)"}
        label = "-".join(k for k in key if k and k != "fp32") or "?"
        results[label] = task
        if key[1] == "fp32" and not agreement >= MIN_TASK_AGREEMENT:  # reduced precision: reported only
            raise VerificationError(
                f"{label}: {result.name} predictions agree with PyTorch on only {agreement:.1%} of "
                f"{result.n} samples (need {MIN_TASK_AGREEMENT:.0%})",
                "the artifact passed per-output parity; inspect its manifests and rerun with --debug")
        for c in needed:
            directory = bundle_dir / group[c].path
            manifest = read_manifest(directory)
            manifest.parity = {**manifest.parity, "task": task}
            write_manifest(directory, manifest)
    return results


def model_max_length(bundle_dir: Path, adapter=None) -> int | None:
    """The model's maximum text length (CLIP's ``text_max_length``, an encoder's
    ``max_position_embeddings``), from the adapter or the bundle manifest; None if unknown."""
    metas = []
    if adapter is not None:
        try:
            metas.append(adapter.metadata() or {})
        except Exception:  # noqa: BLE001 - metadata is a nicety here
            pass
    try:
        metas.append(read_manifest(bundle_dir).metadata or {})
    except InputError:
        pass
    for meta in metas:
        value = meta.get("text_max_length") or (meta.get("config") or {}).get("max_position_embeddings")
        if isinstance(value, int) and value > 0:
            return value
    return None


def tflite_needs_torch(source: dict | None) -> UnsupportedError:
    """The one-line error when TFLite has no PyTorch module to convert, with what would work."""
    path = str((source or {}).get("path") or "")
    if path.lower().endswith(".onnx"):
        return UnsupportedError(
            f"TFLite needs the PyTorch module, and {Path(path).name} is an ONNX file (litert-torch converts "
            "from PyTorch, not ONNX)",
            "convert the PyTorch checkpoint (a Hugging Face folder or file.py:function) with --target tflite; "
            "for this ONNX use --target onnxruntime, openvino or tensorrt")
    if path:
        return UnsupportedError(
            f"TFLite needs the PyTorch module, and the bundle's source {path} no longer exists",
            f"restore {path.split('.py:')[0] + '.py' if '.py:' in path else path} (or convert the checkpoint "
            "again with --target tflite)")
    return UnsupportedError("TFLite needs the PyTorch module, and this bundle records no source checkpoint",
                            "convert the PyTorch checkpoint with --target tflite")


def _source_exists(path: str) -> bool:
    if path.startswith("demo:"):
        return True
    if ".py:" in path:  # file.py:function
        path = path.rsplit(":", 1)[0]
    return Path(path).exists()


def adapter_from_source(manifest: Manifest, processor: str | None = None):
    """The torch-capable adapter for a bundle, re-resolved from its source if it still exists."""
    from mmdeploy.models import resolve

    path = (manifest.source or {}).get("path")
    if not path or str(path).lower().endswith(".onnx") or not _source_exists(str(path)):
        return None
    options = dict((manifest.metadata or {}).get("options") or {})
    if processor:
        options["processor"] = str(processor)
    return resolve(path, family=manifest.family, options=options)


def _bundle_adapter(bundle_dir: Path, processor: str | None = None):
    """The family adapter over a bundle's preprocess files (no weights), if the family has one."""
    from mmdeploy.errors import MMDeployError
    from mmdeploy.models import adapter_for_bundle

    try:
        return adapter_for_bundle(bundle_dir, {"processor": processor})
    except (MMDeployError, NotImplementedError):
        return None


def compile_artifact(artifact: str | Path, targets: str | list[str], output: str | Path,
                     options: dict[str, Any] | None = None, adapter=None,
                     progress: Callable[[str], None] | None = None) -> Manifest:
    """`mmdeploy compile`: copy a bundle (or wrap one ONNX component) into ``output`` and add
    the backend artifacts; atomic, so a failure leaves nothing at ``output``."""
    source = Path(artifact)
    manifest = read_manifest(source)
    specs = parse_targets(targets)
    if manifest.kind == "component" and manifest.format != "onnx":
        raise InputError(f"{source} is a {manifest.format} artifact; compile starts from ONNX",
                         "pass the bundle or its ONNX component")
    processor = (options or {}).get("processor")
    if processor:
        from mmdeploy.models.preprocess import processor_dir_of

        processor_dir_of({"processor": processor})  # a bad --processor fails before any work
    origin = {"force": bool((options or {}).get("force")), "source": (manifest.source or {}).get("path")}
    check_output(output, **origin)  # before any work
    if adapter is None and NEEDS_TORCH & {s.backend for s in specs}:
        adapter = adapter_from_source(manifest, processor)
    with atomic_output(output, **origin) as tmp:
        if manifest.kind == "model":
            shutil.copytree(source, tmp, dirs_exist_ok=True, ignore=lambda d, names: [LOG_DIR] if Path(d) == source else [])
            bundle = manifest
        else:
            name = manifest.metadata.get("component", source.name)
            shutil.copytree(source, tmp / name)
            bundle = Manifest(kind="model", name=manifest.name, family=manifest.family, source=manifest.source,
                              tools=manifest.tools, metadata={"from_component": str(source)},
                              artifacts=[ArtifactRef(path=name, component=name, format="onnx",
                                                     precision=manifest.precision)])
        refs = compile_bundle(tmp, specs, options, adapter, progress=progress)
        evaluate = (options or {}).get("evaluate", True) and (tmp / "preprocess").is_dir()
        if adapter is None and manifest.kind == "model" and evaluate:  # task data needs preprocess/
            task_adapter = _bundle_adapter(tmp, processor)
            if task_adapter is not None:
                if progress:
                    progress("checking the task on each target against the fp32 ONNX")
                record_task_agreement(tmp, refs, task_adapter, (options or {}).get("eval_limit"),
                                      torch_reference=False)
        new = {r.path for r in refs}
        bundle.artifacts = [a for a in bundle.artifacts if a.path not in new] + refs
        bundle.metadata = {**bundle.metadata, "compiled": [r.path for r in refs]}  # this run's additions
        write_manifest(tmp, bundle)
        if (options or {}).get("eval_data"):  # --eval: every target on the user's set, written beside
            bundle.metadata["eval"] = eval_summary(tmp, options, Path(output).name)
            write_manifest(tmp, bundle)
    return bundle


def eval_summary(bundle_dir: Path, options: dict, name: str | None = None) -> dict:
    """``mmdeploy eval`` of every target in ``bundle_dir`` on ``options["eval_data"]`` (eval.json)."""
    import json

    from mmdeploy.stages.eval import run_eval

    doc = run_eval([bundle_dir], options["eval_data"], options.get("eval_task", "auto"),
                   options.get("templates"), limit=options.get("eval_limit"), threads=options.get("threads"),
                   names=[name or bundle_dir.name])
    (bundle_dir / "eval.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    key = doc["primary_metric"]
    return {"data": doc["data"]["path"], "task": doc["task"], "metric": key, "file": "eval.json",
            "results": {r["artifact"]: {"value": r["metrics"][key]["value"], "ci95": r["metrics"][key]["ci95"],
                                        "n": r["metrics"][key]["n"], "agreement": r["agreement"]}
                        for r in doc["results"]}}
