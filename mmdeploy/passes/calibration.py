"""Calibration data: reading ``--calib PATH``, checking it, hashing it, feeding quantizers.

``--calib`` is a folder of images (class sub-folders, as in an ImageFolder, are walked), a
``.txt`` file of captions (one per line), a folder of audio clips, or a ``.csv``/``.jsonl`` of
``image,caption`` pairs or VQA questions (images for one tower, text for the other): the formats
``--eval`` reads.  Files are listed and decoded by :mod:`mmdeploy.data` (the one door for user
files).  The model family's adapter turns them into feeds (its image processor, tokenizer,
feature extractor); when an adapter has no ``calibration_feeds`` yet, images and captions are
preprocessed here from the bundle's ``preprocess/`` files.  Every failure is a one-line
:class:`~mmdeploy.errors.CalibrationError`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.data.calib import is_set_file, set_modalities
from mmdeploy.data.media import AUDIO_SUFFIXES, IMAGE_SUFFIXES, media_files, modality_of
from mmdeploy.errors import CalibrationError
from mmdeploy.models.preprocess import read_captions  # noqa: F401  (one reader for every caller)

TEXT_SUFFIXES = {".txt"}
JUDGE_SAMPLES = 96  # samples the accuracy guard judges on (held out from calibration when there are more)
JUDGE_BATCH = 16  # held-out samples run this many at a time where the batch is dynamic
# component input names -> the modality of data that feeds it
INPUT_MODALITIES = {"pixel_values": "image", "input_ids": "text", "input_features": "audio",
                    "input_values": "audio"}


@dataclass
class CalibrationSet:
    feeds: list[dict[str, np.ndarray]]  # batch-1 feeds
    source: str  # the --calib path, "adapter-default" or "reference.npz"
    sha256: str
    kind: str  # image | text | audio | tensor
    extra: dict[str, Any] = field(default_factory=dict)
    heldout: list[dict[str, np.ndarray]] = field(default_factory=list)  # never calibrated on

    @property
    def judge_feeds(self) -> list[dict[str, np.ndarray]]:
        """What the accuracy guard judges on: samples the calibration never saw when the data has
        more than the calibration limit (a model calibrated on its judge set looks better than it
        is on the user's inputs), else the first calibration samples."""
        return self.heldout or self.feeds[:JUDGE_SAMPLES]

    def record(self) -> dict[str, Any]:
        return {"source": self.source, "sha256": self.sha256, "kind": self.kind,
                "samples": len(self.feeds), "judged_on": f"{len(self.heldout)} held-out samples" if self.heldout
                else f"{len(self.judge_feeds)} calibration samples", **self.extra}


def stack_feeds(feeds: list[dict[str, np.ndarray]], size: int) -> list[dict[str, np.ndarray]]:
    """Same-shaped feeds joined along the batch axis, ``size`` at a time."""
    return [{k: np.concatenate([f[k] for f in feeds[i:i + size]]) for k in feeds[i]}
            for i in range(0, len(feeds), size)]


def component_modality(input_names: list[str]) -> str:
    for name in input_names:
        if name in INPUT_MODALITIES:
            return INPUT_MODALITIES[name]
    return "tensor"


def data_kind(path: Path) -> str:
    """image | text | audio for a --calib path; CalibrationError if empty, unreadable or mixed."""
    path = Path(path)
    if not path.exists():
        raise CalibrationError(f"--calib {path} does not exist",
                               "pass a folder of images, a captions .txt file or a folder of audio clips")
    if path.is_file():
        if path.suffix.lower() in TEXT_SUFFIXES:
            return "text"
        if is_set_file(path):  # image,caption pairs or VQA: media for one tower, text for the other
            return set_modalities(path)[0]
        if modality_of(path):
            raise CalibrationError(f"--calib {path} is a single file",
                                   "pass the folder that holds the calibration images or clips")
        raise CalibrationError(f"--calib {path} is not a captions .txt file",
                               "pass a folder of images, a captions .txt file or a folder of audio clips")
    try:
        entries = [p for p in path.iterdir() if not p.name.startswith(".")]
    except OSError as exc:
        raise CalibrationError(f"--calib {path} cannot be read ({exc.strerror})",
                               "check the folder's permissions") from None
    if not entries:
        raise CalibrationError(f"--calib folder {path} is empty",
                               "put calibration images (or audio clips) in it, or omit --calib")
    kinds = {modality_of(f) for f in media_files(path, recursive=True)}  # class folders included
    if not kinds:
        if any(p.is_file() and p.suffix.lower() in TEXT_SUFFIXES for p in entries):
            raise CalibrationError(f"--calib folder {path} holds only text files",
                                   "pass the captions .txt file itself")
        raise CalibrationError(f"--calib folder {path} holds no images or audio clips",
                               "supported: " + ", ".join(sorted(IMAGE_SUFFIXES | AUDIO_SUFFIXES)))
    if len(kinds) > 1:
        raise CalibrationError(f"--calib folder {path} mixes images and audio clips",
                               "use one folder per modality")
    return kinds.pop()


def data_kinds(path: Path) -> tuple[str, ...]:
    """Every modality a --calib path feeds: two for a pairs/VQA file (its images or clips, and its
    captions or questions), else :func:`data_kind`'s one."""
    path = Path(path)
    if path.is_file() and is_set_file(path):
        return set_modalities(path)
    return (data_kind(path),)


def check_modality(kind: str, modality: str, component: str) -> None:
    if modality != "tensor" and kind != modality:
        what = {"image": "images", "text": "captions", "audio": "audio clips"}
        raise CalibrationError(
            f"--calib holds {what.get(kind, kind)} but component {component!r} takes {what.get(modality, modality)}",
            f"pass {what.get(modality, modality)} for {component!r}, or quantize only matching components "
            "with --components")


def split_batch(feeds: list[dict[str, np.ndarray]], batched: list[str] | None = None) -> list[dict[str, np.ndarray]]:
    """Batch-1 feeds from feeds of any batch size.

    Only the inputs in ``batched`` (those with a batch axis; default: all) are sliced per sample;
    the others (a shared ``scale [1, 1]``) are passed whole to every sample."""
    out = []
    for feed in feeds:
        sliced = [k for k in feed if batched is None or k in batched]
        n = int(np.shape(feed[sliced[0]])[0]) if sliced else (1 if feed else 0)
        out.extend({k: (np.asarray(v)[i:i + 1] if k in sliced else np.asarray(v)) for k, v in feed.items()}
                   for i in range(n))
    return out


def pad_to_common_shape(feeds: list[dict[str, np.ndarray]]) -> tuple[list[dict[str, np.ndarray]], dict]:
    """Zero-pad inputs whose non-batch dims differ between samples (captions of different token
    lengths) to the longest, so every calibrator (minmax, entropy, percentile, NNCF, INC) sees one
    shape.  Padding goes at the end with value 0, which an attention mask of 0 masks out.
    Returns the feeds and ``{input: [padded shape]}`` for the inputs that were padded."""
    if len(feeds) < 2:
        return feeds, {}
    padded: dict[str, list[int]] = {}
    for name in feeds[0]:
        shapes = {np.shape(f[name]) for f in feeds if name in f}
        if len(shapes) < 2 or len({len(s) for s in shapes}) != 1:
            continue
        target = [max(dims) for dims in zip(*shapes)]
        padded[name] = target[1:]
    if not padded:
        return feeds, {}
    out = []
    for feed in feeds:
        new = dict(feed)
        for name, rest in padded.items():
            value = np.asarray(feed[name])
            widths = [(0, 0)] + [(0, want - have) for want, have in zip(rest, value.shape[1:])]
            new[name] = np.pad(value, widths, constant_values=0)
        out.append(new)
    return out, padded


def feeds_sha256(feeds: list[dict[str, np.ndarray]]) -> str:
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            value = np.ascontiguousarray(feed[name])
            digest.update(f"{name}:{value.dtype}:{value.shape}".encode())
            digest.update(value.tobytes())
    return digest.hexdigest()


def _static_dim(shape: list, index: int) -> int | None:
    return shape[index] if len(shape) > index and isinstance(shape[index], int) and shape[index] > 0 else None


def preprocess_images(images: list, preprocess_dir: Path | None, input_shape: list) -> list[dict]:
    """pixel_values from PIL images with the bundle's image processor (or a plain resize)."""
    if preprocess_dir and (Path(preprocess_dir) / "preprocessor_config.json").is_file():
        from transformers import AutoImageProcessor

        processor = AutoImageProcessor.from_pretrained(str(preprocess_dir))
        return [{"pixel_values": processor(images=img, return_tensors="np")["pixel_values"].astype(np.float32)}
                for img in images]
    height, width = _static_dim(input_shape, 2) or 224, _static_dim(input_shape, 3) or 224
    feeds = []
    for img in images:
        arr = np.asarray(img.resize((width, height)), dtype=np.float32) / 255.0
        arr = (arr - 0.5) / 0.5
        feeds.append({"pixel_values": arr.transpose(2, 0, 1)[None]})
    return feeds


def tokenize(captions: list[str], preprocess_dir: Path | None, input_names: list[str],
             input_shape: list) -> list[dict]:
    """input_ids (+ attention_mask) with the bundle's tokenizer."""
    if not preprocess_dir or not Path(preprocess_dir).is_dir():
        raise CalibrationError("the artifact has no tokenizer (no preprocess/ folder) to read captions with",
                               "quantize the whole bundle written by `mmdeploy convert`")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(preprocess_dir))
    length = _static_dim(input_shape, 1)
    kwargs = {"padding": "max_length", "max_length": length} if length else {"padding": True}
    feeds = []
    for caption in captions:
        enc = tokenizer([caption], truncation=True, return_tensors="np", **kwargs)
        feeds.append({k: np.asarray(enc[k], dtype=np.int64) for k in input_names if k in enc})
    return feeds


def feeds_reader(feeds: list[dict[str, np.ndarray]], input_names: list[str] | None = None):
    """An onnxruntime CalibrationDataReader over a list of feeds."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.items = [{k: v for k, v in f.items() if input_names is None or k in input_names}
                          for f in feeds]
            self.index = 0

        def get_next(self):
            if self.index >= len(self.items):
                return None
            self.index += 1
            return self.items[self.index - 1]

        def __len__(self):
            return len(self.items)

        def set_range(self, start_index: int, end_index: int):
            self.items = self.items[start_index:end_index]
            self.index = 0

    return _Reader()
