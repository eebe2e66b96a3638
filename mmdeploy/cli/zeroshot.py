"""`mmdeploy zeroshot BUNDLE --labels a,b -o DIR`: a device-ready zero-shot classifier bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmdeploy.cli._common import print_json, quiet, split_list


def register(app: typer.Typer) -> None:
    @app.command("zeroshot")
    def zeroshot_cmd(
        bundle: Path = typer.Argument(..., help="A model bundle from `mmdeploy convert` or `quantize` "
                                      "(vision + text, preprocess/)."),
        output: Path = typer.Option(..., "--output", "-o", help="Directory for the zero-shot bundle."),
        labels: Optional[str] = typer.Option(None, "--labels",
                                             help='Comma-separated class labels, e.g. "cat,dog,car".'),
        labels_file: Optional[Path] = typer.Option(None, "--labels-file", help="A UTF-8 file, one label per line."),
        template: str = typer.Option("a photo of a {}.", "--template", help="Prompt template; {} is the label."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ):
        """Bake image preprocessing into the vision graph (uint8 HWC image in) and cache the text
        embeddings of a fixed label set: the device needs no PIL, transformers or text tower."""
        from mmdeploy.errors import InputError

        if (labels is None) == (labels_file is None):
            raise InputError("pass --labels or --labels-file" + (", not both" if labels else ""),
                             'e.g. --labels "cat,dog,car"')
        if labels_file is not None:
            from mmdeploy.data.media import read_text_lines

            names = read_text_lines(labels_file, "labels file")
        else:
            names = split_list(labels)
        from mmdeploy.stages.zeroshot import zero_shot_bundle

        with quiet(output, json_out) as say:
            out = zero_shot_bundle(bundle, names, output, template=template, log=say or (lambda msg: None))
        from mmdeploy.artifact import read_manifest

        m = read_manifest(out)
        info, parity = m.metadata["zero_shot"], m.parity["preprocess_baked"]
        if json_out:
            print_json({"output": str(out), "labels": info["labels"], "template": info["template"],
                        "vision": {"format": info["vision_format"], "precision": info["vision_precision"]},
                        "parity": parity})
            return
        typer.echo(f"zero-shot bundle: {len(info['labels'])} labels, vision {info['vision_format']} "
                   f"{info['vision_precision']} (baked preprocessing, cosine {parity['min']:.5f}) → {out}")
