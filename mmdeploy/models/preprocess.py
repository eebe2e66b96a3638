"""Preprocessing shared by families: images and captions, from local processor files only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mmdeploy.errors import CalibrationError


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


def read_captions(path: Path, limit: int | None = None) -> list[str]:
    """Non-empty lines of a UTF-8 text file: captions, prompts, sentences (or the captions of a
    .csv/.jsonl of image,caption pairs, the questions of a VQA file: the formats --eval reads)."""
    from mmdeploy.data.calib import calibration_texts, is_set_file

    path = Path(path)
    if is_set_file(path) and path.is_file():
        return calibration_texts(path, limit)
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


# ---- preprocessing files: from the checkpoint, from --processor DIR, derived, or none ------------
#
# A checkpoint folder written by ``model.save_pretrained()`` alone has no tokenizer or processor
# files.  Export and verification never need them; what they would give is taken from the
# user's ``--processor DIR`` (adapter option key ``processor``), else from the checkpoint folder,
# else derived from config.json with the family's standard settings, else skipped with a note.
# :class:`Provenance` records which, for one line of output and the bundle manifest's
# ``preprocessing`` metadata.

TOKENIZER_VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "tokenizer.model",
                         "sentencepiece.bpe.model")
PREPROCESS_FILE_NAMES = ("preprocessor_config.json", "processor_config.json", "tokenizer.json",
                         "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.txt",
                         "vocab.json", "merges.txt", "spiece.model", "tokenizer.model", "sentencepiece.bpe.model")
# the standard normalizations the families were trained with (transformers' image_utils)
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_STANDARD_MEAN = [0.5, 0.5, 0.5]
IMAGENET_STANDARD_STD = [0.5, 0.5, 0.5]
_RANK = {"derived": 3, "processor-dir": 2, "checkpoint": 1, "none": 0}


class Provenance:
    """Where each preprocessing part (tokenizer, image processor, feature extractor) came from."""

    def __init__(self):
        self.parts: dict[str, str] = {}
        self.notes: list[str] = []
        self.derived: dict[str, object] = {}  # part -> derived processor (saved into the bundle)
        self.derived_dir = None  # TemporaryDirectory of the saved derived processors (removed with self)

    def add(self, part: str, source: str, note: str | None = None) -> None:
        if part in self.parts:
            return
        self.parts[part] = source
        if note:
            self.notes.append(note)

    @property
    def source(self) -> str:
        """``checkpoint`` | ``processor-dir`` | ``derived`` | ``none``: the least direct source used."""
        if not self.parts:
            return "none"
        return max(self.parts.values(), key=_RANK.get)

    def record(self) -> dict:
        return {"source": self.source, "notes": list(self.notes), "parts": dict(self.parts)}

    def summary(self) -> str | None:
        """One line for the user when anything was not taken from the checkpoint itself."""
        if all(s == "checkpoint" for s in self.parts.values()):
            return None
        return f"preprocessing ({self.source}): " + "; ".join(self.notes)


def processor_dir_of(options: dict | None) -> Path | None:
    """The ``processor`` option (``--processor DIR``) as a checked folder, or None."""
    from mmdeploy.errors import InputError

    value = (options or {}).get("processor")
    if not value:
        return None
    folder = Path(value)
    if not folder.is_dir():
        raise InputError(f"--processor {folder} is not a folder",
                         "pass the folder holding the tokenizer / preprocessor_config.json (e.g. the base model)")
    if not any((folder / name).is_file() for name in PREPROCESS_FILE_NAMES):
        raise InputError(f"--processor {folder} holds no tokenizer or processor files",
                         "pass a folder with tokenizer.json or preprocessor_config.json")
    return folder


def _places(folder: Path, processor_dir: Path | None) -> list[tuple[Path, str]]:
    places = [(Path(processor_dir), "processor-dir")] if processor_dir else []
    return places + [(Path(folder), "checkpoint")]


def preprocess_files_from(folder: Path, processor_dir: Path | None = None) -> list[Path]:
    """The preprocessing files to copy into a bundle: ``--processor DIR``'s first, then the
    checkpoint's for what it lacks (one file per name)."""
    chosen: dict[str, Path] = {}
    for place, _ in _places(folder, processor_dir):
        for name in PREPROCESS_FILE_NAMES:
            if name not in chosen and (place / name).is_file():
                chosen[name] = place / name
    return list(chosen.values())


