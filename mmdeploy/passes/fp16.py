"""``fp16``: float16 weights and compute, float32 inputs/outputs (ONNX Runtime's converter).

Ops known to lose accuracy in fp16 can be kept in float32 with ``op_block_list``.
"""

from __future__ import annotations

from pathlib import Path

from mmdeploy.passes.base import Pass, PassConfig, PassContext, PassResult, op_counts, save_onnx


class Fp16Config(PassConfig):
    keep_io_types: bool = True  # feeds and outputs stay float32
    op_block_list: list[str] = []  # op types kept in float32 (besides the converter's defaults)
    node_block_list: list[str] = []


class Fp16Pass(Pass):
    name = "fp16"
    Config = Fp16Config

    def run(self, model_path: Path, output_dir: Path, config: Fp16Config,
            context: PassContext) -> PassResult:
        import onnx
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

        model = onnx.load(str(model_path))
        size_before = model.ByteSize()
        converted = convert_float_to_float16(
            model, keep_io_types=config.keep_io_types,
            op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(config.op_block_list)) or None,
            node_block_list=config.node_block_list or None,
        )
        from mmdeploy.onnx_files import has_external_data

        # the form it came in (external data stays external), or external when past 2 GB
        save_onnx(converted, Path(output_dir) / "model.onnx", has_external_data(model_path) or None)
        report = {"bytes_before": size_before, "bytes_after": converted.ByteSize(),
                  "casts_added": op_counts(converted).get("Cast", 0) - op_counts(model).get("Cast", 0)}
        return PassResult("model.onnx", "onnx", "fp16", report)
