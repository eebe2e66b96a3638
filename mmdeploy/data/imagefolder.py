"""Classification sets: an ImageFolder (one sub-folder per class) of images or audio clips.

As torchvision's ImageFolder: the class is the top-level folder, its files are found at any depth
below it (``cat/indoor/1.jpg`` is a cat).

Class names are the folder names (``_`` read as a space), or the lines of ``classnames.txt``
(one per class, in sorted folder order).  Prompt templates come from ``--templates``, the
folder's ``templates.txt``, or :data:`~mmdeploy.data.templates.DEFAULT_TEMPLATES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmdeploy.data.media import media_files, modality_of, read_text_lines
from mmdeploy.data.templates import DEFAULT_TEMPLATES, read_templates
from mmdeploy.errors import InputError


@dataclass
class ClassificationSet:
    root: Path
    classnames: list[str]
    templates: list[str]
    files: list[Path]
    labels: list[int]
    modality: str  # image | audio
    skipped: list[dict] = field(default_factory=list)
    templates_source: str = "default"

    def __len__(self) -> int:
        return len(self.files)


def read_imagefolder(root: str | Path, templates: str | Path | None = None,
                     limit_per_class: int | None = None) -> ClassificationSet:
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root} is not a folder", "pass an ImageFolder: one sub-folder of images per class")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise InputError(f"{root} has no class folders",
                         "an ImageFolder holds one sub-folder per class (e.g. cat/, dog/) with the images in them")
    files, labels, kinds = [], [], set()
    for label, folder in enumerate(folders):
        found = media_files(folder, recursive=True)
        if not found:
            raise InputError(f"class folder {folder} holds no images or audio clips",
                             "add files to it or remove the folder")
        found = found[:limit_per_class] if limit_per_class else found
        kinds |= {modality_of(f) for f in found}
        files += found
        labels += [label] * len(found)
    if len(kinds) > 1:
        raise InputError(f"{root} mixes images and audio clips", "use one modality per data set")
    names = [f.name.replace("_", " ") for f in folders]
    names_file = root / "classnames.txt"
    if names_file.is_file():
        names = read_text_lines(names_file, "class names")
        if len(names) != len(folders):
            raise InputError(f"{names_file}: {len(names)} names for {len(folders)} class folders",
                             "write one class name per line, in the sorted order of the folders")
    source = "default"
    if templates is not None:
        chosen, source = read_templates(Path(templates)), str(templates)
    elif (root / "templates.txt").is_file():
        chosen, source = read_templates(root / "templates.txt"), str(root / "templates.txt")
    else:
        chosen = list(DEFAULT_TEMPLATES)
    return ClassificationSet(root, names, chosen, files, labels, kinds.pop(), templates_source=source)
