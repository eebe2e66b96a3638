"""A zero-shot classifier bundle for a device: image preprocessing baked into the vision graph
(uint8 HWC image in) and the text embeddings of a fixed label set cached, so the device runs one
graph and a dot product — no PIL, no transformers, no text tower.

    from mmdeploy.stages.zeroshot import zero_shot_bundle, ZeroShotClassifier
    zero_shot_bundle("out/clip-int8", ["cat", "dog"], "out/cats-dogs")   # on the host
    ZeroShotClassifier("out/cats-dogs").classify(image_uint8_hwc)         # on the device

Layout: ``vision/`` (a component artifact: ONNX or OpenVINO IR, input ``image`` uint8
[H, W, 3]), ``zero_shot.json`` (labels, prompt template, logit scale), ``text_embeds.npy``
(L2-normalized, one row per label) and ``manifest.json`` (a model manifest listing ``vision``).

:func:`bake_bundle` (``mmdeploy bake``) writes the same baked vision into a copy of the whole
bundle instead.  Both verify the baked graph on real photos against the unbaked vision fed with
the bundle's own image processor and record the embedding cosine as the vision's parity.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from mmdeploy.artifact import (LOG_DIR, MANIFEST_NAME, ArtifactRef, Manifest, PassRecord, TensorSpec, atomic_output,
                               read_manifest, sha256_file, tool_versions, write_manifest)
from mmdeploy.errors import CheckFailed, InputError, UnsupportedError

TEMPLATE = "a photo of a {}."
MIN_COSINE = 0.99  # baked vs processor + unbaked vision, per photo
PARITY_PHOTOS = 4  # photos from skimage.data the bake is verified on


def _model_manifest(bundle: Path) -> Manifest:
    m = read_manifest(bundle)
    if m.kind != "model":
        raise InputError(f"{bundle} is one component; baking needs the model bundle",
                         "pass the directory `mmdeploy convert` or `quantize` wrote")
    return m


def _ref(bundle: Path, m: Manifest, name: str = "vision") -> ArtifactRef:
    ref = next((r for r in m.artifacts if r.component == name and r.target in (None, "onnx", "openvino")
                and r.format in ("onnx", "openvino")), None)
    if ref is None:
        raise UnsupportedError(f"{bundle} has no ONNX/OpenVINO {name} component",
                               "pass a bundle written by `mmdeploy convert` or `quantize` on a two-tower model")
    return ref


def _check_source(bundle: Path, m: Manifest, output: Path) -> dict:
    """The bundle's image preprocessing config, after the checks every bake needs (before any work)."""
    from mmdeploy.passes.preprocess import read_image_config

    if Path(output).absolute() == Path(bundle).absolute():
        raise InputError("--output is the input bundle", "write to a new directory; artifacts are never modified")
    if (m.metadata or {}).get("preprocess_baked"):
        raise InputError(f"{bundle} already has its preprocessing baked", "pass the bundle it was baked from")
    if not (bundle / "preprocess" / "preprocessor_config.json").is_file():
        raise InputError(f"{bundle} has no preprocess/preprocessor_config.json (the image processor to bake)",
                         "convert the checkpoint with its processor files (or `mmdeploy convert --processor DIR`)")
    return read_image_config(bundle / "preprocess")


def _bake_openvino(xml: Path, pre_onnx: Path, out_xml: Path) -> None:
    """The preamble in front of an OpenVINO IR's pixel input (an IR cannot be merged as ONNX)."""
    import openvino as ov

    from mmdeploy.backends.openvino import core

    pre, vision = ov.convert_model(str(pre_onnx)), core().read_model(str(xml))
    param = vision.get_parameters()[0]
    source = pre.get_results()[0].input_value(0)
    for target in list(param.output(0).get_target_inputs()):
        target.replace_source_output(source)
    ov.save_model(ov.Model(vision.get_results(), pre.get_parameters(), "vision_uint8"), str(out_xml),
                  compress_to_fp16=False)