NO_TOKENIZER = "caption-based checks skipped, text calibration from token ids drawn from the vocabulary"


def tokenizer_for(folder: Path, processor_dir: Path | None = None, provenance: Provenance | None = None,
                  required: bool = False, without: str = NO_TOKENIZER):
    """The tokenizer from ``processor_dir`` or ``folder``, or None (with a note) when neither has one.

    A ``tokenizer_config.json`` without ``tokenizer.json`` or vocabulary files cannot build a
    tokenizer: with ``required`` that is a CheckpointError naming the missing file, otherwise a
    note.  ``required`` is for uses that really need text (a question to answer, captions to
    calibrate on); ``without`` says, in the note, what the family does without a tokenizer."""
    from mmdeploy.errors import CheckpointError

    provenance = provenance if provenance is not None else Provenance()
    incomplete = None
    for place, source in _places(folder, processor_dir):
        if any((place / name).is_file() for name in TOKENIZER_VOCAB_FILES):
            try:
                tokenizer = load_tokenizer(place)
            except Exception as exc:  # noqa: BLE001 - tokenizers raise OSError, ValueError, Exception
                first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:200]
                raise CheckpointError(f"cannot load the tokenizer from {place} ({first})",
                                      "restore its tokenizer files, or pass --processor DIR") from None
            provenance.add("tokenizer", source, None if source == "checkpoint" else f"tokenizer from {place}")
            return tokenizer
        if incomplete is None and (place / "tokenizer_config.json").is_file():
            incomplete = place
    if incomplete is not None:
        message = (f"{incomplete} has tokenizer_config.json but no tokenizer.json (nor a vocabulary file: "
                   f"{', '.join(TOKENIZER_VOCAB_FILES[1:])})")
        if required:
            raise CheckpointError(message, "copy tokenizer.json from the base model, or pass --processor DIR")
        provenance.add("tokenizer", "none", f"{message}: {without}")
        return None
    if required:
        raise CheckpointError(f"{folder} has no tokenizer (tokenizer.json)",
                              "pass --processor DIR with the base model's tokenizer files")
    provenance.add("tokenizer", "none", f"no tokenizer: {without}")
    return None


def config_image_size(config: dict, default: int = 224) -> int:
    vision = config.get("vision_config") or config
    return int(vision.get("image_size") or default)


def image_processor_for(folder: Path, processor_dir: Path | None, config: dict, family_defaults: dict,
                        provenance: Provenance | None = None):
    """The image processor from ``preprocessor_config.json`` (``processor_dir`` first, then
    ``folder``), else derived from config.json: the image size it determines and the family's
    standard normalization.

    ``family_defaults``: ``class`` (transformers class name, e.g. ``BlipImageProcessor``),
    ``mean`` / ``std``, ``size`` (``"height_width"`` or ``"shortest_edge"``: a resize to a square
    or to a shortest edge plus centre crop), ``name`` (the normalization's name, for the note)."""
    provenance = provenance if provenance is not None else Provenance()
    class_name = family_defaults["class"]
    for place, source in _places(folder, processor_dir):
        if (place / "preprocessor_config.json").is_file():
            import json

            try:
                saved = json.loads((place / "preprocessor_config.json").read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError):
                saved = {}
            if "image_processor_type" in saved or "image_mean" in saved:
                name = str(saved.get("image_processor_type") or class_name).removesuffix("Fast").removesuffix("Pil")
                processor = load_image_processor(place, name)
                provenance.add("image_processor", source,
                               None if source == "checkpoint" else f"image processor from {place}")
                return processor
    quiet_transformers()
    import transformers

    size = config_image_size(config)
    cls = getattr(transformers, class_name + "Pil", None) or getattr(transformers, class_name)
    kwargs: dict = {"image_mean": list(family_defaults["mean"]), "image_std": list(family_defaults["std"])}
    if family_defaults.get("size", "height_width") == "shortest_edge":
        kwargs.update(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                      do_center_crop=True)
    else:
        kwargs.update(size={"height": size, "width": size})
    processor = cls(**kwargs)
    provenance.add("image_processor", "derived",
                   f"no preprocessor_config.json: image processor derived from config.json "
                   f"({class_name}, {size}x{size}, {family_defaults.get('name', 'standard')} normalization)")
    provenance.derived["image_processor"] = processor
    return processor


