"""`mmdeploy convert` and `mmdeploy inspect`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmdeploy.cli._common import console, print_json, print_table, quiet, split_list


def register(app: typer.Typer) -> None:
    app.command(help="Convert a checkpoint (HF folder, demo:tiny-clip, file.py:fn, or .onnx) into "
                     "verified per-component ONNX artifacts, optionally compiled for --target.")(convert)
    app.command(help="Summarize an artifact: components, I/O signature, parity, sizes.")(inspect)


def convert(
    source: str = typer.Argument(..., help="Checkpoint folder, demo:tiny-clip, path/file.py:function, or model.onnx"),
    output: Path = typer.Option(..., "--output", "-o", help="Output directory (replaced atomically)"),
    components: Optional[str] = typer.Option(None, help="Comma-separated components, e.g. vision,text"),
    target: Optional[str] = typer.Option(None, "--target", "-t",
                                         help="Also compile for these targets, e.g. openvino,tflite"),
    opset: int = typer.Option(17, min=7, max=23, help="ONNX opset"),
    batch: int = typer.Option(0, min=0, help="Static batch size (0 = dynamic batch axis)"),
    sequence: int = typer.Option(0, min=0, help="Static text sequence length (0 = dynamic)"),
    atol: float = typer.Option(1e-4, min=0.0, help="Max abs error allowed against PyTorch"),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Run onnxsim"),
    family: Optional[str] = typer.Option(None, help="Force the model family instead of auto-detecting"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle",
                                      help="Allow pickled checkpoints that run code when loaded (trusted files only)"),
    processor: Optional[Path] = typer.Option(None, "--processor", metavar="DIR",
                                             help="Take the tokenizer / image processor / feature extractor from "
                                                  "this folder (e.g. the base model that was fine-tuned)"),
    dtype: str = typer.Option("fp32", "--dtype", metavar="DTYPE",
                              help="Precision of the ONNX weights: fp32 (default, also for checkpoints saved in "
                                   "fp16/bf16), or fp16/bf16 to keep them as saved"),
    force: bool = typer.Option(False, "--force", help="Replace an --output holding another artifact (files "
                                                      "mmdeploy did not write are never deleted)"),
    external_data: bool = typer.Option(False, "--external-data",
                                       help="Store the weights beside the graph (model.onnx.data) even when "
                                            "the model fits one file; past 2 GB they always are"),
    json_out: bool = typer.Option(False, "--json", help="Print the bundle manifest as JSON"),
):
    from mmdeploy.stages.convert import convert as run_convert

    with quiet(output, json_out) as say:
        manifest = run_convert(
            source, output, components=split_list(components), opset=opset, atol=atol,
            batch=batch or None, sequence=sequence or None, simplify=simplify,
            targets=split_list(target), family=family, allow_pickle=allow_pickle, processor=processor,
            dtype=dtype.strip().lower(), external_data=external_data, progress=say, force=force,
        )
    if json_out:
        print_json(manifest.model_dump(mode="json"))
    else:
        _print_summary(output)


def inspect(
    artifact: Path = typer.Argument(..., help="A bundle or component directory"),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest(s) as JSON"),
    check: bool = typer.Option(True, "--check/--no-check",
                               help="Verify file hashes (exit 1 when a file changed since written)"),
):
    from mmdeploy.artifact import read_manifest, verify_files
    from mmdeploy.errors import CheckFailed

    manifest = read_manifest(artifact)
    bad = verify_files(artifact) if check else []
    if json_out:
        data = manifest.model_dump(mode="json")
        if check:
            data["modified_files"] = bad
        print_json(data)
    else:
        _print_summary(artifact, check=check)
    if bad:
        raise CheckFailed(f"{artifact}: {', '.join(bad)} changed since the artifact was written",
                          "re-create the artifact (every later stage refuses it without --force)")


def task_summary(task: dict | None) -> dict | None:
    """One vocabulary for the task numbers a manifest records (bundle- and component-level keys)."""
    if not task or "value" not in task:
        return None
    return {
        "metric": task.get("metric") or task.get("name") or "task",
        "n": task.get("n"),
        "dataset": task.get("dataset"),
        "reference": task.get("reference_label") or "PyTorch",
        "reference_value": task.get("reference_value", task.get("pytorch_value")),
        "value": task["value"],
        "agreement": task.get("top1_agreement", task.get("agreement_with_pytorch")),
        "max_abs_logit_error": task.get("max_abs_logit_error"),
        "measured_on": task.get("measured_on"),
    }


def _task_line(task: dict) -> str:
    on = f" ({task['measured_on']})" if task.get("measured_on") else ""
    n = f" on {task['n']} {task.get('dataset') or ''} samples".replace("  ", " ") if task.get("n") else ""
    parts = [f"task {task['metric']}{on}{n}:"]
    if task.get("reference_value") is not None:
        parts.append(f"{task['reference']} {task['reference_value']:.1%},")
    parts.append(f"exported {task['value']:.1%}")
    if task.get("agreement") is not None:
        parts.append(f", agreement {task['agreement']:.1%}")
    if task.get("max_abs_logit_error") is not None:
        parts.append(f", max logit error {task['max_abs_logit_error']:.1e}")
    return " ".join(parts).replace(" ,", ",")


def _print_summary(path: Path, check: bool = False) -> None:
    from rich.table import Table

    from mmdeploy.artifact import artifact_size, component_dirs, read_manifest, verify_files

    out = console()
    top = read_manifest(path)
    what = f"{top.kind} {top.name}" + (f" ({top.family})" if top.family else "")
    out.print(f"{path}: {what}, created by {top.created_by}", markup=False)
    table = Table(show_edge=False)
    for col in ("artifact", "format", "precision", "size", "max abs err", "min cosine", "task (agree)"):
        table.add_column(col, no_wrap=col in ("artifact", "task (agree)"))
    signatures = []
    for cdir, m in component_dirs(path):
        name = cdir.name if cdir != Path(path) else m.name
        parity = m.parity.get("outputs", {}) if isinstance(m.parity.get("outputs"), dict) else {}
        worst = max((v.get("max_abs", 0) for v in parity.values() if isinstance(v, dict)), default=None)
        cos = min((v.get("cosine", 1) for v in parity.values() if isinstance(v, dict)), default=None)
        task = task_summary(m.parity.get("task"))
        precision = (m.metadata.get("quantize") or {}).get("precision") or m.precision  # e.g. "int8 weights, ..."
        table.add_row(name, m.format or "-", precision, _human(artifact_size(cdir)),
                      f"{worst:.1e}" if worst is not None else "-", f"{cos:.6f}" if cos is not None else "-",
                      f"{task['value']:.1%}" + (f" ({task['agreement']:.0%})" if task["agreement"] is not None
                                                else "") if task else "-")
        signatures.append((name, "; ".join([f"in {t.name}: {t.dtype}[{', '.join(map(str, t.shape))}]" for t in m.inputs]
                                           + [f"out {t.name}: {t.dtype}[{', '.join(map(str, t.shape))}]"
                                              for t in m.outputs])))
    print_table(table, out)
    groups: dict[str, list[str]] = {}  # artifacts sharing a signature are listed together
    for name, signature in signatures:
        groups.setdefault(signature, []).append(name)
    out.print("I/O signature:\n" + "\n".join(f"  {', '.join(names)}: {sig}" for sig, names in groups.items()),
              markup=False, highlight=False, soft_wrap=True)
    task = task_summary(top.parity.get("task")) if top.kind == "model" else None
    if task:
        task["measured_on"] = task["measured_on"] or "the ONNX components"
        out.print(_task_line(task), markup=False, soft_wrap=True)
    if check:
        bad = verify_files(path)
        out.print("files: all sha256 match the manifest" if not bad else
                  f"files modified since written: {', '.join(bad)}", markup=False,
                  style=None if not bad else "red")


def _human(size: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(size)
