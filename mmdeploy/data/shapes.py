"""Deterministic procedural image-caption data for the ``demo:tiny-clip`` model.

Every image shows one coloured shape (e.g. a red star) at a random position,
size and small rotation on a plain grey background with light pixel noise.
Rendering uses Pillow and the standard library ``random`` module only, so the
output is bit-identical across runs and machines for a given split and index.

Splits use disjoint fixed seeds (:data:`SPLIT_SEEDS`): ``train`` is used by
:mod:`mmdeploy.demo.train`, ``eval`` is the held-out zero-shot evaluation set
and ``calib`` is a small set meant for quantization calibration.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

IMAGE_SIZE = 32
"""Side length in pixels of the generated images (and of the model input)."""

SHAPES: list[str] = ["circle", "square", "triangle", "star", "cross", "diamond"]
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (35, 165, 55),
    "blue": (40, 80, 225),
    "yellow": (240, 215, 40),
    "purple": (140, 45, 185),
    "orange": (250, 135, 20),
}

CLASS_NAMES: list[str] = [f"{c} {s}" for c in COLOURS for s in SHAPES]
"""Class names, colour-major: index ``i`` is colour ``i // 6`` and shape ``i % 6``."""

PROMPT_TEMPLATE = "a photo of a {}"
"""Template used to turn a class name into a zero-shot text prompt."""

SPLIT_SEEDS: dict[str, int] = {"train": 1_000_003, "eval": 2_000_003, "calib": 3_000_017}
SPLIT_SIZES: dict[str, int] = {
    "train": 600 * len(CLASS_NAMES),
    "eval": 10 * len(CLASS_NAMES),
    "calib": 64,
}

_SUPERSAMPLE = 4  # shapes are drawn at 4x resolution and downsampled (anti-aliasing)

_CAPTION_TEMPLATES = [
    "a {}",
    "a photo of a {}",
    "a picture of a {}",
    "an image of a {}",
    "a drawing of a {}",
    "a {} shape",
    "{}",
    "the {}",
]


@dataclass(frozen=True)
class Sample:
    """Metadata of one rendered image."""

    label: int
    colour: str
    shape: str
    cx: float  # centre, in [0, 1] image coordinates
    cy: float
    radius: float  # outer radius as a fraction of the image side
    rotation: float  # degrees

    @property
    def position(self) -> str:
        """Coarse position word ("left", "right", "top", "bottom" or "middle")."""
        dx, dy = self.cx - 0.5, self.cy - 0.5
        if max(abs(dx), abs(dy)) < 0.12:
            return "middle"
        if abs(dx) >= abs(dy):
            return "left" if dx < 0 else "right"
        return "top" if dy < 0 else "bottom"

    @property
    def size_word(self) -> str:
        return "small" if self.radius < 0.3 else "large" if self.radius > 0.36 else ""


def class_prompts() -> list[str]:
    """The zero-shot text prompts, one per class, in :data:`CLASS_NAMES` order."""
    return [PROMPT_TEMPLATE.format(name) for name in CLASS_NAMES]


def vocabulary() -> list[str]:
    """Every word that can appear in a prompt or a training caption."""
    words: list[str] = []
    for text in _CAPTION_TEMPLATES + [PROMPT_TEMPLATE]:
        words += text.replace("{}", " ").split()
    words += list(COLOURS) + SHAPES
    words += ["small", "large", "on", "in", "at", "the", "left", "right", "top", "bottom", "middle"]
    return sorted(set(words))


def _shape_polygon(shape: str, cx: float, cy: float, r: float, rot: float) -> list[tuple[float, float]]:
    def ring(angles_deg, radii):
        pts = []
        for a, rr in zip(angles_deg, radii):
            t = math.radians(a + rot)
            pts.append((cx + rr * math.cos(t), cy + rr * math.sin(t)))
        return pts

    if shape == "square":
        return ring([45, 135, 225, 315], [r * 0.9] * 4)
    if shape == "diamond":
        # a rhombus: narrower than tall
        pts = ring([0, 90, 180, 270], [r * 0.62, r, r * 0.62, r])
        return pts
    if shape == "triangle":
        return ring([-90, 30, 150], [r] * 3)
    if shape == "star":
        return ring([-90 + 36 * k for k in range(10)], [r if k % 2 == 0 else r * 0.42 for k in range(10)])
    if shape == "cross":
        w = 0.32 * r
        base = [(w, r), (w, w), (r, w), (r, -w), (w, -w), (w, -r),
                (-w, -r), (-w, -w), (-r, -w), (-r, w), (-w, w), (-w, r)]
        t = math.radians(rot)
        c, s = math.cos(t), math.sin(t)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]
    raise ValueError(f"unknown shape {shape!r}")


