"""``quantize``: int8 through the libraries that do it well, with nodes kept in float on request.

Methods:

* ``ort-static``: ONNX Runtime static quantization to QDQ (per-channel int8 weights, calibrated
  activations: minmax / entropy / percentile).  One QDQ ONNX that ONNX Runtime, OpenVINO and
  TensorRT explicit quantization all consume (use ``activation_type="int8"`` for TensorRT:
  symmetric signed activations).
* ``ort-dynamic``: ONNX Runtime dynamic quantization (int8 weights, activations quantized at run
  time; no calibration needed), usually after the ``optimize`` pass (ORT-only graph).
* ``nncf``: NNCF post-training quantization of the OpenVINO model (OpenVINO IR, int8).
* ``nncf-weights``: NNCF weight compression to int8 (per-channel), the activations quantized at run
  time by OpenVINO's CPU plugin (dynamic quantization): int8 weights without calibrated ranges,
  so activation outliers cost nothing.
* ``inc``: Intel Neural Compressor accuracy-aware tuning (see :func:`inc_tune`).
* ``tflite``: int8 TFLite via litert-torch / ai-edge-quantizer (needs the torch module).

The accuracy-aware loop (which nodes stay float) lives in :mod:`mmdeploy.stages.quantize`; this pass
quantizes once, excluding ``nodes_to_exclude``; :func:`quantizable_groups` names the blocks the
loop can keep in float.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

from mmdeploy.errors import BackendUnavailable, CalibrationError, UnsupportedError
from mmdeploy.onnx_files import has_external_data, match_mode
from mmdeploy.passes.base import Pass, PassConfig, PassContext, PassResult, op_counts

METHODS = ("ort-static", "ort-dynamic", "nncf", "nncf-weights", "inc", "tflite")
# ops whose int8 versions do the work; elementwise ops are left to ORT's QDQ propagation
WEIGHT_OPS = ("MatMul", "Gemm", "Conv", "Attention")
STATIC_OPS = ["MatMul", "Gemm", "Conv", "Gather"]  # Gather: the embedding tables (most of a small
# text encoder's size) stored int8
DYNAMIC_OPS = ["MatMul", "Gemm", "Attention", "Gather"]
OVERFLOW_FIX = ("first_layer", "enable", "disable")


class QuantizeConfig(PassConfig):
    method: Literal["ort-static", "ort-dynamic", "nncf", "nncf-weights", "inc", "tflite"] = "ort-static"
    calibrate_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = True
    activation_type: Literal["uint8", "int8"] = "uint8"  # int8: symmetric (TensorRT)
    reduce_range: bool = False
    op_types: list[str] | None = None  # None: the method's default
    nodes_to_exclude: list[str] = []
    percentile: float = 99.999
    calibration_samples: int | None = None  # None: all
    nncf_preset: Literal["auto", "mixed", "performance"] = "auto"  # auto: mixed for uint8 activations
    smooth_quant: bool = True  # nncf: SmoothQuant before the MatMuls (outlier channels of real weights)
    smooth_quant_alpha: float | None = None  # nncf: SmoothQuant's migration strength (None: NNCF's default)
    # nncf: 7-bit weights where u8s8 products could saturate int16 (x86 without VNNI); decided by measuring
    overflow_fix: Literal["first_layer", "enable", "disable"] = "first_layer"


class QuantizePass(Pass):
    name = "quantize"
    Config = QuantizeConfig

    def run(self, model_path: Path, output_dir: Path, config: QuantizeConfig,
            context: PassContext) -> PassResult:
        import onnx

        before = op_counts(onnx.load(str(model_path), load_external_data=False))
        runner = {"ort-static": _ort_static, "ort-dynamic": _ort_dynamic, "nncf": _nncf,
                  "nncf-weights": _nncf_weights, "inc": _ort_static, "tflite": _tflite}[config.method]
        result = runner(Path(model_path), Path(output_dir), config, context)
        result.report.setdefault("nodes_excluded", list(config.nodes_to_exclude))
        if result.format == "onnx":
            after = op_counts(onnx.load(str(Path(output_dir) / result.model_file), load_external_data=False))
            result.report["quantized_ops"] = {k: v for k, v in after.items()
                                              if k in ("QuantizeLinear", "DequantizeLinear", "MatMulInteger",
                                                       "ConvInteger", "QAttention", "DynamicQuantizeLinear",
                                                       "DynamicQuantizeMatMul", "QLinearMatMul")}
            result.report["quantizable_nodes"] = sum(before.get(op, 0) for op in WEIGHT_OPS)
        return result


# --------------------------------------------------------------------------- groups


_BLOCK = re.compile(r"^(.*?(?:layers?|blocks?|h)[._/]\d+)[/.]([^/.]+)")


# BERT-style layers name their feed-forward halves apart (``layer.3/intermediate/dense`` and
# ``layer.3/output/dense``; the attention's output projection is ``layer.3/attention/output``):
# one block, like CLIP's ``mlp`` (fc1 + fc2)
_FFN_PARTS = {"intermediate": "ffn", "output": "ffn"}


def node_group(name: str) -> str:
    """The block a node belongs to: ``.../layers.3/self_attn``, ``.../layers.3/mlp`` or a
    BERT-style ``.../layer.3/ffn``; other nodes by their module path
    (``/vision_model/embeddings/patch_embedding``)."""
    match = _BLOCK.match(name)
    if match:
        return f"{match.group(1)}/{_FFN_PARTS.get(match.group(2), match.group(2))}".lstrip("/")
    return (name.rsplit("/", 1)[0] if "/" in name else name).lstrip("/") or name


def quantizable_groups(model_path: Path, op_types: tuple[str, ...] = WEIGHT_OPS) -> "OrderedDict[str, list[str]]":
    """Groups of quantizable nodes (by block), in graph order: the unit kept in float."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    params = {i.name for i in model.graph.initializer}
    groups: OrderedDict[str, list[str]] = OrderedDict()
    for node in model.graph.node:
        if node.op_type in op_types and node.name:
            groups.setdefault(node_group(_scoped_name(node, params)), []).append(node.name)
    return groups


