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
    opset: int = typer.Option(17, help="ONNX opset"),
    batch: int = typer.Option(0, help="Static batch size (0 = dynamic batch axis)"),
    sequence: int = typer.Option(0, help="Static text sequence length (0 = dynamic)"),
    atol: float = typer.Option(1e-4, help="Max abs error allowed against PyTorch"),
    simplify: bool = typer.Option(True, "--simplify/--no-simplify", help="Run onnxsim"),
    family: Optional[str] = typer.Option(None, help="Force the model family instead of auto-detecting"),
    allow_pickle: bool = typer.Option(False, "--allow-pickle",
                                      help="Allow pickled checkpoints that run code when loaded (trusted files only)"),
    json_out: bool = typer.Option(False, "--json", help="Print the bundle manifest as JSON"),
):
    from mmdeploy.stages.convert import convert as run_convert

    with quiet(output, json_out) as say:
        manifest = run_convert(
            source, output, components=split_list(components), opset=opset, atol=atol,
            batch=batch or None, sequence=sequence or None, simplify=simplify,
            targets=split_list(target), family=family, allow_pickle=allow_pickle, progress=say,
        )
    if json_out:
        print_json(manifest.model_dump(mode="json"))
    else:
        _print_summary(output)


def inspect(
    artifact: Path = typer.Argument(..., help="A bundle or component directory"),
    json_out: bool = typer.Option(False, "--json", help="Print the manifest(s) as JSON"),
    check: bool = typer.Option(True, "--check/--no-check", help="Verify file hashes"),
):
    from mmdeploy.artifact import read_manifest, verify_files

    manifest = read_manifest(artifact)
    if json_out:
        data = manifest.model_dump(mode="json")
        if check:
            data["modified_files"] = verify_files(artifact)
        print_json(data)
        return
    _print_summary(artifact, check=check)


def _print_summary(path: Path, check: bool = False) -> None:
    from rich.table import Table

    from mmdeploy.artifact import artifact_size, component_dirs, read_manifest, verify_files

    out = console()
    top = read_manifest(path)
    what = f"{top.kind} {top.name}" + (f" ({top.family})" if top.family else "")
    out.print(f"{path}: {what}, created by {top.created_by}", markup=False)
    table = Table(show_edge=False)
    for col in ("artifact", "format", "precision", "size", "max abs err", "min cosine"):
        table.add_column(col)
    signatures = []
    for cdir, m in component_dirs(path):
        name = cdir.name if cdir != Path(path) else m.name
        parity = m.parity.get("outputs", {})
        worst = max((v.get("max_abs", 0) for v in parity.values()), default=None)
        cos = min((v.get("cosine", 1) for v in parity.values()), default=None)
        table.add_row(name, m.format or "-", m.precision, _human(artifact_size(cdir)),
                      f"{worst:.1e}" if worst is not None else "-", f"{cos:.6f}" if cos is not None else "-")
        signatures.append((name, "; ".join([f"in {t.name}: {t.dtype}[{', '.join(map(str, t.shape))}]" for t in m.inputs]
                                           + [f"out {t.name}: {t.dtype}[{', '.join(map(str, t.shape))}]"
                                              for t in m.outputs])))
    print_table(table, out)
    groups: dict[str, list[str]] = {}  # artifacts sharing a signature are listed together
    for name, signature in signatures:
        groups.setdefault(signature, []).append(name)
    out.print("I/O signature:\n" + "\n".join(f"  {', '.join(names)}: {sig}" for sig, names in groups.items()),
              markup=False, highlight=False, soft_wrap=True)
    task = top.parity.get("task")
    if task and "value" in task:
        out.print(f"task {task['metric']} on {task['n']} {task.get('dataset')} samples: PyTorch "
                  f"{task['reference_value']:.1%}, exported {task['value']:.1%}, agreement "
                  f"{task['top1_agreement']:.1%}, max logit error {task['max_abs_logit_error']:.1e}",
                  markup=False)
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
