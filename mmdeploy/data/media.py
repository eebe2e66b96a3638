"""Decoding the user's media files: images (Pillow) and listing audio clips.

Every failure names the file.  Readers skip an undecodable file and count it unless ``strict``.
"""

from __future__ import annotations

from pathlib import Path

from mmdeploy.errors import InputError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
AUDIO_SUFFIXES = {".wav", ".wave", ".flac", ".ogg", ".mp3", ".aiff", ".aif"}


def modality_of(path: Path) -> str | None:
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else None


def media_files(folder: Path) -> list[Path]:
    """Image and audio files directly in ``folder`` (sorted, hidden files ignored)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".") and modality_of(p))


def decode_image(path: Path):
    """An RGB PIL image; InputError naming the file if it does not decode."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"{path}: not a readable image ({exc.__class__.__name__})",
                         "remove or replace the file (or drop --strict to skip it)") from None


def decode_images(files: list[Path], strict: bool = False) -> tuple[list, list[int], list[dict]]:
    """(images, indices of ``files`` that decoded, skipped [{"file", "reason"}])."""
    images, kept, skipped = [], [], []
    for i, file in enumerate(files):
        try:
            images.append(decode_image(file))
        except InputError as exc:
            if strict:
                raise
            skipped.append({"file": str(file), "reason": exc.message})
            continue
        kept.append(i)
    return images, kept, skipped


def read_text_lines(path: Path, what: str) -> list[str]:
    """Non-empty stripped lines of a UTF-8 file; InputError naming the file otherwise."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path} ({exc.strerror or exc.__class__.__name__})",
                         "check the path") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line} is not UTF-8 text", f"save the {what} as UTF-8") from None
    return [line.strip() for line in text.splitlines() if line.strip()]