def _scoped_name(node, params: set[str]) -> str:
    """The node's name, or for an unscoped one (``Gemm_8``, made by a graph optimizer) the module
    path of its parameters (``vision_model.encoder.layers.0.mlp.fc1.bias`` -> ``.../layers.0/mlp/fc1``)."""
    if "/" in node.name:
        return node.name
    for name in node.input:
        if name in params and "." in name and name.rsplit(".", 1)[1] in ("weight", "bias"):
            return "/" + name.rsplit(".", 1)[0].replace(".", "/").replace("/layers/", "/layers.").replace(
                "/layer/", "/layer.").replace("/blocks/", "/blocks.").replace("/h/", "/h.") + "/" + node.op_type
    return node.name


def block_label(component: str, group: str) -> str:
    """A block as users name it: ``vision.layers.3.mlp`` for ``vision_model/encoder/layers.3/mlp``."""
    parts = [p for p in group.replace("/", ".").split(".") if p]
    if parts and parts[0].endswith("_model"):
        parts = parts[1:]
    if parts and parts[0] in ("encoder", "decoder"):
        parts = parts[1:]
    return ".".join([component] + parts)


# --------------------------------------------------------------------------- onnxruntime


def _qtypes(config: QuantizeConfig):
    from onnxruntime.quantization import QuantType

    return QuantType.QInt8, (QuantType.QInt8 if config.activation_type == "int8" else QuantType.QUInt8)


