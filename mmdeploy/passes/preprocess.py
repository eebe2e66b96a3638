"""Bake image preprocessing into a vision graph: uint8 HWC image in, the tower's output out.

A CLIP-style image processor (``preprocessor_config.json``: resize the shortest edge, center
crop, rescale, normalize) becomes ONNX ops in front of the graph, so a device needs neither PIL
nor transformers: ``image`` uint8 [H, W, 3] (any size) → Resize (bicubic, antialiased, as PIL
does) → center crop → (x/255 - mean) / std → ``pixel_values`` → the tower.  The input is one
image (batch 1: the deployment this is for).

Two forms of the resize.  ``"matmul"`` (the default): PIL's separable antialiased bicubic as two
weight matrices built in the graph (horizontal pass, round to uint8, vertical pass, as PIL does),
only for the rows and columns the crop keeps; it matches the HF processor to one level of 255 on
ONNX Runtime and OpenVINO alike.  ``"onnx"``: ONNX's Resize op with ``antialias=1``, about 2x
faster on ONNX Runtime (4.4 vs 7.5 ms for 640x480 → 224, one thread) but ~0.003 off, and
OpenVINO (2026.4, CPU) reads the antialias attribute without applying it — measured: its output
equals the non-antialiased resize, 17 levels of 255 off on a 512→32 downscale — so a baked ONNX
graph later compiled to OpenVINO would silently alias.  Hence matmul wherever the graph may go.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmdeploy.errors import InputError, UnsupportedError

OPSET = 18  # Resize's antialias attribute


def read_image_config(path: Path) -> dict:
    """size (shortest edge) or a fixed (h, w) resize, crop (h, w), mean, std, rescale from a
    preprocessor_config.json: CLIP's shortest edge + center crop, or SigLIP's / BLIP's resize to
    height x width (then ``short`` is None and ``size`` holds (h, w))."""
    path = Path(path)
    if path.is_dir():
        path = path / "preprocessor_config.json"
    if not path.is_file():
        raise InputError(f"no image processor config at {path}", "pass the bundle's preprocess/ folder")
    cfg = json.loads(path.read_text())
    size = cfg.get("size", {})
    short = size.get("shortest_edge") if isinstance(size, dict) else size
    crop = cfg.get("crop_size") or {}
    fixed = isinstance(size, dict) and not short and size.get("height") and size.get("width")
    bicubic = int(cfg.get("resample", 3)) == 3
    if fixed and bicubic:
        hw = (int(size["height"]), int(size["width"]))
        crop = (int(crop["height"]), int(crop["width"])) if cfg.get("do_center_crop") and crop else hw
        return {"short": None, "size": hw, "crop": crop,
                "mean": [float(v) for v in cfg.get("image_mean", [0.0, 0.0, 0.0])],
                "std": [float(v) for v in cfg.get("image_std", [1.0, 1.0, 1.0])],
                "rescale": float(cfg.get("rescale_factor", 1 / 255))}
    if not short or not cfg.get("do_center_crop", True) or not crop or not bicubic:
        raise UnsupportedError(f"{path}: only bicubic shortest-edge resize + center crop or resize-to-size "
                               "processors can be baked", "run the processor on the host instead")
    return {"short": int(short), "crop": (int(crop["height"]), int(crop["width"])),
            "mean": [float(v) for v in cfg.get("image_mean", [0.0, 0.0, 0.0])],
            "std": [float(v) for v in cfg.get("image_std", [1.0, 1.0, 1.0])],
            "rescale": float(cfg.get("rescale_factor", 1 / 255))}


RESIZE_FORMS = ("onnx", "matmul")


def preprocess_graph(config: dict, output: str = "pixel_values", resize: str = "matmul"):
    """The preamble as an ONNX model: ``image`` uint8 [H, W, 3] → ``output`` float [1, 3, h, w]."""
    from onnx import TensorProto, helper, numpy_helper

    if resize not in RESIZE_FORMS:
        raise ValueError(f"resize must be one of {RESIZE_FORMS}, not {resize!r}")
    if resize == "matmul" or config.get("short") is None:  # a fixed-size resize: matmul only
        return _matmul_graph(config, output)

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


def _matmul_graph(config: dict, output: str):
    """PIL's antialiased bicubic resize + center crop as MatMuls with weights computed in the graph
    (the input size is dynamic), then rescale and normalize."""
    from onnx import TensorProto, helper, numpy_helper

    ch, cw = config["crop"]
    nodes, inits = [], []
    n = helper.make_node

    def const(name, value, dtype=np.float32):
        inits.append(numpy_helper.from_array(np.asarray(value, dtype), name))
        return name

    def op(kind, inputs, out, **attrs):
        nodes.append(n(kind, inputs, [out], **attrs))
        return out

    f = TensorProto.FLOAT
    for name, value in (("half", 0.5), ("one", 1.0), ("two", 2.0), ("zero", 0.0), ("c255", 255.0),
                        ("a", -0.5), ("a2", 1.5), ("a3", 2.5), ("five", 5.0), ("eight", 8.0), ("four", 4.0)):
        const(f"pp_{name}", value)
    fixed = config.get("short") is None  # resize to config["size"] (h, w), not by the shortest edge
    if not fixed:
        const("pp_short", config["short"], np.int64)
    const("pp_i0", 0, np.int64), const("pp_i1", 1, np.int64), const("pp_i2", 2, np.int64)
    const("pp_ax0", [0], np.int64)
    op("Cast", ["image"], "pp_f", to=f)
    op("Transpose", ["pp_f"], "pp_chw", perm=[2, 0, 1])  # [3, H, W]
    op("Shape", ["image"], "pp_shape")
    op("Gather", ["pp_shape", "pp_i0"], "pp_h")
    op("Gather", ["pp_shape", "pp_i1"], "pp_w")
    op("Min", ["pp_h", "pp_w"], "pp_min")

    def axis_weights(tag: str, length: str, crop: int, target: int | None) -> str:
        """[length, crop] weights: column k = output pixel start + k of PIL's resample."""
        t = lambda x: f"pp_{tag}_{x}"  # noqa: E731
        if target is not None:
            const(t("new"), target, np.int64)
        else:
            op("Mul", [length, "pp_short"], t("ls"))
            op("Div", [t("ls"), "pp_min"], t("new"))  # integer: the processor truncates the long edge
        op("Sub", [t("new"), const(t("crop"), crop, np.int64)], t("margin"))
        op("Div", [t("margin"), "pp_i2"], t("start"))
        op("Cast", [length], t("lf"), to=f)
        op("Cast", [t("new")], t("nf"), to=f)
        op("Cast", [t("start")], t("sf"), to=f)
        op("Div", [t("lf"), t("nf")], t("scale"))
        op("Max", [t("scale"), "pp_one"], t("fs"))  # PIL: filterscale = max(scale, 1)
        op("Mul", [t("fs"), "pp_two"], t("support"))  # bicubic support 2
        op("Add", [t("sf"), const(t("iota"), np.arange(crop))], t("i"))  # output pixels kept by the crop
        op("Add", [t("i"), "pp_half"], t("ih"))
        op("Mul", [t("ih"), t("scale")], t("center"))
        op("Sub", [t("center"), t("support")], t("lo0"))
        op("Add", [t("lo0"), "pp_half"], t("lo1"))
        op("Floor", [t("lo1")], t("lo2"))
        op("Max", [t("lo2"), "pp_zero"], t("xmin"))
        op("Add", [t("center"), t("support")], t("hi0"))
        op("Add", [t("hi0"), "pp_half"], t("hi1"))
        op("Floor", [t("hi1")], t("hi2"))
        op("Min", [t("hi2"), t("lf")], t("xmax"))
        op("Range", ["pp_zero", t("lf"), "pp_one"], t("j0"))
        op("Unsqueeze", [t("j0"), const(t("ax1"), [1], np.int64)], t("j"))  # [L, 1]
        op("Sub", [t("j"), t("center")], t("d0"))  # [L, crop]
        op("Add", [t("d0"), "pp_half"], t("d1"))
        op("Div", [t("d1"), t("fs")], t("d2"))
        op("Abs", [t("d2")], t("x"))
        # Keys cubic, a = -0.5: |x|<1: ((a+2)|x| - (a+3))x² + 1;  1<=|x|<2: a(|x|³ - 5|x|² + 8|x| - 4)
        op("Mul", [t("x"), "pp_a2"], t("p0"))
        op("Sub", [t("p0"), "pp_a3"], t("p1"))
        op("Mul", [t("x"), t("x")], t("x2"))
        op("Mul", [t("p1"), t("x2")], t("p2"))
        op("Add", [t("p2"), "pp_one"], t("near"))
        op("Sub", [t("x"), "pp_five"], t("q0"))
        op("Mul", [t("q0"), t("x")], t("q1"))
        op("Add", [t("q1"), "pp_eight"], t("q2"))
        op("Mul", [t("q2"), t("x")], t("q3"))
        op("Sub", [t("q3"), "pp_four"], t("q4"))
        op("Mul", [t("q4"), "pp_a"], t("far"))
        op("Less", [t("x"), "pp_one"], t("is_near"))
        op("Less", [t("x"), "pp_two"], t("is_in"))
        op("Where", [t("is_near"), t("near"), t("far")], t("k0"))
        op("Where", [t("is_in"), t("k0"), "pp_zero"], t("k1"))
        op("GreaterOrEqual", [t("j"), t("xmin")], t("ge"))
        op("Less", [t("j"), t("xmax")], t("lt"))
        op("And", [t("ge"), t("lt")], t("window"))
        op("Where", [t("window"), t("k1"), "pp_zero"], t("k2"))
        op("ReduceSum", [t("k2"), "pp_ax0"], t("norm"), keepdims=1)
        return op("Div", [t("k2"), t("norm")], t("weights"))

    size = config.get("size") if fixed else (None, None)
    ww = axis_weights("w", "pp_w", cw, size[1])  # [W, cw]
    wh = axis_weights("h", "pp_h", ch, size[0])  # [H, ch]
    op("MatMul", ["pp_chw", ww], "pp_x1")  # [3, H, cw]: horizontal pass
    op("Round", ["pp_x1"], "pp_x2")  # PIL keeps the intermediate image as uint8
    op("Clip", ["pp_x2", "pp_zero", "pp_c255"], "pp_x3")
    # a real uint8 image in between (exact: integers 0..255); it also keeps OpenVINO's CPU plugin from
    # running the vertical pass -- and the window arithmetic feeding it -- in bf16 under a bf16
    # inference hint (measured: up to 105 levels off without it, 0 with it)
    op("Cast", ["pp_x3"], "pp_x3u", to=TensorProto.UINT8)
    op("Cast", ["pp_x3u"], "pp_x3f", to=f)
    op("Transpose", [wh], "pp_wht", perm=[1, 0])  # [ch, H]
    op("MatMul", ["pp_wht", "pp_x3f"], "pp_y1")  # [3, ch, cw]: vertical pass
    op("Round", ["pp_y1"], "pp_y2")
    op("Clip", ["pp_y2", "pp_zero", "pp_c255"], "pp_y3")
    op("Unsqueeze", ["pp_y3", "pp_ax0"], "pp_y4")
    op("Mul", ["pp_y4", const("pp_rescale", config["rescale"])], "pp_scaled")
    op("Sub", ["pp_scaled", const("pp_mean", np.reshape(config["mean"], (1, 3, 1, 1)))], "pp_centered")
    op("Div", ["pp_centered", const("pp_std", np.reshape(config["std"], (1, 3, 1, 1)))], output)
    graph = helper.make_graph(
        nodes, "image_preprocess_matmul",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["height", "width", 3])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [1, 3, ch, cw])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)


