"""Captioning and answering about an image file with a converted BLIP bundle (the library side of
`mmdeploy caption` and `mmdeploy vqa`), through :mod:`mmdeploy.runtime`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdeploy.errors import InputError


CAPTION = {"family": "blip", "components": ("vision", "text_decoder", "text_decoder_with_past"),
           "required": ("vision", "text_decoder"), "what": "BLIP"}
VQA = {"family": "blip-vqa", "components": ("vision", "question_encoder", "text_decoder", "text_decoder_with_past"),
       "required": ("vision", "question_encoder", "text_decoder"), "what": "BLIP question answering"}


def open_blip(bundle: str | Path, threads: int | None = None, backend: str | None = None,
              precision: str | None = None, server: str | None = None, token: str | None = None,
              kind: dict = CAPTION):
    """The bundle as a :class:`mmdeploy.runtime.Model`: per component the first artifact matching
    ``backend``/``precision`` (the ONNX fp32 after convert).

    With ``server`` (split placement: encoder on the device, decoder in the cloud) the decoder
    runs on a KServe v2 server serving the bundle's ``text_decoder`` (``mmdeploy serve
    BUNDLE/text_decoder``); only its logits cross the network, and the loop recomputes the
    prefix each step instead of shipping past key/values back and forth.
    """
    from mmdeploy.artifact import read_manifest
    from mmdeploy.runtime import Model

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if manifest.kind != "model" or manifest.family != kind["family"]:
        raise InputError(f"{bundle} is not a {kind['what']} model bundle (family {manifest.family!r})",
                         f"pass the --output of `mmdeploy convert` on a {kind['what']} checkpoint")
    model = Model(bundle, backend=backend, threads=threads, precision=precision)
    missing = set(kind["required"]) - set(model.components)
    if missing:
        wanted = " ".join(x for x in (backend, precision) if x)
        raise InputError(f"{bundle} lacks a {wanted + ' ' if wanted else ''}artifact for "
                         f"{', '.join(sorted(missing))}",
                         "compile the bundle for that backend (mmdeploy compile) or choose another --backend")
    if server:
        from mmdeploy.split.client import RemoteRunner

        decoder = model.spec("text_decoder")
        model.set_runner("text_decoder_with_past", None)
        model.set_runner("text_decoder", RemoteRunner(server, decoder.name, [t.name for t in decoder.inputs],
                                                      ["logits"], token=token))
    return model


def _check_length(max_length: int | None) -> None:
    if max_length is not None and max_length < 2:
        raise InputError(f"--max-length {max_length} is too small", "pass 2 or more")


def caption_image(bundle: str | Path, image: str | Path, max_length: int | None = None,
                  threads: int | None = None, backend: str | None = None,
                  precision: str | None = None, server: str | None = None,
                  token: str | None = None) -> dict[str, Any]:
    """`mmdeploy caption`: the greedy caption of a converted BLIP bundle (on the runtime)."""
    from mmdeploy.runtime.images import to_rgb_array

    _check_length(max_length)
    picture = to_rgb_array(image)  # bad images fail before any runner loads
    model = open_blip(bundle, threads, backend, precision, server, token)
    tokens = model.caption_tokens([picture], max_length=max_length)[0]
    return {"image": str(image), "caption": model.tokenizer.decode(tokens).strip(), "tokens": tokens,
            "backends": model.backends}


def answer_question(bundle: str | Path, image: str | Path, question: str, max_length: int | None = None,
                    threads: int | None = None, backend: str | None = None,
                    precision: str | None = None) -> dict[str, Any]:
    """`mmdeploy vqa`: the greedy answer of a converted BLIP question-answering bundle."""
    from mmdeploy.runtime.images import to_rgb_array

    _check_length(max_length)
    if not question or not question.strip():
        raise InputError("the question is empty", 'pass a question, e.g. "what color is the shape?"')
    picture = to_rgb_array(image)  # bad images fail before any runner loads
    model = open_blip(bundle, threads, backend, precision, kind=VQA)
    tokens = model.answer_tokens(picture, question, max_length)
    return {"image": str(image), "question": question, "answer": model.tokenizer.decode(tokens).strip(),
            "tokens": tokens, "backends": model.backends}
