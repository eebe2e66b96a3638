"""Image preprocessing from a bundle's ``preprocess/preprocessor_config.json``, in numpy + PIL.

The same steps, in the same order, as transformers' PIL image processors (CLIP, SigLIP, BLIP,
ViT, ALIGN): convert to RGB, resize (shortest edge keeping the aspect ratio, or to height x
width) with the configured PIL filter, center crop, rescale (ALIGN's offset included),
normalize.  Nothing of transformers is imported; the result equals the HF processor's within
one grey level.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mmdeploy.errors import InputError

BICUBIC = 3


def to_rgb_array(image) -> np.ndarray:
    """A uint8 [H, W, 3] RGB array from a path (decoded by :mod:`mmdeploy.data.media`), a PIL image
    or a uint8 HWC array (grey [H, W] and RGBA accepted)."""
    from PIL import Image

    if isinstance(image, (str, Path)):
        from mmdeploy.data.media import decode_image

        path = Path(image)
        if not path.is_file():
            raise InputError(f"{path}: no such image file", "check the path")
        try:
            image = decode_image(path)
        except InputError as exc:
            raise InputError(exc.message, "pass an image file (PNG, JPEG, ...)") from None
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"expected an image path, a PIL image or a uint8 [H, W, 3] array, got "
                         f"{array.dtype} {list(array.shape)}", "decode the image to RGB uint8 first")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.shape[2] == 4:
        return np.asarray(Image.fromarray(array, "RGBA").convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(array)


def read_preprocessor_config(folder: Path, what: str, hint: str) -> dict:
    """A bundle's ``preprocess/preprocessor_config.json``; InputError naming ``what`` when absent."""
    path = Path(folder) / "preprocessor_config.json"
    if not path.is_file():
        raise InputError(f"{folder} has no preprocessor_config.json ({what})", hint)
    return json.loads(path.read_text(encoding="utf-8"))


class ImagePreprocessor:
    """``__call__(images) -> pixel_values`` float32 [N, 3, h, w] as the bundle's image processor."""

    def __init__(self, config: dict):
        self.config = config
        size = config.get("size") or {}
        if isinstance(size, int):
            size = {"shortest_edge": size} if not config.get("default_to_square", False) else \
                {"height": size, "width": size}
        self.size = size
        self.resample = int(config.get("resample", BICUBIC))
        crop = config.get("crop_size") or {}
        if isinstance(crop, int):
            crop = {"height": crop, "width": crop}
        self.crop = (int(crop["height"]), int(crop["width"])) if config.get("do_center_crop") and crop else None
        self.rescale = float(config.get("rescale_factor", 1 / 255)) if config.get("do_rescale", True) else None
        self.offset = bool(config.get("rescale_offset", False))
        self.normalize = config.get("do_normalize", True)
        self.mean = np.asarray(config.get("image_mean", [0.5] * 3), np.float32).reshape(3, 1, 1)
        self.std = np.asarray(config.get("image_std", [0.5] * 3), np.float32).reshape(3, 1, 1)
        if config.get("do_resize", True) and not ("shortest_edge" in self.size or
                                                  ("height" in self.size and "width" in self.size)):
            raise InputError(f"image processor size {self.size} is not supported by the runtime",
                             "a shortest_edge or a height and width size is")

    @classmethod
    def from_dir(cls, folder: Path) -> "ImagePreprocessor":
        return cls(read_preprocessor_config(folder, "the image processor", "convert the checkpoint with its "
                                            "processor files (or `mmdeploy convert --processor DIR`)"))

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(h, w) after the resize, as transformers computes it (the long edge truncated)."""
        if "shortest_edge" in self.size:
            short = int(self.size["shortest_edge"])
            if height <= width:
                return short, int(short * width / height)
            return int(short * height / width), short
        return int(self.size["height"]), int(self.size["width"])

    def one(self, image) -> np.ndarray:
        from PIL import Image

        array = to_rgb_array(image)
        if self.config.get("do_resize", True):
            h, w = self.output_size(*array.shape[:2])
            if (h, w) != array.shape[:2]:
                array = np.asarray(Image.fromarray(array).resize((w, h), resample=self.resample))
        x = np.moveaxis(array, -1, 0)  # CHW uint8
        if self.crop:
            x = center_crop(x, *self.crop)
        x = x.astype(np.float32)
        if self.rescale is not None:
            x = x * np.float32(self.rescale)
            if self.offset:
                x = x - np.float32(1.0)
        if self.normalize:
            x = (x - self.mean) / self.std
        return x.astype(np.float32)

    def __call__(self, images: list) -> np.ndarray:
        return np.stack([self.one(image) for image in images]).astype(np.float32)


def center_crop(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """A CHW array cropped at its center (zero-padded first where it is smaller), as transformers."""
    _, h, w = x.shape
    if h < height or w < width:
        ph, pw = max(height - h, 0), max(width - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)))
        _, h, w = x.shape
    top, left = (h - height) // 2, (w - width) // 2
    return x[:, top:top + height, left:left + width]
