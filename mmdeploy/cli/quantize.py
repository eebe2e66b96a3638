"""`mmdeploy quantize ARTIFACT --int8|--fp16 --output DIR`: calibrated int8 that keeps accuracy."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mmdeploy.cli._common import console, print_json, print_table, quiet, split_list

METHODS = ["auto", "ort-static", "ort-dynamic", "nncf", "nncf-weights", "inc", "tflite"]


def register(app: typer.Typer) -> None:
    @app.command("quantize")
    def quantize_cmd(
        artifact: Path = typer.Argument(..., help="A `convert` output (every component is quantized) "
                                        "or one component's directory."),
        output: Path = typer.Option(..., "--output", "-o", help="Directory for the new artifact."),
        int8: bool = typer.Option(False, "--int8", help="int8 weights (the default): blocks the accuracy guard "
                                  "keeps in float are listed; if no int8 route holds the budget, exit 1."),
        fp16: bool = typer.Option(False, "--fp16", help="float16 weights and compute, float32 I/O."),
        precision: Optional[str] = typer.Option(None, "--precision", help="int8 (as --int8), fp16 (as --fp16) or "
                                                "auto: the fastest artifact of any precision that holds the budget "
                                                "(float routes such as OpenVINO bf16 compete with int8)."),
        method: str = typer.Option("auto", "--method", help="auto (build every route that runs on the target, "
                                   "keep those within the budget, pick the fastest measured), ort-static (calibrated "
                                   "QDQ for ORT/OpenVINO/TensorRT), ort-dynamic (+ ORT fusions), nncf (OpenVINO IR), "
                                   "nncf-weights (int8 weights, activations quantized at run time), "
                                   "inc (Neural Compressor tuning), tflite (litert-torch, needs the checkpoint)."),
        calibrate_method: str = typer.Option("minmax", "--calibrate-method",
                                             help="ort-static: minmax, entropy or percentile."),
        calib: Optional[List[Path]] = typer.Option(None, "--calib", help="Folder of images, captions .txt file or "
                                                   "folder of audio clips (default: the family's bundled set); "
                                                   "repeat it to give each tower its own (images + captions)."),
        calib_limit: int = typer.Option(32, "--calib-limit", help="At most this many calibration samples."),
        processor: Optional[Path] = typer.Option(None, "--processor", metavar="DIR",
                                                 help="Tokenizer / image processor / feature extractor from this "
                                                 "folder (when the bundle was converted without them)."),
        components: Optional[str] = typer.Option(None, "--components", help="Only these components, e.g. vision."),
        accuracy_budget: Optional[float] = typer.Option(
            None, "--accuracy-budget", help="Task points of drop allowed (default 0.5 pp zero-shot top-1), "
            "or, without a task metric, the minimum embedding cosine (default 0.99)."),
        metric: str = typer.Option("auto", "--metric", help="auto, task or cosine."),
        eval_data: Optional[str] = typer.Option(
            None, "--eval", help="Your evaluation set for the guard (ImageFolder, .csv/.jsonl of image,caption, "
            "builtin:NAME); --accuracy-budget is then in points of its metric (acc1, recall@1)."),
        eval_task: str = typer.Option("auto", "--eval-task", help="auto, classification or retrieval."),
        templates: Optional[Path] = typer.Option(None, "--templates", help="Prompt templates for --eval ({c})."),
        no_accuracy_aware: bool = typer.Option(False, "--no-accuracy-aware",
                                               help="Quantize everything; fail if the budget does not hold."),
        max_float_blocks: int = typer.Option(8, "--max-float-blocks", help="Most blocks kept in float."),
        search_seconds: float = typer.Option(120.0, "--search-seconds", min=0,
                                             help="Time for block searches (per route's sensitivity; with auto, "
                                                  "for searches of routes once another route holds)."),
        exclude: Optional[str] = typer.Option(None, "--exclude", help="Node names always kept in float."),
        per_channel: bool = typer.Option(True, "--per-channel/--per-tensor",
                                          help="Weight scales per output channel (default) or one per tensor."),
        activation_type: str = typer.Option("uint8", "--activation-type",
                                            help="uint8 (CPU) or int8 (symmetric, for TensorRT)."),
        optimize: Optional[bool] = typer.Option(None, "--optimize/--no-optimize",
                                                help="ORT transformer fusions (ONNX Runtime only; default: "
                                                "on for ort-dynamic)."),
        nncf_preset: str = typer.Option("auto", "--nncf-preset", help="nncf: mixed (asymmetric activations), "
                                        "performance (symmetric: fewer ops) or auto (mixed for uint8)."),
        smooth_quant: bool = typer.Option(True, "--smooth-quant/--no-smooth-quant",
                                          help="nncf: SmoothQuant before the MatMuls (default on)."),
        target: Optional[str] = typer.Option(None, "--target", help="--method auto: choose for this target "
                                             "profile (measured on the device when its agent is reachable, else "
                                             "the profile's preference); default: this machine."),
        latency_runs: int = typer.Option(10, "--latency-runs", help="Runs for the latency column (0: skip)."),
        force: bool = typer.Option(False, "--force", help="Use an artifact whose files changed since it was written; "
                                   "replace an --output holding another artifact."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ):
        """Quantize a converted model (int8 or fp16); sensitive blocks stay float until the budget holds."""
        from mmdeploy.errors import InputError
        from mmdeploy.stages.quantize import QuantizeOptions, quantize

        if int8 and fp16:
            raise InputError("--int8 and --fp16 are exclusive", "pick one")
        if precision is not None and precision not in ("int8", "fp16", "auto"):
            raise InputError(f"--precision {precision!r} is not valid", "choose one of: int8, fp16, auto")
        if precision is not None and ((int8 and precision != "int8") or (fp16 and precision != "fp16")):
            raise InputError(f"--precision {precision} contradicts {'--int8' if int8 else '--fp16'}", "pass one of them")
        precision = precision or ("fp16" if fp16 else "int8")
        for name, value, allowed in (("--method", method, METHODS),
                                     ("--calibrate-method", calibrate_method, ["minmax", "entropy", "percentile"]),
                                     ("--metric", metric, ["auto", "task", "cosine"]),
                                     ("--activation-type", activation_type, ["uint8", "int8"]),
                                     ("--nncf-preset", nncf_preset, ["auto", "mixed", "performance"])):
            if value not in allowed:
                raise InputError(f"{name} {value!r} is not valid", "choose one of: " + ", ".join(allowed))
        if calib_limit < 1:
            raise InputError("--calib-limit must be at least 1")
        options = QuantizeOptions(
            precision=precision, method=method, calibrate_method=calibrate_method,
            per_channel=per_channel, activation_type=activation_type, optimize=optimize, calib=list(calib) if calib else None,
            calib_limit=calib_limit, processor=processor, components=split_list(components), metric=metric,
            accuracy_budget=accuracy_budget, accuracy_aware=not no_accuracy_aware,
            max_float_blocks=max_float_blocks, nodes_to_exclude=split_list(exclude) or [], search_seconds=search_seconds,
            latency_runs=latency_runs, target=target, eval_data=eval_data, eval_task=eval_task, templates=templates,
            nncf_preset=nncf_preset, smooth_quant=smooth_quant,
        )
        from mmdeploy.artifact import check_output, ensure_unmodified

        ensure_unmodified(artifact, force, log=lambda msg: typer.echo(msg, err=True))
        check_output(output, force=force, parent=artifact.resolve())  # before any work
        with quiet(output, json_out) as say:  # library progress bars (NNCF) go to the log
            manifest = quantize(artifact, output, options, log=say or (lambda msg: None))
        summary = manifest.metadata.get("quantize_summary") or manifest.metadata.get("quantize")
        if json_out:
            print_json({"output": str(output), "precision": manifest.precision, "summary": summary})
            return
        _print_summary(summary, output)


def _print_summary(summary: dict, output: Path) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"quantize ({summary['method']}) → {output}")
    for col in ("component", "size fp32", "size quantized", "cosine", "latency fp32", "latency quantized"):
        table.add_column(col, justify="left" if col == "component" else "right")
    for row in summary["components"]:
        lat = lambda k: f"{row[k]:.2f} ms" if k in row else "-"  # noqa: E731
        table.add_row(row["component"], f"{row['size_fp32'] / 1e6:.2f} MB", f"{row['size_quantized'] / 1e6:.2f} MB",
                      f"{row['cosine']:.5f}", lat("latency_ms_fp32"), lat("latency_ms_quantized"))
    print_table(table, out)
    auto = summary.get("auto")
    if auto:
        out.print(f"auto: {auto['chosen']} — {auto['reason']}", soft_wrap=True)
        if auto.get("target") not in (None, "this machine"):  # measured on the device, or why not
            out.print(f"  {auto['how']}", soft_wrap=True)
        for cand in auto["candidates"]:
            if cand.get("skipped"):
                out.print(f"  {cand['name']}: skipped ({cand['skipped']})", soft_wrap=True)
            elif cand.get("error"):
                out.print(f"  {cand['name']}: failed ({cand['error']})", soft_wrap=True)
            else:
                lat = f"{cand['latency_ms']:.2f} ms" if cand.get("latency_ms") is not None else "not timed"
                if cand.get("skipped_on_device"):
                    lat = f"not timed on the device ({cand['skipped_on_device']})"
                out.print(f"  {cand['name']}: {lat}, accuracy {cand['accuracy']['value']:.5f}"
                          f"{'' if cand['holds_budget'] else ' (over budget)'}", soft_wrap=True)
    acc = summary["accuracy"]
    if acc["metric"] == "task":
        out.print(f"{acc['task']}: fp32 {acc['fp32']:.2f} % → {acc['value']:.2f} % "
                  f"(drop {acc['drop']:.2f} pp, budget {acc['budget']:g} pp)")
    else:
        out.print(f"embedding cosine {acc['value']:.5f} (budget ≥ {acc['budget']:g})")
    fmt = (lambda v: f"{v:.2f} %") if acc["metric"] == "task" else (lambda v: f"cosine {v:.6f}")  # noqa: E731
    for block in summary["float_blocks"]:
        out.print(f"kept in float: {block.get('label') or block['component'] + ':' + block['block']} "
                  f"({len(block['nodes'])} nodes): "
                  f"{fmt(block['metric_before'])} → {fmt(block['metric_after'])}", soft_wrap=True)
    if not summary["float_blocks"]:
        out.print("kept in float: nothing (the budget held with every block quantized)")
    for row in summary["components"]:
        if row.get("weights"):
            out.print(f"{row['component']}: weights {row['weights']}; activations {row.get('activations', '-')}",
                      soft_wrap=True)
    if summary.get("int8_isa"):
        out.print(f"int8 instructions on this CPU: {summary['int8_isa']}", soft_wrap=True)