def _verify_baked(bundle: Path, vision_dir: Path, baked_dir: Path, min_cosine: float,
                  threads: int | None = None) -> dict:
    """Embedding cosine, per photo, of the baked vision (uint8 image) against the unbaked vision
    fed with the bundle's image processor (mmdeploy's own preprocessing path); CheckFailed below
    ``min_cosine``."""
    from mmdeploy.backends import load_runner
    from mmdeploy.models.preprocess import skimage_photos
    from mmdeploy.passes.calibration import preprocess_images

    photos = skimage_photos()[:PARITY_PHOTOS]
    source = "skimage.data photos"
    if not photos:  # scikit-image missing: procedural images, not squares, so resize and crop both matter
        from PIL import Image

        rng = np.random.default_rng(0)
        photos = [(f"random {i}", Image.fromarray(rng.integers(0, 256, (90 + 20 * i, 70, 3), dtype=np.uint8)))
                  for i in range(PARITY_PHOTOS)]
        source = "random uint8 images"
    vm = read_manifest(vision_dir)
    plain, baked = load_runner(vision_dir, threads=threads), load_runner(baked_dir, threads=threads)
    cosines = []
    for _, image in photos:
        (feeds,) = preprocess_images([image], bundle / "preprocess", vm.inputs[0].shape)
        ref = next(iter(plain.run({vm.inputs[0].name: feeds["pixel_values"]}).values())).reshape(-1)
        got = next(iter(baked.run({"image": np.ascontiguousarray(np.asarray(image, np.uint8))}).values())).reshape(-1)
        cosines.append(float(ref @ got / (np.linalg.norm(ref) * np.linalg.norm(got) + 1e-12)))
    record = {"metric": "cosine", "reference": "unbaked vision on the image processor's pixel_values",
              "images": len(cosines), "source": source, "min": min(cosines), "mean": float(np.mean(cosines)),
              "threshold": min_cosine, "passed": min(cosines) >= min_cosine}
    if not record["passed"]:
        raise CheckFailed(f"baked preprocessing changes the vision embedding: cosine {min(cosines):.5f} "
                          f"< {min_cosine} on {source}",
                          "run the image processor on the host instead (the processor may not be bakeable exactly)")
    return record


def bake_vision(bundle: Path, vision_dir: Path, dest: Path, min_cosine: float = MIN_COSINE,
                threads: int | None = None) -> Manifest:
    """Write ``vision_dir`` (an ONNX or OpenVINO vision component of ``bundle``) into ``dest``
    with the bundle's image preprocessing in front (input ``image`` uint8 [H, W, 3]), verify it
    (:func:`_verify_baked`) and write its manifest (parity = the cosine record)."""
    import onnx

    from mmdeploy.passes.preprocess import OPSET, bake_image_preprocess, preprocess_graph, read_image_config

    config = read_image_config(bundle / "preprocess")
    vm = read_manifest(vision_dir)
    if not vm.inputs or len(vm.inputs) != 1:
        raise UnsupportedError(f"{vision_dir}: the vision component takes {len(vm.inputs)} inputs, baking needs one",
                               "run the image processor on the host instead")
    dest.mkdir(parents=True)
    model_file = vm.metadata.get("model_file", "model.onnx" if vm.format == "onnx" else "model.xml")
    resize = "matmul"  # PIL-exact on every runtime (OpenVINO ignores Resize's antialias: passes.preprocess)
    if vm.format == "onnx":
        bake_image_preprocess(vision_dir / model_file, dest / "model.onnx", config, vm.inputs[0].name, resize)
        model_file = "model.onnx"
    else:
        pre = dest.parent / f".{dest.name}-pre.onnx"
        onnx.save(preprocess_graph(config, "pixel_values", resize=resize), str(pre))
        try:
            _bake_openvino(vision_dir / model_file, pre, dest / "model.xml")
        finally:
            pre.unlink(missing_ok=True)
        model_file = "model.xml"
    m = vm.model_copy(deep=True)
    m.inputs = [TensorSpec(name="image", dtype="uint8", shape=["height", "width", 3])]
    m.metadata = {**m.metadata, "model_file": model_file, "preprocess_baked": {**config, "resize": resize},
                  "static_batch": 1}
    if vm.format == "openvino":
        m.metadata["weights_file"] = "model.bin"
    elif "opset" in m.metadata:  # the merge lifts the graph to Resize's opset at least
        m.metadata["opset"] = max(int(m.metadata["opset"]), OPSET)
    m.metadata.pop("dynamic_axes", None)  # pixel_values' axes; the image's are in inputs
    m.parent = {"path": str(vision_dir.resolve()), "manifest_sha256": sha256_file(vision_dir / MANIFEST_NAME)}
    m.tools = {**m.tools, **tool_versions("onnx", "onnxruntime", "openvino")}
    m.parity = {}
    write_manifest(dest, m)  # the runner below reads it
    m.parity = {"preprocess_baked": _verify_baked(bundle, vision_dir, dest, min_cosine, threads)}
    m.passes = list(m.passes) + [PassRecord(name="bake_preprocess", params=config, report=m.parity["preprocess_baked"])]
    return write_manifest(dest, m)


