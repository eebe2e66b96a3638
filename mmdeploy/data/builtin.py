"""Built-in evaluation sets written out in the user formats (``--data builtin:NAME``).

* ``skimage-captions``: the photos of the scikit-image wheel + captions written for them
  (``captions.jsonl``: retrieval and captioning references);
* ``skimage-vqa``: the same photos + a few questions with answers (``vqa.jsonl``);
* ``demo-shapes``: the demo model's held-out shapes as an ImageFolder (+ its ``templates.txt``);
* ``demo-shapes-captions``: one held-out shape per class with two captions each (retrieval);
* ``synthetic-audio``: the synthetic clips as class folders (CLAP).

Each is generated deterministically once into a cache folder and reused.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from mmdeploy.errors import InputError

PREFIX = "builtin:"
VERSION = 1
SETS = ("skimage-captions", "skimage-vqa", "demo-shapes", "demo-shapes-captions", "synthetic-audio")
_SPEC = Path(__file__).with_name("skimage_photos.json")


def cache_root() -> Path:
    base = os.environ.get("MMDEPLOY_CACHE") or os.environ.get("XDG_CACHE_HOME")
    root = Path(base) / "mmdeploy" if base else Path.home() / ".cache" / "mmdeploy"
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / ".write-test"
        probe.touch()
        probe.unlink()
    except OSError:
        root = Path(tempfile.gettempdir()) / "mmdeploy-cache"
        root.mkdir(parents=True, exist_ok=True)
    return root / "data"


def skimage_image(name: str):
    import numpy as np
    from PIL import Image
    from skimage import data

    array = getattr(data, name)()
    array = np.asarray(array[0] if isinstance(array, tuple) else array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    return Image.fromarray(array.astype(np.uint8)).convert("RGB")


def write_skimage(folder: Path, vqa: bool = False) -> Path:
    """Photos as PNG under ``images/`` and ``captions.jsonl`` (or ``vqa.jsonl``); returns the file."""
    try:
        import skimage  # noqa: F401
    except ImportError:
        raise InputError("builtin:skimage-* needs scikit-image", 'pip install "mmdeploy[images]"') from None
    spec = json.loads(_SPEC.read_text(encoding="utf-8"))
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for name in spec["photos"]:
        skimage_image(name).save(folder / "images" / f"{name}.png")
    if vqa:
        rows = [{"image": f"images/{q['photo']}.png", "question": q["question"], "answers": q["answers"]}
                for q in spec["vqa"]]
        out = folder / "vqa.jsonl"
    else:
        rows = [{"image": f"images/{name}.png", "captions": caps} for name, caps in spec["photos"].items()]
        out = folder / "captions.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def write_shapes(folder: Path, split: str = "eval", n: int | None = None) -> Path:
    """The demo's shapes as an ImageFolder (class folders, ``templates.txt``)."""
    from mmdeploy.data import shapes

    images, labels = shapes.make_split(split, n)
    counts: dict[int, int] = {}
    for image, label in zip(images, labels):
        cls = folder / shapes.CLASS_NAMES[label].replace(" ", "_")
        cls.mkdir(parents=True, exist_ok=True)
        image.save(cls / f"{counts.setdefault(label, 0):04d}.png")
        counts[label] += 1
    (folder / "templates.txt").write_text(shapes.PROMPT_TEMPLATE.replace("{}", "{c}") + "\n", encoding="utf-8")
    return folder


def write_shape_captions(folder: Path, split: str = "eval") -> Path:
    """One shape per class (``images/``) and ``captions.jsonl`` with two captions each: the class
    prompt and a caption naming its size or position ("a small red star on the left")."""
    import random

    from mmdeploy.data import shapes

    images, metas = shapes.generate(split, len(shapes.CLASS_NAMES))
    rng = random.Random(7)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (image, meta) in enumerate(zip(images, metas)):
        image.save(folder / "images" / f"{i:02d}.png")
        name = shapes.CLASS_NAMES[meta.label]
        where = meta.position
        where = " in the middle" if where == "middle" else f" on the {where}" if where in ("left", "right") else f" at the {where}"
        detail = f"a {meta.size_word} {name}" if meta.size_word and rng.random() < 0.5 else f"a {name}{where}"
        rows.append({"image": f"images/{i:02d}.png", "captions": [f"a photo of a {name}", detail]})
    out = folder / "captions.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def write_audio(folder: Path, split: str = "eval", n: int | None = None) -> Path:
    """The synthetic audio clips as class folders of 16-bit WAV files (+ ``templates.txt``)."""
    from mmdeploy.data import synthetic_audio as audio
    from mmdeploy.data.media import write_wav

    clips, labels = audio.make_split(split, n)
    for i, (clip, label) in enumerate(zip(clips, labels)):
        cls = folder / audio.CLASS_NAMES[label].replace(" ", "_")
        cls.mkdir(parents=True, exist_ok=True)
        write_wav(cls / f"{i:04d}.wav", clip, audio.SAMPLE_RATE)
    template = audio.class_prompts()[0].replace(audio.CLASS_NAMES[0], "{c}")
    (folder / "templates.txt").write_text(template + "\n", encoding="utf-8")
    return folder


def builtin_path(name: str, root: Path | None = None) -> Path:
    """The path (file or folder) of a built-in set, generated on first use."""
    name = name.removeprefix(PREFIX)
    if name not in SETS:
        raise InputError(f"unknown built-in data set {name!r}", "built-in sets: " + ", ".join(PREFIX + s for s in SETS))
    folder = (root or cache_root()) / f"{name}-v{VERSION}"
    done = folder / ".complete"
    target = {"skimage-captions": "captions.jsonl", "skimage-vqa": "vqa.jsonl",
              "demo-shapes-captions": "captions.jsonl"}.get(name)
    if not done.is_file():
        import shutil

        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=folder.parent))
        try:
            if name.startswith("skimage"):
                write_skimage(tmp, vqa=name == "skimage-vqa")
            elif name == "demo-shapes":
                write_shapes(tmp)
            elif name == "demo-shapes-captions":
                write_shape_captions(tmp)
            else:
                write_audio(tmp)
            (tmp / ".complete").write_text("ok\n")
            if folder.exists():
                shutil.rmtree(folder)
            tmp.rename(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return folder / target if target else folder


def resolve_data(path: str | Path) -> Path:
    """A user's ``--data`` / ``--eval`` value as a path (``builtin:NAME`` generated on demand)."""
    text = str(path)
    if text.startswith(PREFIX):
        return builtin_path(text)
    return Path(text)
