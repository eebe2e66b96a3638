"""A zero-shot classifier bundle for a device: image preprocessing baked into the vision graph
(uint8 HWC image in) and the text embeddings of a fixed label set cached, so the device runs one
graph and a dot product — no PIL, no transformers, no text tower.

    from mmdeploy.stages.zeroshot import zero_shot_bundle, ZeroShotClassifier
    zero_shot_bundle("out/clip-int8", ["cat", "dog"], "out/cats-dogs")   # on the host
    ZeroShotClassifier("out/cats-dogs").classify(image_uint8_hwc)         # on the device

Layout: ``vision/`` (a component artifact: ONNX or OpenVINO IR, input ``image`` uint8
[H, W, 3]), ``zero_shot.json`` (labels, prompt template, logit scale) and ``text_embeds.npy``
(L2-normalized, one row per label).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmdeploy.artifact import MANIFEST_NAME, TensorSpec, atomic_output, read_manifest, write_manifest
from mmdeploy.errors import InputError, UnsupportedError

TEMPLATE = "a photo of a {}."


def _component(bundle: Path, name: str) -> Path:
    m = read_manifest(bundle)
    if m.kind != "model":
        raise InputError(f"{bundle} is one component; a zero-shot bundle needs the model bundle",
                         "pass the directory `mmdeploy convert` or `quantize` wrote")
    ref = next((r for r in m.artifacts if r.component == name and r.target in (None, "onnx", "openvino")
                and r.format in ("onnx", "openvino")), None)
    if ref is None:
        raise UnsupportedError(f"{bundle} has no ONNX/OpenVINO {name} component", "convert the model first")
    return bundle / ref.path


def _bake_openvino(xml: Path, pre_onnx: Path, out_xml: Path) -> None:
    """The preamble in front of an OpenVINO IR's pixel input (an IR cannot be merged as ONNX)."""
    import openvino as ov

    core = ov.Core()
    pre, vision = ov.convert_model(str(pre_onnx)), core.read_model(str(xml))
    param = vision.get_parameters()[0]
    source = pre.get_results()[0].input_value(0)
    for target in list(param.output(0).get_target_inputs()):
        target.replace_source_output(source)
    ov.save_model(ov.Model(vision.get_results(), pre.get_parameters(), "vision_uint8"), str(out_xml),
                  compress_to_fp16=False)


def zero_shot_bundle(bundle: str | Path, labels: list[str], output: str | Path, template: str = TEMPLATE,
                     text_threads: int | None = None) -> Path:
    from mmdeploy.backends import load_runner
    from mmdeploy.passes.calibration import tokenize
    from mmdeploy.passes.preprocess import bake_image_preprocess, preprocess_graph, read_image_config

    bundle = Path(bundle)
    labels = [str(label).strip() for label in labels if str(label).strip()]
    if len(labels) < 2:
        raise InputError("a zero-shot bundle needs at least two labels", "pass --labels cat,dog,...")
    config = read_image_config(bundle / "preprocess")
    vision_dir, text_dir = _component(bundle, "vision"), _component(bundle, "text")
    vm, tm = read_manifest(vision_dir), read_manifest(text_dir)
    text = load_runner(text_dir, threads=text_threads)
    feeds = tokenize([template.format(label) for label in labels], bundle / "preprocess",
                     [t.name for t in tm.inputs], tm.inputs[0].shape)
    embeds = np.concatenate([next(iter(text.run(f).values())) for f in feeds]).astype(np.float32)
    embeds /= np.linalg.norm(embeds, axis=1, keepdims=True)
    bundle_m = read_manifest(bundle)
    meta = bundle_m.metadata or {}
    scale = float((meta.get("head") or {}).get("logit_scale") or meta.get("logit_scale") or 100.0)  # the recorded head
    with atomic_output(Path(output)) as tmp:
        dest = tmp / "vision"
        dest.mkdir()
        model_file = vm.metadata.get("model_file", "model.onnx")
        if vm.format == "onnx":
            bake_image_preprocess(vision_dir / model_file, dest / "model.onnx", config)
            model_file = "model.onnx"
        else:
            import onnx

            onnx.save(preprocess_graph(config, "pixel_values"), str(tmp / "pre.onnx"))
            _bake_openvino(vision_dir / model_file, tmp / "pre.onnx", dest / "model.xml")
            (tmp / "pre.onnx").unlink()
            model_file = "model.xml"
        m = vm.model_copy(deep=True)
        m.inputs = [TensorSpec(name="image", dtype="uint8", shape=["height", "width", 3])]
        m.metadata = {**m.metadata, "model_file": model_file, "preprocess_baked": config, "static_batch": 1}
        if vm.format == "openvino":
            m.metadata["weights_file"] = "model.bin"
        m.parity = {}
        write_manifest(dest, m)
        np.save(tmp / "text_embeds.npy", embeds)
        (tmp / "zero_shot.json").write_text(json.dumps(
            {"labels": labels, "template": template, "logit_scale": scale, "source": str(bundle.resolve()),
             "vision_format": vm.format, "vision_precision": vm.precision}, indent=2))
    return Path(output)


class ZeroShotClassifier:
    """The device side: uint8 HWC image → (label, probabilities), with only the bundle's runtime."""

    def __init__(self, directory: str | Path, threads: int | None = None):
        from mmdeploy.backends import load_runner

        directory = Path(directory)
        if not (directory / "zero_shot.json").is_file() or not (directory / "vision" / MANIFEST_NAME).is_file():
            raise InputError(f"{directory} is not a zero-shot bundle", "build one with zero_shot_bundle()")
        info = json.loads((directory / "zero_shot.json").read_text())
        self.labels, self.scale = info["labels"], float(info["logit_scale"])
        self.text = np.load(directory / "text_embeds.npy")
        self.runner = load_runner(directory / "vision", threads=threads)

    def classify(self, image: np.ndarray) -> tuple[str, np.ndarray]:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"expected a uint8 [H, W, 3] RGB image, got {image.dtype} {list(image.shape)}",
                             "decode the image to RGB uint8 first")
        emb = next(iter(self.runner.run({"image": np.ascontiguousarray(image)}).values())).reshape(-1)
        emb = emb / np.linalg.norm(emb)
        logits = self.scale * self.text @ emb
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        return self.labels[int(np.argmax(probs))], probs

