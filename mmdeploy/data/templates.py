"""Zero-shot prompt templates: ``{c}`` is replaced by the class name (CLIP_benchmark's format)."""

from __future__ import annotations

from pathlib import Path

from mmdeploy.data.media import read_text_lines
from mmdeploy.errors import InputError

# a small generic set (from CLIP's ImageNet prompt list); a templates.txt replaces it
DEFAULT_TEMPLATES = ["a photo of a {c}.", "a bad photo of a {c}.", "a photo of the large {c}.",
                     "a photo of the small {c}.", "itap of a {c}.", "a cropped photo of the {c}."]


def read_templates(path: Path) -> list[str]:
    """One template per line, each containing ``{c}``."""
    lines = read_text_lines(path, "templates")
    if not lines:
        raise InputError(f"{path} holds no templates", "write one prompt per line with {c} for the class name")
    for number, line in enumerate(lines, 1):
        if "{c}" not in line:
            raise InputError(f"{path}: template {number} ({line!r}) has no {{c}}",
                             "write {c} where the class name goes, e.g. 'a photo of a {c}.'")
    return lines


def fill(template: str, classname: str) -> str:
    return template.replace("{c}", classname)