def render(sample: Sample, rng: random.Random, size: int = IMAGE_SIZE) -> Image.Image:
    """Render ``sample``; ``rng`` supplies the background colour and noise."""
    big = size * _SUPERSAMPLE
    grey = rng.randint(95, 165)
    tint = [max(0, min(255, grey + rng.randint(-12, 12))) for _ in range(3)]
    img = Image.new("RGB", (big, big), tuple(tint))
    draw = ImageDraw.Draw(img)
    base = COLOURS[sample.colour]
    colour = tuple(max(0, min(255, v + rng.randint(-18, 18))) for v in base)
    cx, cy, r = sample.cx * big, sample.cy * big, sample.radius * big
    if sample.shape == "circle":
        draw.ellipse([cx - r * 0.9, cy - r * 0.9, cx + r * 0.9, cy + r * 0.9], fill=colour)
    else:
        draw.polygon(_shape_polygon(sample.shape, cx, cy, r, sample.rotation), fill=colour)
    img = img.resize((size, size), Image.Resampling.BOX)
    # light uniform pixel noise, from the seeded rng (deterministic)
    noise = Image.frombytes("RGB", (size, size), rng.randbytes(size * size * 3))
    return Image.blend(img, noise, rng.uniform(0.0, 0.12))


def sample_meta(label: int, rng: random.Random) -> Sample:
    """Draw random position / size / rotation for a given class label."""
    colour = list(COLOURS)[label // len(SHAPES)]
    shape = SHAPES[label % len(SHAPES)]
    radius = rng.uniform(0.24, 0.42)
    margin = radius * 0.95
    cx = rng.uniform(margin, 1 - margin)
    cy = rng.uniform(margin, 1 - margin)
    rotation = rng.uniform(-15.0, 15.0)
    return Sample(label, colour, shape, cx, cy, radius, rotation)


def generate(split: str, n: int | None = None) -> tuple[list[Image.Image], list[Sample]]:
    """Like :func:`make_split` but returns the full :class:`Sample` metadata."""
    if split not in SPLIT_SEEDS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_SEEDS)}")
    n = SPLIT_SIZES[split] if n is None else int(n)
    rng = random.Random(SPLIT_SEEDS[split])
    images, metas = [], []
    for i in range(n):
        label = i % len(CLASS_NAMES)  # balanced classes
        meta = sample_meta(label, rng)
        images.append(render(meta, rng))
        metas.append(meta)
    return images, metas


def make_split(split: str, n: int | None = None) -> tuple[list[Image.Image], list[int]]:
    """Deterministic images and integer labels for ``split`` ("train", "eval", "calib").

    ``n`` defaults to :data:`SPLIT_SIZES` ``[split]``; the first ``k`` items of a
    split never depend on ``n``. Labels are balanced (``i % len(CLASS_NAMES)``).
    """
    images, metas = generate(split, n)
    return images, [m.label for m in metas]


def random_caption(label: int, rng: random.Random, meta: Sample | None = None) -> str:
    """A random training caption for ``label`` such as "a photo of a red star".

    With ``meta`` the caption may also mention the (true) size or position,
    e.g. "a small blue cross on the left".
    """
    name = CLASS_NAMES[label]
    if meta is not None and meta.size_word and rng.random() < 0.25:
        name = f"{meta.size_word} {name}"
    text = rng.choice(_CAPTION_TEMPLATES).format(name)
    if meta is not None and rng.random() < 0.25:
        pos = meta.position
        text += " in the middle" if pos == "middle" else f" on the {pos}" if pos in ("left", "right") else f" at the {pos}"
    return text