def derived_files(provenance: Provenance) -> list[Path]:
    """The derived processors saved (``save_pretrained``) into a temporary folder, so that the
    bundle's ``preprocess/`` holds them and later stages need neither the checkpoint nor
    ``--processor``.  The folder lives as long as ``provenance`` (removed at the latest on exit)."""
    import tempfile

    if not provenance.derived:
        return []
    if provenance.derived_dir is None:
        provenance.derived_dir = tempfile.TemporaryDirectory(prefix="mmdeploy-derived-")
    folder = Path(provenance.derived_dir.name)
    for processor in provenance.derived.values():
        processor.save_pretrained(str(folder))
    return sorted(p for p in folder.iterdir() if p.is_file())


def random_token_ids(vocab_size: int, batch: int, length: int, seed: int,
                     special: tuple[int | None, int | None] = (None, None)) -> dict[str, np.ndarray]:
    """``input_ids`` / ``attention_mask`` of token ids drawn from the vocabulary (for a
    checkpoint without a tokenizer); ``special`` = (first, last) ids to put at the ends."""
    rng = np.random.default_rng(seed)
    low = min(5, max(vocab_size - 1, 0))
    ids = rng.integers(low, max(vocab_size, low + 1), size=(batch, length)).astype(np.int64)
    first, last = special
    if first is not None:
        ids[:, 0] = first
    if last is not None:
        ids[:, -1] = last
    return {"input_ids": ids, "attention_mask": np.ones_like(ids)}


def write_tokenizer_json(folder: Path) -> str | None:
    """Write ``tokenizer.json`` into a bundle's ``preprocess/`` that has only vocabulary files
    (vocab.txt, spiece.model, ...): the device runtime tokenizes with the ``tokenizers`` library
    alone, which reads that one file.  transformers' fast tokenizer converts the vocabulary; the
    other files are left as they are.  Returns a note, or None when nothing was needed or possible."""
    import shutil
    import tempfile

    folder = Path(folder)
    if (folder / "tokenizer.json").is_file() or not any((folder / n).is_file() for n in TOKENIZER_VOCAB_FILES[1:]):
        return None
    try:
        tokenizer = load_tokenizer(folder)
    except Exception as exc:  # noqa: BLE001 - any tokenizer failure: the bundle keeps its files
        return f"no tokenizer.json written (the vocabulary does not load: {exc.__class__.__name__})"
    if not getattr(tokenizer, "is_fast", False):
        return "no tokenizer.json written (no fast tokenizer for this vocabulary): the runtime cannot tokenize"
    with tempfile.TemporaryDirectory(prefix="mmdeploy-tokenizer-") as tmp:
        tokenizer.save_pretrained(tmp)
        if not (Path(tmp) / "tokenizer.json").is_file():
            return None
        shutil.copy2(Path(tmp) / "tokenizer.json", folder / "tokenizer.json")
    return "tokenizer.json written from the vocabulary files (for the device runtime)"