@contextlib.contextmanager
def _quiet_ort_quantization():
    """ORT's quantization tools log through the root logger: quiet it while they run, then put the
    caller's level back (the tool never changes a process's logging configuration for good)."""
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _ort_static(model_path: Path, output_dir: Path, config: QuantizeConfig, context: PassContext) -> PassResult:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, quantize_static

    from mmdeploy.passes.calibration import feeds_reader

    feeds = context.calibration[: config.calibration_samples]
    if not feeds:
        raise CalibrationError("static quantization needs calibration data and none was given",
                               "pass --calib PATH, or --method ort-dynamic")
    weight_type, activation_type = _qtypes(config)
    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[config.calibrate_method]
    model = onnx.load(str(model_path), load_external_data=False)
    inputs = [i.name for i in model.graph.input]
    extra: dict[str, Any] = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    if config.activation_type == "int8":
        extra["ActivationSymmetric"] = True
    if config.calibrate_method == "percentile":
        extra["CalibPercentile"] = config.percentile
    cache = None
    if context.work_dir is not None:  # ranges reused when the accuracy loop re-quantizes
        cache = Path(context.work_dir) / f"calibration-{config.calibrate_method}-{len(feeds)}.json"
    out = output_dir / "model.onnx"
    with _quiet_ort_quantization():
        quantize_static(
            str(model_path), str(out), feeds_reader(feeds, inputs),
            quant_format=QuantFormat.QDQ, per_channel=config.per_channel, reduce_range=config.reduce_range,
            weight_type=weight_type, activation_type=activation_type, calibrate_method=method,
            op_types_to_quantize=config.op_types or STATIC_OPS, nodes_to_exclude=config.nodes_to_exclude,
            extra_options=extra, calibration_cache_path=str(cache) if cache else None,
            use_external_data_format=has_external_data(model_path),
        )
    match_mode(out)
    report = {"format": "QDQ", "calibration_samples": len(feeds), "reduce_range": config.reduce_range,
              "weights": "int8 per-channel" if config.per_channel else "int8 per-tensor",
              "activations": config.activation_type + (" symmetric" if config.activation_type == "int8" else "")}
    return PassResult("model.onnx", "onnx", "int8", report)


def _ort_dynamic(model_path: Path, output_dir: Path, config: QuantizeConfig, context: PassContext) -> PassResult:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # ConvInteger is slower than float Conv in ORT on x86 (measured): patch embeddings stay float;
    # Gather: embedding tables int8 (sentence-transformers' own dynamic int8 export does the same)
    exclude = list(config.nodes_to_exclude)
    op_types = config.op_types or DYNAMIC_OPS
    out = output_dir / "model.onnx"
    with _quiet_ort_quantization():
        quantize_dynamic(
            str(model_path), str(out), weight_type=QuantType.QInt8, per_channel=config.per_channel,
            reduce_range=config.reduce_range, op_types_to_quantize=op_types, nodes_to_exclude=exclude,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
            use_external_data_format=has_external_data(model_path),
        )
    match_mode(out)
    report = {"format": "dynamic (MatMulInteger)", "weights": "int8" + (" per-channel" if config.per_channel else ""),
              "activations": "uint8, quantized at run time", "reduce_range": config.reduce_range,
              "embeddings": "int8" if "Gather" in op_types else "float"}
    return PassResult("model.onnx", "onnx", "int8", report)


# --------------------------------------------------------------------------- nncf / openvino


