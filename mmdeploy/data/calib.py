"""``--calib PATH``: the user formats ``--eval`` reads, as calibration samples.

A folder of images or an ImageFolder (class folders, files at any depth), a ``.csv``/``.jsonl``
of ``image,caption`` pairs (images for the vision tower, captions for the text tower), a VQA
``.jsonl`` (images and questions), a ``.txt`` of captions (one per line), a folder of audio
clips.  Files are decoded by :mod:`mmdeploy.data.media`; unreadable ones are skipped and counted.
Every failure is a one-line :class:`~mmdeploy.errors.CalibrationError`.
"""

from __future__ import annotations

from pathlib import Path

from mmdeploy.data.media import Images, audio_files, decode_files, image_files, is_audio, media_files, read_images
from mmdeploy.errors import CalibrationError, InputError

SET_SUFFIXES = (".csv", ".jsonl", ".json")  # pairs and VQA files, as --eval reads them
TEXT_SUFFIXES = (".txt",)


def is_set_file(path: str | Path) -> bool:
    return Path(path).suffix.lower() in SET_SUFFIXES


def _read_set(path: Path):
    """The pairs or VQA set of a .csv/.jsonl file (InputError from the readers as CalibrationError)."""
    from mmdeploy.data.pairs import read_pairs
    from mmdeploy.data.vqa import is_vqa, read_vqa

    try:
        return read_vqa(path) if is_vqa(path) else read_pairs(path)
    except InputError as exc:
        raise CalibrationError(exc.message, exc.hint) from None


def set_modalities(path: str | Path) -> tuple[str, ...]:
    """The modalities a pairs/VQA file feeds: its media (image or audio) and text."""
    data = _read_set(Path(path))
    return (getattr(data, "modality", "image"), "text")


def calibration_images(path, limit: int | None = None) -> Images:
    """The first ``limit`` decodable images of ``--calib PATH`` (folder, ImageFolder, pairs or VQA
    file); unreadable files skipped and counted (:attr:`Images.note`).  An :class:`Images`
    already decoded is passed through (cut to ``limit``)."""
    if isinstance(path, Images):
        return read_images(path, limit)
    path = Path(path)
    if not path.exists():
        raise CalibrationError(f"--calib {path} does not exist",
                               "pass a folder of images (an ImageFolder of class folders works too)")
    out = decode_files(images_of(path), limit, source=path)
    if out.images:
        return out
    if out.skipped:
        first = out.skipped[0]
        raise CalibrationError(f"--calib {path}: its images cannot be decoded ({len(out.skipped)} unreadable; "
                               f"first: {first['file']}: {first['reason']})", "remove or replace the files")
    audio = media_files(path, recursive=True, modality="audio") if path.is_dir() else audio_of(path)
    raise CalibrationError(f"--calib {path} holds {'audio, not images' if audio else 'no images'}",
                           "the vision component calibrates on a folder of images (PNG, JPEG, WebP, ...)")


def audio_of(path: str | Path) -> list[Path]:
    """The audio clips of ``--calib PATH``: a folder (sub-folders included), one clip, or the
    ``audio`` column of a pairs file."""
    path = Path(path)
    if path.is_file() and is_set_file(path):
        data = _read_set(path)
        return list(data.files) if getattr(data, "modality", "image") == "audio" else []
    if path.is_file():
        return [path] if is_audio(path) else []
    return audio_files(path)


def images_of(path: str | Path) -> list[Path]:
    """The image files of ``--calib PATH`` (undecoded)."""
    path = Path(path)
    if path.is_file() and is_set_file(path):
        data = _read_set(path)
        return list(data.files) if getattr(data, "modality", "image") == "image" else []
    return image_files(path) if path.exists() else []


def calibration_texts(path: str | Path, limit: int | None = None) -> list[str]:
    """Captions of ``--calib PATH``: the lines of a ``.txt``, the captions of a pairs file, the
    questions of a VQA file."""
    from mmdeploy.data.media import read_text_lines

    path = Path(path)
    if path.is_dir():
        raise CalibrationError(f"{path} is a folder, the text component needs a captions file",
                               "pass a .txt file with one caption per line (or a .csv/.jsonl of image,caption)")
    if is_set_file(path):
        data = _read_set(path)
        texts = list(getattr(data, "questions", None) or data.captions)
    else:
        try:
            texts = read_text_lines(path, "captions")
        except InputError as exc:
            raise CalibrationError(exc.message, exc.hint) from None
    if not texts:
        raise CalibrationError(f"{path} holds no captions", "pass a .txt file with one caption per line")
    return texts[:limit]
