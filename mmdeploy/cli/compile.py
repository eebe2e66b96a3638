"""`mmdeploy compile` (ONNX artifact → backend artifacts) and `mmdeploy targets`."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def _shapes(values: list[str] | None) -> dict:
    """['batch=1,8,32', 'sequence=1,77,77'] -> {'batch': [1, 8, 32], ...}"""
    from mmdeploy.errors import InputError

    shapes = {}
    for value in values or []:
        name, _, dims = value.partition("=")
        try:
            triple = [int(d) for d in dims.split(",")]
        except ValueError:
            triple = []
        if not name or len(triple) != 3:
            raise InputError(f"bad --trt-shape {value!r}", "write DIM=MIN,OPT,MAX, e.g. batch=1,8,32")
        shapes[name.strip()] = triple
    return shapes


def artifact_rows(bundle_dir: Path, refs) -> list[dict]:
    from mmdeploy.artifact import read_manifest

    rows = []
    for ref in refs:
        manifest = read_manifest(bundle_dir / ref.path)
        outputs = manifest.parity.get("outputs", {})
        rows.append({
            "path": ref.path, "component": ref.component, "target": ref.target, "format": ref.format,
            "precision": ref.precision,
            "max_abs": max((m["max_abs"] for m in outputs.values()), default=None),
            "min_cosine": min((m["cosine"] for m in outputs.values()), default=None),
            "parity": "passed" if manifest.parity.get("passed") else manifest.parity.get("status", "-"),
            "task": manifest.parity.get("task"),
        })
    return rows


def register(app: typer.Typer) -> None:
    @app.command("compile")
    def compile_cmd(
        artifact: Path = typer.Argument(..., help="A bundle from `mmdeploy convert`, or one ONNX component."),
        target: str = typer.Option(..., "--target", "-t",
                                   help="Comma list: onnxruntime, openvino, tflite, tensorrt "
                                        "(optionally :fp32/:fp16/:int8)."),
        output: Path = typer.Option(..., "--output", "-o", help="Output bundle directory."),
        components: Optional[str] = typer.Option(None, "--components",
                                                 help="Comma list of components to compile (default: all)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads for verification."),
        atol: Optional[float] = typer.Option(None, "--atol", help="Max abs error allowed for fp32 artifacts."),
        ort_optimized: bool = typer.Option(False, "--ort-optimized",
                                           help="Save ONNX Runtime's optimized graph in the ORT artifact."),
        trt_shape: Optional[List[str]] = typer.Option(None, "--trt-shape",
                                                      help="TensorRT profile for a dynamic dim: DIM=MIN,OPT,MAX."),
        trt_max_batch: Optional[int] = typer.Option(None, "--trt-max-batch", help="TensorRT profile max batch."),
        trt_workspace_mb: Optional[int] = typer.Option(None, "--trt-workspace-mb",
                                                        help="TensorRT builder workspace limit in MB."),
        trt_allow_unsupported: bool = typer.Option(False, "--trt-allow-unsupported",
                                                   help="Write the TensorRT bundle and report despite unsupported ops."),
        eval_data: Optional[str] = typer.Option(None, "--eval", help="Also evaluate every target on your set "
                                                "(ImageFolder, image,caption pairs, builtin:NAME): eval.json."),
        processor: Optional[Path] = typer.Option(None, "--processor", metavar="DIR",
                                                 help="Tokenizer / image processor / feature extractor from this "
                                                 "folder (when the bundle was converted without them)."),
        force: bool = typer.Option(False, "--force", help="Use an artifact whose files changed since it was written; replace an "
                                   "--output holding another artifact."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ):
        """Compile ONNX components into backend artifacts, each verified against PyTorch."""
        from mmdeploy.cli._common import print_json, print_table, quiet, split_list
        from mmdeploy.stages.compile import compile_artifact

        options = {"components": split_list(components), "threads": threads, "atol": atol, "ort_save_optimized": ort_optimized,
                   "trt_shapes": _shapes(trt_shape), "trt_max_batch": trt_max_batch,
                   "trt_workspace_mb": trt_workspace_mb, "trt_allow_unsupported": trt_allow_unsupported,
                   "eval_data": eval_data, "processor": str(processor) if processor else None, "force": force}
        from mmdeploy.artifact import ensure_unmodified

        ensure_unmodified(artifact, force, log=lambda msg: typer.echo(msg, err=True))
        with quiet(output, json_out) as say:
            bundle = compile_artifact(artifact, target, output, options, progress=say)
        made = set(bundle.metadata.get("compiled", []))
        refs = [a for a in bundle.artifacts if a.path in made]
        rows = artifact_rows(output, refs)
        if json_out:
            print_json({"output": str(output), "artifacts": rows,
                        **({"eval": bundle.metadata["eval"]} if "eval" in bundle.metadata else {})})
            return
        from rich.table import Table

        table = Table(title=f"compiled into {output}")
        for col in ("artifact", "format", "max abs", "min cosine", "parity", "task vs torch"):
            table.add_column(col, no_wrap=col in ("artifact", "format"))
        for r in rows:
            task = r["task"]
            table.add_row(r["path"], r["format"],
                          "-" if r["max_abs"] is None else f"{r['max_abs']:.2e}",
                          "-" if r["min_cosine"] is None else f"{r['min_cosine']:.6f}", r["parity"],
                          "-" if not task else f"{task['agreement_with_pytorch']:.1%} agree")
        print_table(table)
        if "eval" in bundle.metadata:
            from mmdeploy.cli._common import console

            ev = bundle.metadata["eval"]
            for label, r in ev["results"].items():
                ci = f" [{100 * r['ci95'][0]:.1f}, {100 * r['ci95'][1]:.1f}]" if r["ci95"] else ""
                console().print(f"{ev['metric']} {label}: {100 * r['value']:.2f} %{ci} (n={r['n']}) "
                                f"on {ev['data']}", soft_wrap=True)

    @app.command("targets")
    def targets_cmd(json_out: bool = typer.Option(False, "--json", help="Machine-readable output.")):
        """List compile targets: available here or not, and what to install."""
        from mmdeploy.cli._common import print_json, print_table
        from mmdeploy.stages.compile import list_targets

        rows = list_targets()
        if json_out:
            print_json(rows)
            return
        from rich.table import Table

        table = Table(title="targets")
        for col in ("target", "status", "precisions", "why / install"):
            table.add_column(col)
        for r in rows:
            why = r["reason"] if r["available"] else f"{r['reason']}; {r['install']}"
            table.add_row(r["target"], "[green]available[/]" if r["available"] else "[red]unavailable[/]",
                          ",".join(r["precisions"]), why)
        print_table(table)
