"""`mmdeploy eval ARTIFACT... --data PATH`: task accuracy on the user's data, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mmdeploy.cli._common import console, print_json

TASK_CHOICES = ["auto", "classification", "retrieval", "captioning", "vqa"]


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        artifacts: List[str] = typer.Argument(..., help="Checkpoints (run by PyTorch), demo:NAME, bundles "
                                              "(convert/quantize/prune/compile/split) or component dirs; "
                                              "the first is the reference for the deltas."),
        data: str = typer.Option(..., "--data", help="An ImageFolder (classification), a .csv/.jsonl of "
                                 "image,caption (retrieval, captioning), a VQA .jsonl, or builtin:NAME "
                                 "(demo-shapes, skimage-captions, skimage-vqa, synthetic-audio)."),
        task: str = typer.Option("auto", "--task", help="auto, classification, retrieval, captioning or vqa."),
        templates: Optional[Path] = typer.Option(None, "--templates", help="Prompt templates, one per line "
                                                 "with {c} (default: the folder's templates.txt, else built-in)."),
        strict: bool = typer.Option(False, "--strict", help="Fail on an undecodable file instead of skipping it."),
        limit: Optional[int] = typer.Option(None, "--limit", help="At most this many samples."),
        batch: int = typer.Option(32, "--batch", help="Images per run of the media tower."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Intra-op threads of each runner."),
        output: Optional[Path] = typer.Option(None, "--output", "-o", help="Also write eval.json here (a folder)."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ):
        """Evaluate artifacts on a data set: one table, several artifacts side by side."""
        from mmdeploy.errors import InputError
        from mmdeploy.stages.eval import run_eval

        if task not in TASK_CHOICES:
            raise InputError(f"--task {task!r} is not valid", "choose one of: " + ", ".join(TASK_CHOICES))
        err = console(stderr=True)
        doc = run_eval(artifacts, data, task, templates, strict, limit, threads, batch,
                       log=(lambda m: None) if json_out else (lambda m: err.print(f"· {m}", markup=False, style="dim")))
        if output is not None:
            import json

            from mmdeploy.artifact import atomic_output

            with atomic_output(output) as tmp:
                (tmp / "eval.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
        if json_out:
            print_json(doc)
            return
        console().print(table(doc))


def _cell(metric: dict | None, scale: float) -> str:
    if metric is None:
        return "—"
    text = f"{scale * metric['value']:.2f}"
    if metric.get("ci95"):
        lo, hi = metric["ci95"]
        text += f" [{scale * lo:.1f}, {scale * hi:.1f}]"
    return text


def table(doc: dict):
    from rich.table import Table

    data = doc["data"]
    title = (f"{doc['task']} on {data['path']} (n={data['n']}"
             + (f", {len(data['skipped'])} skipped" if data.get("skipped") else "") + ")")
    t = Table(title=title, show_edge=False,
              caption="values in % (CIDEr, BLEU-4 ×100) with bootstrap 95 % intervals; Δ in points vs the first column; "
                      f"agreement: same prediction as {doc['reference']}")
    t.add_column("metric")
    results = doc["results"]
    for r in results:
        t.add_column(f"{r['artifact']}\n{r.get('format', '')} {r.get('precision', '')}".strip(), justify="right")
    names = list(results[0]["metrics"])
    for name in names:
        row = [name + (" *" if name == doc["primary_metric"] else "")]
        for i, r in enumerate(results):
            cell = _cell(r["metrics"].get(name), 100.0)
            delta = r["delta"].get(name)
            if i and delta is not None:
                cell += f" ({100 * delta:+.2f})"
            row.append(cell)
        t.add_row(*row)
    t.add_row("n", *[str((next((m for m in r["metrics"].values() if m), {}) or {}).get("n", "")) for r in results])
    t.add_row("agreement", *[("—" if r["agreement"] is None else f"{100 * r['agreement']:.1f}") for r in results])
    t.add_row("seconds", *[f"{r['seconds']:.2f}" for r in results])
    return t
