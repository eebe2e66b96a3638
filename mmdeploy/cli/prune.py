"""`mmdeploy prune`: structured (heads, MLP channels) or magnitude pruning of a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("prune")
    def prune_cmd(
        source: str = typer.Argument(..., help="Checkpoint folder (CLIP/SigLIP) or demo:tiny-clip."),
        method: str = typer.Option(..., "--method", help="heads | mlp | magnitude."),
        amount: float = typer.Option(..., "--amount", help="Fraction to remove, in (0, 1)."),
        output: Path = typer.Option(..., "--output", "-o", help="Output checkpoint folder."),
        components: Optional[str] = typer.Option(None, "--components", help="Towers, e.g. vision,text (default: all)."),
        recover_steps: int = typer.Option(0, "--recover-steps", help="Distillation steps against the unpruned model."),
        calib: Optional[Path] = typer.Option(None, "--calib", help="Images folder / captions .txt for importance and recovery."),
        scope: str = typer.Option("per-layer", "--scope", help="magnitude: per-layer or global."),
        lr: float = typer.Option(1e-4, "--lr", help="Recovery learning rate."),
        batch_size: int = typer.Option(16, "--batch-size", help="Samples per recovery step."),
        latency: bool = typer.Option(True, "--latency/--no-latency", help="Measure ORT batch-1 latency before/after."),
        runs: int = typer.Option(20, "--runs", help="Timed runs per model for the latency."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Threads for torch and ONNX Runtime."),
        allow_pickle: bool = typer.Option(False, "--allow-pickle", help="Allow pickle checkpoints."),
        eval_data: Optional[str] = typer.Option(None, "--eval", help="Measure before/after on your set (ImageFolder, "
                                                "image,caption pairs, builtin:NAME) instead of the built-in one."),
        processor: Optional[Path] = typer.Option(None, "--processor", metavar="DIR",
                                                 help="Tokenizer / image processor from this folder (e.g. the "
                                                 "base model), for a checkpoint saved without them."),
        as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    ):
        """Prune a checkpoint's towers and write a checkpoint that `mmdeploy convert` accepts."""
        from mmdeploy.cli._common import console, print_json, quiet, split_list
        from mmdeploy.passes.prune import check_amount, check_method

        check_method(method)  # fail fast, before loading anything heavy
        check_amount(amount)
        from mmdeploy.stages.prune import prune

        with quiet(output, as_json):
            report = prune(source, output, method, amount, components=split_list(components),
                           recover_steps=recover_steps, calib=calib, scope=scope, recover_lr=lr,
                           batch_size=batch_size, measure_latency=latency, latency_runs=runs,
                           threads=threads, allow_pickle=allow_pickle, eval_data=eval_data, processor=processor)
        if as_json:
            print_json(report)
            return
        _print(console(), report, output)


def _print(con, report: dict, output: Path) -> None:
    from rich.table import Table

    from mmdeploy.cli._common import print_table

    table = Table(title=f"prune --method {report['method']} --amount {report['amount']}")
    for col in ("", "before", "after", "change"):
        table.add_column(col, justify="right" if col else "left")
    p = report["params"]
    table.add_row("parameters", f"{p['before']['total']:,}", f"{p['after']['total']:,}", f"-{p['reduction']:.1%}")
    for c, f in report["flops"].items():
        table.add_row(f"{c} FLOPs (batch 1)", f"{f['before']:,}", f"{f['after']:,}", f"-{f['reduction']:.1%}")
    for c, lat in report["latency_ms"].items():
        table.add_row(f"{c} ORT latency ms", f"{lat['before']:.2f}", f"{lat['after']:.2f}", f"{lat['speedup']:.2f}x")
    s = report.get("size_bytes", {})
    if s:
        table.add_row("weights bytes", f"{s['before']:,}", f"{s['after']:,}", "")
    m = report.get("metric")
    if m:
        table.add_row(m["name"], f"{m['before']:.4f}", f"{m['after']:.4f}", f"{m['delta_pp']:+.2f} pp")
    for c, cos in report["embedding_cosine"].items():
        table.add_row(f"{c} embedding cosine", "1", f"{cos['after']['mean']:.4f}", "")
    print_table(table, con)
    if report["method"] == "magnitude":
        con.print(f"sparsity {report['pruned']['sparsity']:.1%}; {report['note']}")
    con.print(f"wrote {output} (convert it with: mmdeploy convert {output} --output ...)")
