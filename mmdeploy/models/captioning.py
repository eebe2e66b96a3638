"""Captioning an image file with a converted BLIP bundle (the library side of `mmdeploy caption`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmdeploy.errors import InputError


def load_caption_runners(bundle: str | Path, threads: int | None = None) -> dict:
    """Runners for the bundle's vision / text_decoder(_with_past) components, any backend."""
    from mmdeploy.artifact import read_manifest
    from mmdeploy.backends import load_runner

    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    if manifest.kind != "model" or manifest.family != "blip":
        raise InputError(f"{bundle} is not a BLIP model bundle (family {manifest.family!r})",
                         "pass the --output of `mmdeploy convert` on a BLIP captioning checkpoint")
    options = {"threads": threads} if threads else {}
    runners = {ref.component: load_runner(bundle / ref.path, **options) for ref in manifest.artifacts
               if ref.component in ("vision", "text_decoder", "text_decoder_with_past")}
    missing = {"vision", "text_decoder"} - set(runners)
    if missing:
        raise InputError(f"{bundle} lacks the {', '.join(sorted(missing))} component",
                         "convert the checkpoint with all BLIP components")
    return runners


def caption_image(bundle: str | Path, image: str | Path, max_length: int | None = None,
                  threads: int | None = None) -> dict[str, Any]:
    from mmdeploy.models import adapter_for_bundle
    from mmdeploy.models.blip import load_image

    if max_length is not None and max_length < 2:
        raise InputError(f"--max-length {max_length} is too small", "pass 2 or more")
    picture = load_image(image)  # bad images fail before any runner loads
    runners = load_caption_runners(bundle, threads)
    adapter = adapter_for_bundle(bundle)
    tokens = adapter.captions(runners, [picture], max_length=max_length)[0]
    return {"image": str(image), "caption": adapter.decode(tokens), "tokens": tokens,
            "backends": sorted({r.name for r in runners.values()})}
