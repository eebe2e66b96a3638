"""The one door for the user's media files: one extension table, one image and one audio decoder.

Every module that reads a user's picture or recording comes here (adapters, calibration, prune,
eval, classify, caption).  Images are decoded as the user sees them: upright (EXIF orientation
applied), 8-bit RGB from whatever was saved — 16-bit scaled to 8 bits (not clipped); CMYK,
palette, grayscale and 1-bit converted; transparency composited on white, as transformers'
``convert_to_rgb`` does.  Audio is mono float32 in [-1, 1], resampled to the model's rate.

Readers skip a file that does not decode and count it (:func:`skipped_note` is the one line that
says so) unless ``strict``; every failure names the file.  Only numpy and Pillow here (scipy and
soundfile lazily): the torch-free runtime imports this module.
"""

from __future__ import annotations

import logging
import os
import wave
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path

import numpy as np

from mmdeploy.errors import InputError

log = logging.getLogger("mmdeploy.audio")

# the one extension table (compared lower-case: photo.JPG is an image)
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".bmp", ".dib", ".gif", ".webp", ".avif",
                            ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm"})
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".mp3", ".aiff", ".aif"})
WAV_SUFFIXES = frozenset({".wav", ".wave"})  # decoded by the standard library; the rest need soundfile


def modality_of(path: str | Path) -> str | None:
    """``image`` | ``audio`` | None, from the file's extension (any case)."""
    suffix = Path(path).suffix.lower()
    return "image" if suffix in IMAGE_SUFFIXES else "audio" if suffix in AUDIO_SUFFIXES else None


def is_image(path: str | Path) -> bool:
    return modality_of(path) == "image"


def is_audio(path: str | Path) -> bool:
    return modality_of(path) == "audio"


def media_files(folder: str | Path, recursive: bool = False, modality: str | None = None) -> list[Path]:
    """Image and audio files in ``folder`` (only ``modality``'s when given), hidden files and
    folders ignored.  ``recursive`` walks sub-folders as torchvision's ImageFolder does (links
    followed, each real folder once): grouped by folder in sorted path order, names sorted."""
    folder = Path(folder)

    def wanted(name: str) -> bool:
        kind = modality_of(name)
        return not name.startswith(".") and kind is not None and (modality is None or kind == modality)

    if not recursive:
        return sorted(p for p in folder.iterdir() if p.is_file() and wanted(p.name))
    groups, seen = [], set()
    for root, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:  # a link back up the tree
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        groups.append((root, sorted(n for n in names if wanted(n) and os.path.isfile(os.path.join(root, n)))))
    return [Path(root) / name for root, names in sorted(groups) for name in names]


# --------------------------------------------------------------------------- images


def to_rgb(img):
    """An upright 8-bit RGB PIL image from a loaded PIL image of any mode (see the module doc)."""
    from PIL import Image, ImageOps

    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - an unparseable EXIF block: the picture as stored
        pass
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        values = np.asarray(img).astype(np.float64)
        top = 65535.0 if values.size == 0 or (values.min() >= 0 and values.max() <= 65535) else 2.0 ** 32 - 1
        if top > 65535:  # 32-bit signed samples: shift to unsigned
            values = values + 2.0 ** 31
        img = Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")
    elif img.mode == "F":  # float samples: [0, 1] scaled, otherwise read as 0-255
        values = np.nan_to_num(np.asarray(img, dtype=np.float64))
        scale = 255.0 if values.size and values.max() <= 1.0 else 1.0
        img = Image.fromarray(np.clip(np.rint(values * scale), 0, 255).astype(np.uint8), "L")
    if img.mode == "RGB":
        return img
    try:
        rgba = img.convert("RGBA")
    except ValueError:  # a mode without an RGBA conversion (premultiplied La)
        return img.convert("RGB")
    # transformers' convert_to_rgb: alpha-composite over a white background
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255)), rgba).convert("RGB")


