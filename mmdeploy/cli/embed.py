"""`mmdeploy embed BUNDLE INPUTS... --json`: embeddings of images, texts or audio clips (through
:mod:`mmdeploy.runtime`; works in the runtime-only install)."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def embed_inputs(bundle: Path, inputs: list[str], backend: str | None = None, threads: int | None = None,
                 texts: bool = False) -> dict:
    """Each input an image file, an audio clip (by extension) or, with ``texts`` or when it is no
    existing file, a text: ``{"bundle", "embeddings": [{"input", "kind", "embedding"}], "dim"}``."""
    from mmdeploy.data.media import modality_of
    from mmdeploy.errors import InputError
    from mmdeploy.runtime import load

    if not inputs:
        raise InputError("nothing to embed", "pass image files, audio clips or texts")
    kinds = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            raise InputError(f"{item} is a folder", "pass image files, audio clips or texts")
        kind = "text" if texts or not path.is_file() else modality_of(path)
        if kind is None:
            raise InputError(f"{item}: neither an image nor an audio file", "pass images, audio clips, or texts "
                             "with --texts")
        kinds.append(kind)
    model = load(bundle, backend=backend, threads=threads)
    rows: list = [None] * len(inputs)
    for kind, embed in (("image", model.embed_images), ("text", model.embed_texts), ("audio", model.embed_audio)):
        index = [i for i, k in enumerate(kinds) if k == kind]
        if index:
            vectors = embed([inputs[i] for i in index])
            for i, vector in zip(index, vectors):
                rows[i] = {"input": inputs[i], "kind": kind, "embedding": [float(v) for v in vector]}
    return {"bundle": str(bundle), "dim": len(rows[0]["embedding"]), "backends": model.backends, "embeddings": rows}


def register(app: typer.Typer) -> None:
    @app.command("embed")
    def embed_cmd(
        bundle: Path = typer.Argument(..., help="A model bundle (convert, quantize, compile or bake output)."),
        inputs: List[str] = typer.Argument(..., help="Image files, audio clips, or texts (anything that is not a file)."),
        texts: bool = typer.Option(False, "--texts", help="Treat every input as text, even a file name."),
        backend: Optional[str] = typer.Option(None, "--backend", help="onnxruntime, openvino, tflite, tensorrt "
                                              "(default: the bundle's first artifact whose runtime is installed)."),
        threads: Optional[int] = typer.Option(None, "--threads", help="Inference threads."),
        json_out: bool = typer.Option(False, "--json", help="Machine-readable output (the embeddings)."),
    ):
        """Print L2-normalised embeddings of images, texts or audio clips."""
        from mmdeploy.cli._common import print_json, quiet

        with quiet():
            result = embed_inputs(bundle, inputs, backend, threads, texts)
        if json_out:
            print_json(result)
            return
        for row in result["embeddings"]:
            head = ", ".join(f"{v:+.4f}" for v in row["embedding"][:4])
            typer.echo(f"{row['kind']} {row['input']}: [{head}, ...] ({result['dim']} dims)")
