"""`mmdeploy bake BUNDLE -o DIR`: the bundle with image preprocessing baked into its vision graph."""

from __future__ import annotations

from pathlib import Path

import typer

from mmdeploy.cli._common import print_json, quiet


def register(app: typer.Typer) -> None:
    @app.command("bake")
    def bake_cmd(
        bundle: Path = typer.Argument(..., help="A model bundle from `mmdeploy convert` or `quantize` "
                                      "(ONNX or OpenVINO vision, preprocess/)."),
        output: Path = typer.Option(..., "--output", "-o", help="Directory for the baked bundle."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ):
        """Bake resize / center-crop / normalize into the vision graph (input: uint8 HWC `image`),
        verified on real photos against the image processor (embedding cosine ≥ 0.99)."""
        from mmdeploy.stages.zeroshot import bake_bundle

        with quiet(output, json_out) as say:
            m = bake_bundle(bundle, output, log=say or (lambda msg: None))
        vision = [r for r in m.artifacts if r.component == "vision"]
        parity = m.parity["preprocess_baked"]
        if json_out:
            print_json({"output": str(output), "vision": [{"path": r.path, "format": r.format, "precision": r.precision}
                                                          for r in vision],
                        "dropped": m.passes[-1].report["dropped"],
                        "preprocess": m.metadata["preprocess_baked"], "parity": parity})
            return
        names = ", ".join(f"{r.path} ({r.format} {r.precision})" for r in vision)
        dropped = m.passes[-1].report["dropped"]
        typer.echo(f"baked preprocessing into {names}: uint8 HWC image in, cosine ≥ {parity['min']:.5f} vs the "
                   f"image processor on {parity['images']} photos"
                   f"{'; left out (not bakeable): ' + ', '.join(dropped) if dropped else ''} → {output}")