def _unreadable_reason(path: Path, exc: BaseException) -> str:
    try:
        if path.stat().st_size == 0:
            return "empty file"
    except OSError:
        pass
    text = " ".join(str(exc).split())
    if "truncated" in text.lower():
        return "truncated"
    if exc.__class__.__name__ == "UnidentifiedImageError":
        return "not an image Pillow can read"
    if exc.__class__.__name__ == "DecompressionBombError":
        return "too many pixels"
    return f"{exc.__class__.__name__}: {text[:120]}" if text else exc.__class__.__name__


def decode_image(path: str | Path):
    """The picture as the user sees it: an upright 8-bit RGB PIL image (see the module doc).

    InputError ``PATH: not a readable image (REASON)`` (or ``no such image file``) otherwise."""
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such image file", "check the path")
    try:
        with Image.open(path) as img:
            img.load()
            return to_rgb(img)
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise InputError(f"{path}: not a readable image ({_unreadable_reason(path, exc)})",
                         "remove or replace the file (PNG, JPEG, WebP, ...)") from None


def image_array(path: str | Path) -> np.ndarray:
    """:func:`decode_image` as a uint8 [H, W, 3] array."""
    return np.asarray(decode_image(path), dtype=np.uint8)


def decode_images(files: list[Path], strict: bool = False) -> tuple[list, list[int], list[dict]]:
    """(images, indices of ``files`` that decoded, skipped ``[{"file", "reason"}]``); with
    ``strict`` the first unreadable file is an InputError."""
    return _decode_all(decode_image, files, strict)


def _decode_all(decode, files: list[Path], strict: bool) -> tuple[list, list[int], list[dict]]:
    """``decode`` each file: (decoded, indices that decoded, skipped records); strict: raise."""
    decoded, kept, skipped = [], [], []
    for i, file in enumerate(files):
        try:
            decoded.append(decode(file))
        except InputError as exc:
            if strict:
                raise
            skipped.append(skip_record(Path(file), exc))
            continue
        kept.append(i)
    return decoded, kept, skipped


def skip_record(file: Path, exc: InputError) -> dict:
    """A skipped-file record: the file and the error's message without the file's name in it."""
    reason = exc.message.removeprefix(f"{file}: ").replace(f" {file}", "")
    return {"file": str(file), "reason": reason}


def skipped_note(skipped: list[dict]) -> str | None:
    """The one line for files skipped as unreadable, or None when none was."""
    if not skipped:
        return None
    first = skipped[0]
    reason = first["reason"]
    if reason.startswith("not a readable image (") and reason.endswith(")"):
        reason = reason[len("not a readable image ("):-1]
    many = "file" if len(skipped) == 1 else "files"
    return f"skipped {len(skipped)} unreadable {many}: first: {first['file']} ({reason})"


@dataclass
class Images:
    """Decoded pictures of a folder, with the files they came from and those skipped."""

    images: list
    files: list[Path]
    skipped: list[dict] = field(default_factory=list)
    source: Path | None = None

    @property
    def note(self) -> str | None:
        return skipped_note(self.skipped)


def image_files(path: str | Path) -> list[Path]:
    """The images of a folder and of its sub-folders (a plain folder or an ImageFolder), sorted;
    a single image file is itself.  InputError for a missing path."""
    path = Path(path)
    if path.is_file():
        return [path] if is_image(path) else []
    if not path.is_dir():
        raise InputError(f"{path} does not exist", "pass a folder of images")
    return media_files(path, recursive=True, modality="image")


def decode_files(files: list[Path], limit: int | None = None, strict: bool = False,
                 source: Path | None = None) -> Images:
    """The first ``limit`` decodable images of ``files``; unreadable ones skipped and counted
    (:attr:`Images.note`), or an InputError with ``strict``."""
    out = Images([], [], [], source)
    for file in files:
        if limit is not None and len(out.images) >= limit:
            break
        try:
            out.images.append(decode_image(file))
        except InputError as exc:
            if strict:
                raise
            out.skipped.append(skip_record(Path(file), exc))
            continue
        out.files.append(Path(file))
    return out


def read_images(path, limit: int | None = None, strict: bool = False) -> Images:
    """The first ``limit`` decodable images of a folder (nested class folders included), see
    :func:`decode_files`.  ``path`` may be an :class:`Images` already decoded: then its first ``limit``."""
    if isinstance(path, Images):
        return path if limit is None else Images(path.images[:limit], path.files[:limit], path.skipped, path.source)
    return decode_files(image_files(path), limit, strict, Path(path))


