"""`mmdeploy eval ARTIFACT... --data PATH`: task accuracy on the user's data, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from mmdeploy.cli._common import console, print_json

TASK_CHOICES = ["auto", "classification", "retrieval", "captioning", "vqa", "sts", "text-retrieval"]


def register(app: typer.Typer) -> None:
    @app.command("eval")
    def eval_cmd(
        artifacts: List[str] = typer.Argument(..., help="Checkpoints (run by PyTorch), demo:NAME, bundles "
                                              "(convert/quantize/prune/compile/split) or component dirs; "
                                              "the first is the reference for the deltas."),
        data: str = typer.Option(..., "--data", help="An ImageFolder (classification), a .csv/.tsv/.jsonl of "
                                 "image,caption (retrieval, captioning), of sentence1,sentence2,score (sts: "
                                 "text encoders) or of query,document (text-retrieval), a VQA .jsonl, or "
                                 "builtin:NAME (demo-shapes, skimage-captions, skimage-vqa, synthetic-audio)."),
        task: str = typer.Option("auto", "--task", help="auto, classification, retrieval, captioning, vqa, sts "
                                 "or text-retrieval."),
        templates: Optional[Path] = typer.Option(None, "--templates", help="Prompt templates, one per line "
                                                 "with {c} (default: the folder's templates.txt, else built-in)."),
        strict: bool = typer.Option(False, "--strict", help="Fail on an undecodable file instead of skipping it."),
        limit: Optional[int] = typer.Option(None, "--limit", help="At most this many samples."),
        batch: int = typer.Option(32, "--batch", help="Images (or texts) per run of a tower."),
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


_UNITS = {"images": "images", "audio_clips": "audio clips", "captions": "captions", "classes": "classes",
          "pairs": "sentence pairs", "queries": "queries", "documents": "documents", "questions": "questions"}


def _title(doc: dict) -> str:
    data = doc["data"]
    counts = ", ".join(f"{data[k]} {label}" for k, label in _UNITS.items() if isinstance(data.get(k), int))
    skipped = f", {len(data['skipped'])} skipped" if data.get("skipped") else ""
    return f"{doc['task']} on {data['path']} ({counts or 'n=' + str(data['n'])}{skipped})"


def table(doc: dict):
    from rich.table import Table

    results = doc["results"]
    omitted = {k: v for r in results for k, v in (r.get("omitted") or {}).items()}
    notes = ["values in % (CIDEr, BLEU-4 ×100; cosine_spearman ×100) with 95 % intervals (Wilson for hits, "
             "else bootstrap)", "Δ in points vs the first column",
             f"agreement: same prediction as {doc['reference']}", "ties: data-set order (docs/eval-json-schema.md)"]
    notes += [f"{k}: omitted, {v}" for k, v in omitted.items()]
    t = Table(title=_title(doc), show_edge=False, caption="; ".join(notes))
    t.add_column("metric")
    t.add_column("n", justify="right")
    for r in results:
        t.add_column(f"{r['artifact']}\n{r.get('format', '')} {r.get('precision', '')}".strip(), justify="right")
    names = [n for n in results[0]["metrics"] if n not in omitted]
    for name in names:
        n = next((r["metrics"][name]["n"] for r in results if r["metrics"].get(name)), "")
        row = [name + (" *" if name == doc["primary_metric"] else ""), str(n)]
        for i, r in enumerate(results):
            cell = _cell(r["metrics"].get(name), 100.0)
            delta = r["delta"].get(name)
            if i and delta is not None:
                paired = r.get("paired_delta") if name == doc["primary_metric"] else None
                if paired and paired.get("ci95"):
                    lo, hi = paired["ci95"]
                    cell += f" ({100 * delta:+.2f} [{100 * lo:+.1f}, {100 * hi:+.1f}])"
                else:
                    cell += f" ({100 * delta:+.2f})"
            row.append(cell)
        t.add_row(*row)
    t.add_row("agreement", "", *[("—" if r["agreement"] is None else f"{100 * r['agreement']:.1f}") for r in results])
    t.add_row("load s", "", *[("—" if r.get("load_seconds") is None else f"{r['load_seconds']:.2f}") for r in results])
    t.add_row("inference s", "", *[f"{r['inference_seconds']:.2f}" for r in results])
    t.add_row("eval s (all)", "", *[f"{r['seconds']:.2f}" for r in results])
    return t
