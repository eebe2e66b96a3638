"""`mmdeploy run RECIPE.yaml --output DIR`: a whole deployment declared in YAML."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("run", no_args_is_help=True)(run)


def run(
    recipe: Path = typer.Argument(..., help="recipe YAML (see recipes/)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="directory for every artifact and report"),
    targets_dir: Optional[List[Path]] = typer.Option(None, "--targets-dir", help="extra folder of target profiles"),
    host: Optional[str] = typer.Option(None, "--host", help="user@address[:port] for remote targets"),
    dry_run: bool = typer.Option(False, "--dry-run", help="check the recipe and print the plan only"),
    json_out: bool = typer.Option(False, "--json", help="print the run summary as JSON"),
):
    """Execute a recipe: source → convert → passes → targets → bench → budgets (exit 1 if a budget fails)."""
    from mmdeploy.cli._common import print_json, quiet
    from mmdeploy.errors import InputError
    from mmdeploy.stages.recipe import load_recipe, plan, run_recipe

    parsed, _ = load_recipe(recipe, targets_dir)
    if dry_run:
        from mmdeploy.targets import get_target

        for t in parsed.targets:
            get_target(t, targets_dir, host=host)
        steps = plan(parsed)
        if json_out:
            print_json({"name": parsed.name, "plan": steps})
        else:
            for i, s in enumerate(steps, 1):
                typer.echo(f"{i}. {s}")
        return
    if output is None:
        raise InputError("--output DIR is required", "pass where to write the run (or --dry-run)")
    with quiet(output, json_out) as say:
        summary = run_recipe(recipe, output, targets_dir=targets_dir, host=host, progress=say)
    if json_out:
        print_json(summary)
    else:
        for name, t in summary["targets"].items():
            status = "PASS" if t.get("passed", True) else "FAIL"
            typer.echo(f"{name}: {status}  " + "  ".join(f"{k} p50 {v:.3f} ms" for k, v in t.get("p50_ms", {}).items()))
        typer.echo(f"wrote {output} (reports under {output}/bench/)")
