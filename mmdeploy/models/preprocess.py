"""Preprocessing shared by families: images and captions, from local processor files only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdeploy.errors import CalibrationError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def quiet_libraries() -> None:
    """Silence third-party chatter that is not the user's business.

    transformers' advisory warnings and progress bars, torchao's optional-kernel load failures
    (torchao comes with litert-torch and transformers imports it), torch's pytree notices.
    Also forces Hugging Face offline mode: nothing is ever downloaded.
    """
    import logging
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    for name in ("transformers", "torchao", "torch.utils._pytree", "torch.onnx", "nncf", "openvino"):
        logging.getLogger(name).setLevel(logging.ERROR)


def quiet_transformers() -> None:
    quiet_libraries()
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover
        pass


def load_image_processor(folder: Path, class_name: str):
    """The family's image processor from local files; the PIL variant when torchvision is absent."""
    quiet_transformers()
    import transformers

    cls = getattr(transformers, class_name + "Pil", None) or getattr(transformers, class_name)
    return cls.from_pretrained(str(folder), local_files_only=True)


def load_tokenizer(folder: Path):
    quiet_transformers()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def open_image(path: Path):
    """A decoded RGB PIL image, or CalibrationError naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CalibrationError(f"{path} is not a readable image ({exc.__class__.__name__})",
                               "remove it or replace it with a PNG/JPEG file") from None


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def read_captions(path: Path, limit: int | None = None) -> list[str]:
    """Non-empty lines of a UTF-8 text file: captions, prompts, sentences."""
    path = Path(path)
    if path.is_dir():
        raise CalibrationError(f"{path} is a folder, the text component needs a captions file",
                               "pass a .txt file with one caption per line")
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError:
        raise CalibrationError(f"{path} is not UTF-8 text", "pass a .txt file with one caption per line") from None
    except OSError as exc:
        raise CalibrationError(f"cannot read captions from {path} ({exc.strerror or exc.__class__.__name__})",
                               "check the path") from None
    captions = [c for c in lines if c]
    if not captions:
        raise CalibrationError(f"{path} holds no captions", "pass a .txt file with one caption per line")
    return captions[:limit]


def skimage_photos() -> list[tuple[str, "object"]]:
    """Real photos shipped inside the scikit-image wheel (offline), with zero-shot labels."""
    try:
        from skimage import data
    except ImportError:
        return []
    from PIL import Image

    wanted = [("astronaut", "an astronaut"), ("chelsea", "a cat"), ("coffee", "a cup of coffee"),
              ("rocket", "a rocket"), ("camera", "a man with a camera"), ("horse", "a horse"),
              ("hubble_deep_field", "galaxies in space"), ("moon", "the moon"),
              ("coins", "coins"), ("clock", "a clock"), ("page", "a page of text"), ("brick", "a brick wall")]
    photos = []
    for name, label in wanted:
        try:
            array = getattr(data, name)()
        except Exception:  # noqa: BLE001 - some datasets need a download; skip those
            continue
        array = np.asarray(array)
        if array.dtype == bool:
            array = array.astype(np.uint8) * 255
        image = Image.fromarray(array.astype(np.uint8)).convert("RGB")
        photos.append((label, image))
    return photos