def bake_bundle(bundle: str | Path, output: str | Path, min_cosine: float = MIN_COSINE,
                log: Callable[[str], None] = print) -> Manifest:
    """A copy of ``bundle`` whose ONNX / OpenVINO vision artifacts take the uint8 HWC ``image``
    (`mmdeploy bake`); the other components and preprocess/ copied unchanged.  Vision artifacts
    in other formats (TFLite, TensorRT) would still take pixel_values: they are left out (listed
    in the bake record)."""
    bundle, output = Path(bundle), Path(output)
    m = _model_manifest(bundle)
    _check_source(bundle, m, output)
    _ref(bundle, m)  # at least one bakeable vision
    vision = [r for r in m.artifacts if r.component == "vision"]
    baked = [r for r in vision if r.format in ("onnx", "openvino")]
    dropped = [r.path for r in vision if r not in baked]
    with atomic_output(output) as tmp:
        log(f"copy {bundle.name} (all but vision)")
        for item in bundle.iterdir():
            if item.name in {r.path for r in vision} | {MANIFEST_NAME, LOG_DIR} or item.name.startswith("."):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        for r in vision:  # nested paths (dir/vision) came along with their folder
            shutil.rmtree(tmp / r.path, ignore_errors=True)
        refs, records = {}, {}
        for r in baked:
            log(f"bake preprocessing into {r.path} ({r.format} {r.precision}) and verify it")
            cm = bake_vision(bundle, bundle / r.path, tmp / r.path, min_cosine)
            refs[r.path] = ArtifactRef(path=r.path, component="vision", format=cm.format, precision=cm.precision,
                                       target=r.target)
            records[r.path] = cm.parity["preprocess_baked"]
        out = m.model_copy(deep=True)
        out.artifacts = [refs.get(r.path, r) for r in m.artifacts if r.component != "vision" or r.path in refs]
        out.parent = {"path": str(bundle.resolve()), "manifest_sha256": sha256_file(bundle / MANIFEST_NAME)}
        out.metadata = {**out.metadata, "preprocess_baked": cm.metadata["preprocess_baked"]}
        first = next(iter(records.values()))
        out.parity = {**out.parity, "preprocess_baked": {
            **{k: first[k] for k in ("metric", "reference", "images", "source", "threshold")},
            "min": min(v["min"] for v in records.values()), "passed": True,
            "artifacts": {path: v["min"] for path, v in records.items()}}}
        out.passes = list(out.passes) + [PassRecord(name="bake_preprocess", params={"component": "vision"},
                                                    report={"baked": list(refs), "dropped": dropped})]
        out.tools = {**out.tools, **tool_versions("onnx", "onnxruntime", "openvino")}
        return write_manifest(tmp, out)


def _check_labels(labels: list[str], template: str) -> list[str]:
    labels = [str(label).strip() for label in labels if str(label).strip()]
    if len(labels) < 2:
        raise InputError(f"a zero-shot bundle needs at least two labels, got {len(labels)}",
                         'pass --labels "cat,dog,..." or a --labels-file with one label per line')
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise InputError(f"labels repeated: {', '.join(repeated)}", "give each label once")
    try:
        ok = "{}" in template and template.format("x") != template
    except (IndexError, KeyError, ValueError):
        ok = False
    if not ok:
        raise InputError(f"--template {template!r} has no {{}} for the label (or other braces)",
                         'use e.g. --template "a photo of a {}."')
    return labels


