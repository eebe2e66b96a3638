"""Bake image preprocessing into a vision graph: uint8 HWC image in, the tower's output out.

A CLIP-style image processor (``preprocessor_config.json``: resize the shortest edge, center
crop, rescale, normalize) becomes ONNX ops in front of the graph, so a device needs neither PIL
nor transformers: ``image`` uint8 [H, W, 3] (any size) → Resize (bicubic, antialiased, as PIL
does) → center crop → (x/255 - mean) / std → ``pixel_values`` → the tower.  The input is one
image (batch 1: the deployment this is for).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmdeploy.errors import InputError, UnsupportedError

OPSET = 18  # Resize's antialias attribute


def read_image_config(path: Path) -> dict:
    """size (shortest edge), crop (h, w), mean, std, rescale from a preprocessor_config.json."""
    path = Path(path)
    if path.is_dir():
        path = path / "preprocessor_config.json"
    if not path.is_file():
        raise InputError(f"no image processor config at {path}", "pass the bundle's preprocess/ folder")
    cfg = json.loads(path.read_text())
    size = cfg.get("size", {})
    short = size.get("shortest_edge") if isinstance(size, dict) else size
    crop = cfg.get("crop_size") or {}
    if not short or not cfg.get("do_center_crop", True) or not crop:
        raise UnsupportedError(f"{path}: only shortest-edge resize + center crop processors can be baked",
                               "run the processor on the host instead")
    return {"short": int(short), "crop": (int(crop["height"]), int(crop["width"])),
            "mean": [float(v) for v in cfg.get("image_mean", [0.0, 0.0, 0.0])],
            "std": [float(v) for v in cfg.get("image_std", [1.0, 1.0, 1.0])],
            "rescale": float(cfg.get("rescale_factor", 1 / 255))}


def preprocess_graph(config: dict, output: str = "pixel_values"):
    """The preamble as an ONNX model: ``image`` uint8 [H, W, 3] → ``output`` float [1, 3, h, w]."""
    from onnx import TensorProto, helper, numpy_helper

    ch, cw = config["crop"]

    def const(name, value, dtype=np.float32):
        return numpy_helper.from_array(np.asarray(value, dtype), name)

    inits = [
        const("pp_short", [config["short"]], np.int64),
        const("pp_lead", [1, 3], np.int64), const("pp_crop", [ch, cw], np.int64), const("pp_two", [2], np.int64),
        const("pp_s2", [2], np.int64), const("pp_s4", [4], np.int64), const("pp_axes", [2, 3], np.int64),
        const("pp_zero", 0.0), const("pp_255", 255.0), const("pp_rescale", config["rescale"]),
        const("pp_mean", np.reshape(config["mean"], (1, 3, 1, 1))),
        const("pp_std", np.reshape(config["std"], (1, 3, 1, 1))), const("pp_ax0", [0], np.int64),
    ]
    n = helper.make_node
    nodes = [
        n("Cast", ["image"], ["pp_f"], to=TensorProto.FLOAT),
        n("Transpose", ["pp_f"], ["pp_chw"], perm=[2, 0, 1]),
        n("Unsqueeze", ["pp_chw", "pp_ax0"], ["pp_x"]),
        n("Shape", ["pp_x"], ["pp_shape"]),
        n("Slice", ["pp_shape", "pp_s2", "pp_s4"], ["pp_hw"]),
        # integer arithmetic (exact, and transformers truncates the long edge the same way)
        n("ReduceMin", ["pp_hw", "pp_ax0"], ["pp_min"], keepdims=1),
        n("Mul", ["pp_hw", "pp_short"], ["pp_hw_s"]),
        n("Div", ["pp_hw_s", "pp_min"], ["pp_new"]),
        n("Concat", ["pp_lead", "pp_new"], ["pp_sizes"], axis=0),
        n("Resize", ["pp_x", "", "", "pp_sizes"], ["pp_resized"], mode="cubic", antialias=1, cubic_coeff_a=-0.5,
          coordinate_transformation_mode="half_pixel"),
        n("Round", ["pp_resized"], ["pp_round"]),  # PIL returns uint8
        n("Clip", ["pp_round", "pp_zero", "pp_255"], ["pp_u8"]),
        n("Sub", ["pp_new", "pp_crop"], ["pp_margin"]),
        n("Div", ["pp_margin", "pp_two"], ["pp_start"]),
        n("Add", ["pp_start", "pp_crop"], ["pp_end"]),
        n("Slice", ["pp_u8", "pp_start", "pp_end", "pp_axes"], ["pp_crop_out"]),
        n("Mul", ["pp_crop_out", "pp_rescale"], ["pp_scaled"]),
        n("Sub", ["pp_scaled", "pp_mean"], ["pp_centered"]),
        n("Div", ["pp_centered", "pp_std"], [output]),
    ]
    graph = helper.make_graph(
        nodes, "image_preprocess",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["height", "width", 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 3, ch, cw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def bake_image_preprocess(model_path: Path, out_path: Path, config: dict, input_name: str = "pixel_values") -> Path:
    """``model_path`` (an ONNX vision graph taking ``input_name``) with the preamble in front."""
    import onnx
    from onnx import compose, version_converter

    model = onnx.load(str(model_path))
    if input_name not in [i.name for i in model.graph.input]:
        raise InputError(f"{model_path} has no input {input_name!r}", "bake preprocessing into the vision tower")
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if version < OPSET:
        model = version_converter.convert_version(model, OPSET)
    pre = preprocess_graph(config, output="pp_pixel_values")
    pre.ir_version = model.ir_version
    for opset in model.opset_import:  # contrib / QDQ domains travel along
        if opset.domain not in ("", "ai.onnx"):
            pre.opset_import.append(onnx.helper.make_opsetid(opset.domain, opset.version))
    merged = compose.merge_models(pre, model, io_map=[("pp_pixel_values", input_name)])
    onnx.checker.check_model(merged)
    onnx.save(merged, str(out_path))
    return Path(out_path)