def _nncf(model_path: Path, output_dir: Path, config: QuantizeConfig, context: PassContext) -> PassResult:
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable(f"--method nncf needs nncf and openvino ({exc.name} is missing)",
                                 'pip install "mmdeploy[nncf]"') from None
    feeds = context.calibration[: config.calibration_samples]
    if not feeds:
        raise CalibrationError("NNCF quantization needs calibration data and none was given", "pass --calib PATH")
    ov_model = ov.convert_model(str(model_path))
    inputs = {name for port in ov_model.inputs for name in port.get_names()}
    dataset = nncf.Dataset([{k: v for k, v in f.items() if k in inputs} for f in feeds])
    ignored = None
    if config.nodes_to_exclude:
        ignored = nncf.IgnoredScope(names=_ov_names(ov_model, config.nodes_to_exclude), validate=False)
    preset = config.nncf_preset
    if preset == "auto":
        preset = "mixed" if config.activation_type == "uint8" else "performance"
    from nncf.quantization.advanced_parameters import (
        AdvancedQuantizationParameters, AdvancedSmoothQuantParameters, OverflowFix,
    )

    alphas = {}
    if not config.smooth_quant:
        alphas = {"smooth_quant_alphas": AdvancedSmoothQuantParameters(matmul=-1)}
    elif config.smooth_quant_alpha is not None:
        alphas = {"smooth_quant_alphas": AdvancedSmoothQuantParameters(matmul=config.smooth_quant_alpha)}
    fix = {"first_layer": OverflowFix.FIRST_LAYER, "enable": OverflowFix.ENABLE,
           "disable": OverflowFix.DISABLE}[config.overflow_fix]
    advanced = AdvancedQuantizationParameters(overflow_fix=fix, **alphas)
    quantized = nncf.quantize(
        ov_model, dataset, subset_size=len(feeds), model_type=nncf.ModelType.TRANSFORMER,
        preset=nncf.QuantizationPreset.MIXED if preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE,
        ignored_scope=ignored, advanced_parameters=advanced,
    )
    del ov_model, dataset  # the float model: a second copy of the weights past this point
    ov.save_model(quantized, str(output_dir / "model.xml"), compress_to_fp16=False)
    fq = sum(1 for op in quantized.get_ops() if op.get_type_name() == "FakeQuantize")
    report = {"format": "OpenVINO IR", "fake_quantize_nodes": fq, "calibration_samples": len(feeds),
              "model_type": "transformer", "preset": preset, "smooth_quant": config.smooth_quant,
              "smooth_quant_alpha": config.smooth_quant_alpha, "overflow_fix": config.overflow_fix,
              "weights": "int8 per-channel", "activations": "int8 static (calibrated)"}
    return PassResult("model.xml", "openvino", "int8", report)


# dynamic quantization of the activations of int8-compressed weights, in groups of this many
# channels (OpenVINO's CPU plugin; 0 would turn it off)
DYNAMIC_QUANTIZATION_GROUP = 32


def _nncf_weights(model_path: Path, output_dir: Path, config: QuantizeConfig, context: PassContext) -> PassResult:
    """int8 weights (per-channel, asymmetric) with no calibration: NNCF ``compress_weights``."""
    try:
        import nncf
        import openvino as ov
    except ImportError as exc:
        raise BackendUnavailable(f"--method nncf-weights needs nncf and openvino ({exc.name} is missing)",
                                 'pip install "mmdeploy[nncf]"') from None
    ov_model = ov.convert_model(str(model_path))
    ignored = None
    if config.nodes_to_exclude:
        ignored = nncf.IgnoredScope(names=_ov_names(ov_model, config.nodes_to_exclude), validate=False)
    compressed = nncf.compress_weights(ov_model, mode=nncf.CompressWeightsMode.INT8_ASYM, ignored_scope=ignored)
    compressed.set_rt_info(str(DYNAMIC_QUANTIZATION_GROUP), ["runtime_options", "DYNAMIC_QUANTIZATION_GROUP_SIZE"])
    ov.save_model(compressed, str(output_dir / "model.xml"), compress_to_fp16=False)
    report = {"format": "OpenVINO IR (int8 weights)", "weights": "int8 per-channel (asymmetric)",
              "activations": f"quantized at run time by the CPU plugin (groups of {DYNAMIC_QUANTIZATION_GROUP})",
              "dynamic_quantization_group_size": DYNAMIC_QUANTIZATION_GROUP}
    return PassResult("model.xml", "openvino", "int8", report)


def _ov_names(ov_model, onnx_names: list[str]) -> list[str]:
    """OpenVINO op names for ONNX node names (the frontend keeps them as op names or prefixes)."""
    wanted = set(onnx_names)
    found = [op.get_friendly_name() for op in ov_model.get_ops()
             if op.get_friendly_name() in wanted or op.get_friendly_name().split("/WithoutBiases")[0] in wanted]
    return found or list(onnx_names)


