"""Captioning an image file with a converted BLIP bundle (the library side of `mmdeploy caption`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdeploy.errors import InputError


FORMAT_OF = {"onnxruntime": "onnx", "ort": "onnx", "onnx": "onnx", "openvino": "openvino", "ov": "openvino",
             "tflite": "tflite", "tensorrt": "tensorrt"}


CAPTION = {"family": "blip", "components": ("vision", "text_decoder", "text_decoder_with_past"),
           "required": ("vision", "text_decoder"), "what": "BLIP"}
VQA = {"family": "blip-vqa", "components": ("vision", "question_encoder", "text_decoder", "text_decoder_with_past"),
       "required": ("vision", "question_encoder", "text_decoder"), "what": "BLIP question answering"}


def load_caption_runners(bundle: str | Path, threads: int | None = None, backend: str | None = None,
                         precision: str | None = None, server: str | None = None,
                         token: str | None = None, kind: dict = CAPTION) -> dict:
    """Runners for the bundle's vision / text_decoder(_with_past) components: per component the
    first artifact of the bundle (the ONNX fp32 after convert) matching ``backend``/``precision``.

    With ``server`` (split placement: encoder on the device, decoder in the cloud) the decoder
    runs on a KServe v2 server serving the bundle's ``text_decoder`` (``mmdeploy serve
    BUNDLE/text_decoder``); only its logits cross the network, and the loop recomputes the
    prefix each step instead of shipping past key/values back and forth.
    """
    from mmdeploy.artifact import read_manifest
    from mmdeploy.backends import load_runner

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if manifest.kind != "model" or manifest.family != kind["family"]:
        raise InputError(f"{bundle} is not a {kind['what']} model bundle (family {manifest.family!r})",
                         f"pass the --output of `mmdeploy convert` on a {kind['what']} checkpoint")
    fmt = None
    if backend is not None:
        fmt = FORMAT_OF.get(backend.strip().lower())
        if fmt is None:
            raise InputError(f"unknown backend {backend!r}", "use one of " + ", ".join(sorted(set(FORMAT_OF))))
    options = {"threads": threads} if threads else {}
    chosen = {}
    for ref in manifest.artifacts:
        if ref.component in kind["components"] and ref.component not in chosen \
                and (fmt is None or ref.format == fmt) and (precision is None or ref.precision == precision):
            chosen[ref.component] = ref
    missing = set(kind["required"]) - set(chosen)
    if missing:
        wanted = " ".join(x for x in (backend, precision) if x)
        raise InputError(f"{bundle} lacks a {wanted + ' ' if wanted else ''}artifact for "
                         f"{', '.join(sorted(missing))}",
                         "compile the bundle for that backend (mmdeploy compile) or choose another --backend")
    if server:
        from mmdeploy.split.client import RemoteRunner

        decoder = read_manifest(bundle / chosen.pop("text_decoder").path)
        chosen.pop("text_decoder_with_past", None)
        remote = RemoteRunner(server, decoder.name, [t.name for t in decoder.inputs], ["logits"], token=token)
    runners = {name: load_runner(bundle / ref.path, **options) for name, ref in chosen.items()}
    if server:
        runners["text_decoder"] = remote
    return runners


def caption_image(bundle: str | Path, image: str | Path, max_length: int | None = None,
                  threads: int | None = None, backend: str | None = None,
                  precision: str | None = None, server: str | None = None,
                  token: str | None = None) -> dict[str, Any]:
    from mmdeploy.data.media import decode_image
    from mmdeploy.models import adapter_for_bundle

    if max_length is not None and max_length < 2:
        raise InputError(f"--max-length {max_length} is too small", "pass 2 or more")
    picture = decode_image(image)  # bad images fail before any runner loads
    runners = load_caption_runners(bundle, threads, backend, precision, server, token)
    adapter = adapter_for_bundle(bundle)
    tokens = adapter.captions(runners, [picture], max_length=max_length)[0]
    return {"image": str(image), "caption": adapter.decode(tokens), "tokens": tokens,
            "backends": sorted({r.name for r in runners.values()})}


def answer_question(bundle: str | Path, image: str | Path, question: str, max_length: int | None = None,
                    threads: int | None = None, backend: str | None = None,
                    precision: str | None = None) -> dict[str, Any]:
    """`mmdeploy vqa`: the greedy answer of a converted BLIP question-answering bundle."""
    from mmdeploy.data.media import decode_image
    from mmdeploy.models import adapter_for_bundle

    if max_length is not None and max_length < 2:
        raise InputError(f"--max-length {max_length} is too small", "pass 2 or more")
    if not question or not question.strip():
        raise InputError("the question is empty", 'pass a question, e.g. "what color is the shape?"')
    picture = decode_image(image)  # bad images fail before any runner loads
    runners = load_caption_runners(bundle, threads, backend, precision, kind=VQA)
    adapter = adapter_for_bundle(bundle)
    feeds = adapter.question_ids(question)
    tokens = adapter.answer_tokens(runners, adapter.pixel_values([picture])["pixel_values"], feeds, max_length)
    return {"image": str(image), "question": question, "answer": adapter.decode(tokens), "tokens": tokens,
            "backends": sorted({r.name for r in runners.values()})}