def zero_shot_bundle(bundle: str | Path, labels: list[str], output: str | Path, template: str = TEMPLATE,
                     text_threads: int | None = None, log: Callable[[str], None] = lambda msg: None) -> Path:
    from mmdeploy.backends import load_runner
    from mmdeploy.passes.calibration import tokenize

    bundle, output = Path(bundle), Path(output)
    labels = _check_labels(labels, template)
    bundle_m = _model_manifest(bundle)
    _check_source(bundle, bundle_m, output)
    vref = _ref(bundle, bundle_m)
    vision_dir, text_dir = bundle / vref.path, bundle / _ref(bundle, bundle_m, "text").path
    vm, tm = read_manifest(vision_dir), read_manifest(text_dir)
    meta = bundle_m.metadata or {}
    scale = float((meta.get("head") or {}).get("logit_scale") or meta.get("logit_scale") or 100.0)  # the recorded head
    bias = (meta.get("head") or {}).get("logit_bias")  # SigLIP: per-label sigmoid probabilities
    info = {"labels": labels, "template": template, "logit_scale": scale, "logit_bias": bias,
            "source": str(bundle.resolve()),
            "vision_format": vm.format, "vision_precision": vm.precision}
    with atomic_output(output) as tmp:  # checks --output before any work
        log(f"embed {len(labels)} labels with the text tower")
        text = load_runner(text_dir, threads=text_threads)
        feeds = tokenize([template.format(label) for label in labels], bundle / "preprocess",
                         [t.name for t in tm.inputs], tm.inputs[0].shape)
        embeds = np.concatenate([next(iter(text.run(f).values())) for f in feeds]).astype(np.float32)
        embeds /= np.linalg.norm(embeds, axis=1, keepdims=True)
        log(f"bake preprocessing into the vision ({vm.format} {vm.precision}) and verify it")
        vision = bake_vision(bundle, vision_dir, tmp / "vision")
        np.save(tmp / "text_embeds.npy", embeds)
        (tmp / "zero_shot.json").write_text(json.dumps(info, indent=2))
        write_manifest(tmp, Manifest(
            kind="model", name=f"{bundle_m.name}-zero-shot", family=bundle_m.family, precision=vm.precision,
            parent={"path": str(bundle.resolve()), "manifest_sha256": sha256_file(bundle / MANIFEST_NAME)},
            artifacts=[ArtifactRef(path="vision", component="vision", format=vision.format,
                                   precision=vision.precision, target=vref.target)],
            parity={"preprocess_baked": vision.parity["preprocess_baked"]},
            metadata={"zero_shot": {k: v for k, v in info.items() if k != "source"},
                      "preprocess_baked": vision.metadata["preprocess_baked"]},
            tools=tool_versions("onnx", "onnxruntime", "openvino")))
    return output


class ZeroShotClassifier:
    """The device side: uint8 HWC image → (label, probabilities), with only the bundle's runtime
    (a thin view of :class:`mmdeploy.runtime.Model` for a zero-shot bundle)."""

    def __init__(self, directory: str | Path, threads: int | None = None):
        from mmdeploy.runtime import Model

        directory = Path(directory)
        if not (directory / "zero_shot.json").is_file() or not (directory / "vision" / MANIFEST_NAME).is_file():
            raise InputError(f"{directory} is not a zero-shot bundle (no zero_shot.json and vision/)",
                             "build one with `mmdeploy zeroshot BUNDLE --labels ... -o DIR`")
        self.model = Model(directory, threads=threads)
        self.labels = list(self.model.zero_shot["labels"])
        self.scale = float(self.model.zero_shot["logit_scale"])
        self.runner = self.model.runner("vision")

    def classify(self, image: np.ndarray) -> tuple[str, np.ndarray]:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"expected a uint8 [H, W, 3] RGB image, got {image.dtype} {list(image.shape)}",
                             "decode the image to RGB uint8 first")
        (result,) = self.model.classify([image])
        probs = {row["label"]: row["probability"] for row in result["top"]}
        return result["label"], np.asarray([probs[label] for label in self.labels])


def classify_files(directory: str | Path, images: list[str | Path], top: int = 1,
                   threads: int | None = None, labels: list[str] | None = None,
                   template: str | None = None) -> dict:
    """`mmdeploy classify`: every file decoded first (through :mod:`mmdeploy.data.media`), then
    ``{"results": [{"image", "label", "top": [{"label", "probability"}]}], "skipped": [{"file",
    "reason"}], "bundle"}``.  An unreadable file is skipped and listed, never the whole batch;
    InputError when none decodes.  A zero-shot bundle classifies into its own labels; any
    image-text bundle into ``labels``."""
    from mmdeploy.data.media import decode_images
    from mmdeploy.runtime import Model
    from mmdeploy.runtime.images import to_rgb_array

    if top < 1:
        raise InputError(f"--top {top} must be at least 1", "pass --top 1 or more")
    directory = Path(directory)
    if labels is None and not (directory / "zero_shot.json").is_file():
        raise InputError(f"{directory} is not a zero-shot bundle (no zero_shot.json), so it has no labels",
                         'pass --labels "cat,dog,...", or build one with `mmdeploy zeroshot BUNDLE --labels ... -o DIR`')
    if labels is not None:
        labels = _check_labels(labels, template or TEMPLATE)
    model = Model(directory, threads=threads)
    decoded, kept, skipped = decode_images([Path(p) for p in images])
    if not decoded:
        first = skipped[0]
        many = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise InputError(f"{first['file']}: {first['reason']}{many}", "pass image files (PNG, JPEG, WebP, ...)")
    results = model.classify([to_rgb_array(image) for image in decoded], labels, template, top=top)
    return {"results": [{"image": str(images[index]), **row} for index, row in zip(kept, results)],
            "skipped": skipped, "bundle": str(directory)}
