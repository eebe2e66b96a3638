"""`mmdeploy caption ARTIFACT IMAGE`: greedy caption of one image from a converted BLIP bundle."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("caption")
    def caption(
        artifact: Path = typer.Argument(..., help="A BLIP model bundle (from `mmdeploy convert`)."),
        image: Path = typer.Argument(..., help="Image file to caption."),
        max_length: int = typer.Option(None, "--max-length", help="Tokens at most (default: the checkpoint's)."),
        threads: int = typer.Option(None, "--threads", help="Inference threads per runner."),
        backend: str = typer.Option(None, "--backend", help="onnxruntime, openvino, ... (default: the "
                                    "bundle's first artifact per component, the ONNX one)."),
        precision: str = typer.Option(None, "--precision", help="fp32, fp16, int8 (default: any)."),
        server: str = typer.Option(None, "--server", help="Run the decoder on this Open Inference Protocol server (grpc://HOST:PORT for gRPC) "
                                   "(`mmdeploy serve BUNDLE/text_decoder`); the image encoder runs here."),
        token: str = typer.Option(None, "--token", envvar="MMDEPLOY_SERVE_TOKEN", help="Bearer token for --server."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    ):
        """Print the caption of IMAGE, generated greedily on the bundle's runners."""
        from mmdeploy.cli._common import print_json, quiet
        from mmdeploy.stages.caption import caption_image

        with quiet():
            result = caption_image(artifact, image, max_length=max_length, threads=threads, backend=backend,
                                   precision=precision, server=server, token=token)
        if json_out:
            print_json(result)
        else:
            typer.echo(result["caption"])
