"""`mmdeploy classify ZS_BUNDLE IMAGE...`: zero-shot labels from a `mmdeploy zeroshot` bundle."""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from mmdeploy.cli._common import print_json, quiet


def register(app: typer.Typer) -> None:
    @app.command("classify")
    def classify_cmd(
        bundle: Path = typer.Argument(..., help="A zero-shot bundle (from `mmdeploy zeroshot`)."),
        images: List[Path] = typer.Argument(..., help="Image files (PNG, JPEG, ...)."),
        top: int = typer.Option(1, "--top", help="The N most probable labels per image."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ):
        """Classify image files with a zero-shot bundle: label and probability per image (an
        unreadable file is skipped with a note on stderr)."""
        from mmdeploy.data.media import skipped_note
        from mmdeploy.stages.zeroshot import classify_files

        with quiet():
            result = classify_files(bundle, images, top=top)
        if json_out:
            print_json(result)
            return
        for row in result["results"]:
            typer.echo(f"{row['image']}: " + ", ".join(f"{t['label']} {t['probability']:.3f}" for t in row["top"]))
        note = skipped_note(result["skipped"])
        if note:
            typer.echo(note, err=True)