# --------------------------------------------------------------------------- audio


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a PCM WAV file to mono float32 in [-1, 1] and its sample rate."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as fh:
            channels, width, rate = fh.getnchannels(), fh.getsampwidth(), fh.getframerate()
            raw = fh.readframes(fh.getnframes())
    except (wave.Error, EOFError, OSError) as exc:
        detail = str(exc) or ("empty file" if path.is_file() and path.stat().st_size == 0 else "truncated")
        raise InputError(f"cannot decode audio file {path}: {detail}",
                         "pass a PCM .wav file (install soundfile for other formats)") from None
    if width == 1:
        data = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif width == 2:
        data = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        ints = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        data = (np.where(ints >= 1 << 23, ints - (1 << 24), ints)).astype(np.float32) / float(1 << 23)
    elif width == 4:
        data = np.frombuffer(raw, "<i4").astype(np.float32) / float(1 << 31)
    else:  # pragma: no cover - wave rejects other widths itself
        raise InputError(f"cannot decode audio file {path}: {8 * width}-bit samples",
                         "pass 8/16/24/32-bit PCM")
    if channels > 1:
        data = data[: len(data) // channels * channels].reshape(-1, channels).mean(axis=1)
    if data.size == 0:
        raise InputError(f"audio file {path} holds no samples", "pass a non-empty recording")
    return data.astype(np.float32), rate


def write_wav(path: str | Path, samples: np.ndarray, rate: int) -> Path:
    """Write mono float samples in [-1, 1] as 16-bit PCM."""
    pcm = (np.clip(np.asarray(samples, np.float64), -1.0, 1.0) * 32767.0).round().astype("<i2")
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(int(rate))
        fh.writeframes(pcm.tobytes())
    return Path(path)


def decode_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Mono float32 samples and sample rate of any supported file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"audio file {path} does not exist", "check the path")
    if path.suffix.lower() in WAV_SUFFIXES:
        return read_wav(path)
    try:
        import soundfile
    except ImportError:
        raise InputError(f"cannot decode {path.name}: only .wav is supported without soundfile",
                         "convert it to .wav or pip install soundfile") from None
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - soundfile raises its own error types
        raise InputError(f"cannot decode audio file {path}: {exc}", "pass a valid audio file") from None
    if data.size == 0:
        raise InputError(f"audio file {path} holds no samples", "pass a non-empty recording")
    return data.mean(axis=1).astype(np.float32), int(rate)


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return samples
    g = gcd(int(rate), int(target))
    from scipy.signal import resample_poly

    return resample_poly(samples, target // g, rate // g).astype(np.float32)


def at_rate(samples: np.ndarray, rate: int, sampling_rate: int, name: str = "clip") -> np.ndarray:
    """``samples`` at ``sampling_rate`` (resampled, with a log line naming ``name``, when not)."""
    if rate != sampling_rate:
        log.warning("%s: sample rate %d Hz, resampled to %d Hz", name, rate, sampling_rate)
        samples = resample(samples, rate, sampling_rate)
    return samples


def load_audio(path: str | Path, sampling_rate: int) -> np.ndarray:
    """Decode ``path`` to mono float32 at ``sampling_rate`` (resampling, with a log line)."""
    samples, rate = decode_audio(path)
    return at_rate(samples, rate, sampling_rate, Path(path).name)


def decode_clips(files: list[Path], strict: bool = False) -> tuple[list, list[int], list[dict]]:
    """(clips as (samples, rate) at their own rate, indices of ``files`` that decoded, skipped
    ``[{"file", "reason"}]``): :func:`decode_images` for audio."""
    return _decode_all(decode_audio, files, strict)


def audio_files(path: str | Path) -> list[Path]:
    """The audio clips of a folder and its sub-folders (sorted); a single file is itself."""
    path = Path(path)
    if path.is_file():
        return [path]
    return media_files(path, recursive=True, modality="audio")


# --------------------------------------------------------------------------- text


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
