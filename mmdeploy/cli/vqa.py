"""`mmdeploy vqa ARTIFACT IMAGE "question"`: greedy answer from a converted BLIP VQA bundle."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("vqa")
    def vqa(
        artifact: Path = typer.Argument(..., metavar="ARTIFACT",
                                        help="A BLIP question-answering bundle (from `mmdeploy convert`)."),
        image: Path = typer.Argument(..., metavar="IMAGE", help="Image file the question is about."),
        question: str = typer.Argument(..., metavar="QUESTION", help='The question, e.g. "what color is it?"'),
        max_length: int = typer.Option(None, "--max-length", metavar="N",
                                       help="Answer tokens at most (default: the checkpoint's)."),
        threads: int = typer.Option(None, "--threads", metavar="N", help="Inference threads per runner."),
        backend: str = typer.Option(None, "--backend", metavar="NAME", help="onnxruntime, openvino, ... (default: "
                                    "the bundle's first artifact per component, the ONNX one)."),
        precision: str = typer.Option(None, "--precision", metavar="NAME", help="fp32, fp16, int8 (default: any)."),
        json_out: bool = typer.Option(False, "--json", help="Print machine-readable JSON."),
    ):
        """Print the answer to QUESTION about IMAGE, generated greedily on the bundle's runners."""
        from mmdeploy.cli._common import print_json, quiet
        from mmdeploy.stages.caption import answer_question

        with quiet():
            result = answer_question(artifact, image, question, max_length=max_length, threads=threads,
                                     backend=backend, precision=precision)
        if json_out:
            print_json(result)
        else:
            typer.echo(result["answer"])