# --------------------------------------------------------------------------- block-search probes


def float_probe(model_file: Path, fmt: str, nodes: list[str], output_dir: Path) -> Path | None:
    """A copy of a quantized model in which ``nodes`` read their activations unquantized (their
    activation quantizers bypassed; weights stay as quantized).  NNCF ranks blocks for its
    accuracy control the same way (quantizer removal, no new calibration): the block search
    measures each block in seconds where a re-quantization costs a calibration pass.  OpenVINO IR
    (FakeQuantize); returns the probe's model file, or None where it cannot be made (another
    format, a model without activation quantizers)."""
    if fmt != "openvino":  # QDQ ONNX: ORT places Q/DQ around more than a block's MatMuls
        return None
    import openvino as ov

    model = ov.Core().read_model(str(model_file))
    wanted, bypassed = set(_ov_names(model, nodes)), 0
    for op in model.get_ops():
        if op.get_friendly_name() in wanted:
            for port in op.inputs():
                source = port.get_source_output().get_node()
                if source.get_type_name() == "FakeQuantize":
                    port.replace_source_output(source.input_value(0))
                    bypassed += 1
    if not bypassed:  # int8 weights only (nncf-weights): no activation quantizer to bypass
        return None
    output_dir.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(output_dir / "model.xml"), compress_to_fp16=False)
    return output_dir / "model.xml"


# --------------------------------------------------------------------------- tflite


def _tflite(model_path: Path, output_dir: Path, config: QuantizeConfig, context: PassContext) -> PassResult:
    """int8 TFLite through litert-torch's PT2E quantizer on the component's PyTorch module
    (``context.metadata["torch_module"]``, inputs positional in ``input_names`` order).

    Per-channel symmetric int8 weights, static int8 activations calibrated on the feeds; the
    graph's inputs and outputs are int8 too (scale/zero point in the .tflite, recorded in the
    manifest as ``io_quantized``): runners quantize feeds and dequantize outputs.
    """
    module = context.metadata.get("torch_module")
    names = context.metadata.get("input_names") or []
    if module is None:
        raise UnsupportedError(
            "--method tflite quantizes the component's PyTorch module, and none is available",
            "keep the checkpoint named in the bundle's source.path (or pass torch_modules= to the API)")
    try:
        import litert_torch
        import torch
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    except ImportError as exc:
        raise BackendUnavailable(f"--method tflite needs litert-torch ({exc.name} is missing)",
                                 'pip install "mmdeploy[tflite]"') from None
    feeds = context.calibration[: config.calibration_samples]
    if not feeds:
        raise CalibrationError("TFLite int8 needs calibration data and none was given", "pass --calib PATH")
    pad = {}
    if context.metadata.get("manifest") is not None:  # static shapes: text padded to one length
        from mmdeploy.backends.tflite import pad_feed, padding_rules

        pad = padding_rules(context.metadata["manifest"], feeds)
        feeds = [{k: pad_feed(pad, k, v) for k, v in f.items()} for f in feeds]

    def args(feed):
        return tuple(torch.from_numpy(feed[n][:1].copy()) for n in names)

    quantizer = PT2EQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=config.per_channel, is_dynamic=False))
    with torch.no_grad():
        exported = torch.export.export(module.eval(), args(feeds[0])).module()
        prepared = prepare_pt2e(exported, quantizer)
        for feed in feeds:
            prepared(*args(feed))
        converted = convert_pt2e(prepared, fold_quantize=False)
        edge = litert_torch.convert(converted, args(feeds[0]), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(output_dir / "model.tflite"))
    report = {"format": "TFLite (litert-torch PT2E)", "weights": "int8 symmetric" + (" per-channel" if config.per_channel else ""),
              "activations": "int8 static", "io_quantized": True, "static_batch": 1, "pad": pad,
              "calibration_samples": len(feeds)}
    return PassResult("model.tflite", "tflite", "int8", report)