def bake_image_preprocess(model_path: Path, out_path: Path, config: dict, input_name: str = "pixel_values",
                          resize: str = "matmul") -> Path:
    """``model_path`` (an ONNX vision graph taking ``input_name``) with the preamble in front."""
    import onnx
    from onnx import compose, version_converter

    from mmdeploy import onnx_files

    model = onnx_files.load_graph(model_path)  # external weights are copied over, not loaded
    if input_name not in [i.name for i in model.graph.input]:
        raise InputError(f"{model_path} has no input {input_name!r}", "bake preprocessing into the vision tower")
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), OPSET)
    if version < OPSET:
        model = version_converter.convert_version(model, OPSET)
    pre = preprocess_graph(config, output="pp_pixel_values", resize=resize)
    pre.ir_version = model.ir_version
    for opset in model.opset_import:  # contrib / QDQ domains travel along
        if opset.domain not in ("", "ai.onnx"):
            pre.opset_import.append(onnx.helper.make_opsetid(opset.domain, opset.version))
    original = onnx.ModelProto()
    original.CopyFrom(model)  # the graph only: its weights stay on disk
    with onnx_files.checkable(model):  # merge_models checks the merged graph in memory
        merged = compose.merge_models(pre, model, io_map=[("pp_pixel_values", input_name)])
    onnx_files.restore_weights(merged, original)
    onnx_files.save_with_data(merged, Path(model_path).parent, Path(out_path))
    onnx_files.check(out_path)
    return Path(out_path)
