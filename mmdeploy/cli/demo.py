"""`mmdeploy demo`: run the whole available pipeline on the bundled demo model."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import typer

from mmdeploy.cli._common import print_json, print_table, quiet


def register(app: typer.Typer) -> None:
    app.command(help="Run the whole available pipeline on the bundled demo model (demo:tiny-clip).")(demo)


def demo(
    output: Path = typer.Option(Path("mmdeploy-demo"), "--output", "-o", help="Where the demo writes its artifacts"),
    json_out: bool = typer.Option(False, "--json", help="Print the results as JSON"),
):
    from rich.table import Table

    from mmdeploy.demo.pipeline import run_demo

    with quiet(output, json_out) as say:
        results = run_demo(output, progress=say)
    if json_out:
        print_json([asdict(r) for r in results])
        return
    table = Table(title=f"mmdeploy demo → {output}", show_edge=False)
    for col in ("step", "status", "what happened", "s"):
        table.add_column(col)
    for r in results:
        table.add_row(r.step, r.status, r.summary, f"{r.seconds:.1f}")
    print_table(table)
    evaluated = next((r for r in results if r.step == "eval" and r.status == "ok"), None)
    if evaluated is not None:  # the demo model's fp32 / int8 / pruned table, as `mmdeploy eval` prints it
        from mmdeploy.cli.eval import table as eval_table

        print_table(eval_table(evaluated.details))
