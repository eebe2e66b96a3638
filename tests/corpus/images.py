"""Pictures as phones and editors save them, built with Pillow from one plain 8-bit RGB picture.

:func:`write_variants` writes each way of saving the picture and returns, per file, the array
the user sees (what a correct decoder must give) and the tolerance of the format (JPEG is lossy).
"""

from __future__ import annotations

import random
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

JPEG_MEAN_TOLERANCE = 4.0  # mean absolute difference in 8-bit levels allowed for a JPEG (quality 95)


@dataclass
class Variant:
    path: Path
    expected: np.ndarray  # uint8 [H, W, 3]: the picture as the user sees it
    lossy: bool
    wrong: np.ndarray | None = None  # what a decoder that ignores the point of the case gives


def plain_picture(height: int = 128, width: int = 96, label: str = "red triangle") -> np.ndarray:
    """A demo shape (an off-centre red triangle: neither symmetric nor square) above a white
    strip with a light-blue band (where the transparent variants are transparent)."""
    from mmdeploy.data import shapes

    rng = random.Random(7)
    meta = shapes.sample_meta(shapes.CLASS_NAMES.index(label), rng)
    pic = np.full((height, width, 3), 255, np.uint8)
    pic[:width] = np.asarray(shapes.render(meta, rng, size=width))
    pic[width + 8: width + 16] = (127, 127, 255)  # what blue at alpha 128 over white looks like
    return pic


def png16(path: Path, samples: np.ndarray) -> Path:
    """A 16-bit PNG (grey [H, W] or RGB [H, W, 3] of uint16), written by hand: Pillow writes
    16-bit grey but not 48-bit RGB, which scanners and photo editors do."""
    height, width = samples.shape[:2]
    colour = 2 if samples.ndim == 3 else 0
    raw = b"".join(b"\x00" + samples[y].astype(">u2").tobytes() for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    Path(path).write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw))
                           + chunk(b"IEND", b""))
    return Path(path)


def write_variants(folder: Path, pic: np.ndarray | None = None) -> dict[str, Variant]:
    """Every case, keyed by name; all but ``palette*``, ``gray*`` and ``bw`` show ``pic`` itself."""
    from PIL import Image

    pic = plain_picture() if pic is None else pic
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(pic)
    strip = slice(pic.shape[1], None)  # the white strip under the square picture
    out: dict[str, Variant] = {}

    image.save(folder / "plain.png")
    out["plain"] = Variant(folder / "plain.png", pic, False)

    # phones store the sensor's pixels and an EXIF orientation tag (6: turn 90° clockwise to view)
    for tag, stored in ((6, image.transpose(Image.Transpose.ROTATE_90)),
                        (8, image.transpose(Image.Transpose.ROTATE_270))):
        exif = Image.Exif()
        exif[0x0112] = tag
        path = folder / f"phone-exif{tag}.jpg"
        stored.save(path, quality=95, subsampling=0, exif=exif)
        out[f"exif{tag}"] = Variant(path, pic, True, np.asarray(stored))

    big = pic.astype(np.uint16) * 257  # the same picture in 16 bits per sample
    out["rgb48"] = Variant(png16(folder / "scan-48bit.png", big), pic, False)
    gray = np.asarray(image.convert("L"))
    out["gray16"] = Variant(png16(folder / "gray-16bit.png", gray.astype(np.uint16) * 257),
                            np.stack([gray] * 3, axis=-1), False, np.full(pic.shape, 255, np.uint8))
    image.convert("L").save(folder / "gray.png")
    out["gray"] = Variant(folder / "gray.png", np.stack([gray] * 3, axis=-1), False)
    bw = image.convert("1")
    bw.save(folder / "bw.png")
    out["bw"] = Variant(folder / "bw.png", np.stack([np.asarray(bw, np.uint8) * 255] * 3, axis=-1), False)

    image.convert("CMYK").save(folder / "print-cmyk.jpg", quality=95, subsampling=0)
    out["cmyk"] = Variant(folder / "print-cmyk.jpg", pic, True)

    # transparency: the strip fully transparent (black underneath), the band blue at alpha 128
    rgba = np.dstack([pic, np.full(pic.shape[:2], 255, np.uint8)])
    rgba[strip] = (0, 0, 0, 0)
    rgba[pic.shape[1] + 8: pic.shape[1] + 16] = (0, 0, 255, 128)
    Image.fromarray(rgba, "RGBA").save(folder / "logo-rgba.png")
    out["rgba"] = Variant(folder / "logo-rgba.png", pic, False, rgba[..., :3])

    # palette (GIF-style editors): the picture in 255 colours; with transparency the strip is
    # index 255, transparent
    pal = image.quantize(colors=255)
    pal.save(folder / "palette.png")
    seen = np.asarray(pal.convert("RGB"))
    out["palette"] = Variant(folder / "palette.png", seen, False)
    index = np.asarray(pal).copy()
    index[strip] = 255
    trans = Image.fromarray(index, "P")
    trans.putpalette(pal.getpalette()[: 255 * 3] + [0, 0, 0])
    trans.info["transparency"] = 255
    trans.save(folder / "palette-transparent.png", transparency=255)
    expected = seen.copy()
    expected[strip] = 255
    out["palette_transparent"] = Variant(folder / "palette-transparent.png", expected, False, np.where(
        np.arange(pic.shape[0])[:, None, None] >= pic.shape[1], 0, seen).astype(np.uint8))

    image.save(folder / "CAMERA.JPG", quality=95, subsampling=0)
    out["upper_case"] = Variant(folder / "CAMERA.JPG", pic, True)
    image.save(folder / "lossless.webp", lossless=True)
    out["webp"] = Variant(folder / "lossless.webp", pic, False)
    return out


def close(got: np.ndarray, variant: Variant) -> bool:
    """Whether a decoded array is the picture the user sees (exact, or within JPEG tolerance)."""
    got = np.asarray(got)
    if got.shape != variant.expected.shape or got.dtype != np.uint8:
        return False
    diff = np.abs(got.astype(np.int16) - variant.expected.astype(np.int16))
    return diff.mean() <= JPEG_MEAN_TOLERANCE if variant.lossy else int(diff.max()) <= 1
