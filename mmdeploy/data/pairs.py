"""Retrieval and captioning sets: a CSV, TSV or JSONL of ``image,caption`` (``audio,caption`` for
CLAP).  An image may appear on several rows (several captions); in JSONL ``captions`` may be a
list.  Paths are relative to the file's folder.  Errors name the file and row.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from mmdeploy.errors import InputError

MEDIA_COLUMNS = ("image", "audio")


@dataclass
class PairSet:
    path: Path
    modality: str  # image | audio
    files: list[Path]  # unique media files, in first-seen order
    captions: list[str]  # every caption
    caption_file: list[int]  # index into files for each caption
    skipped: list[dict] = field(default_factory=list)

    def references(self) -> list[list[str]]:
        """The captions of each file (captioning references)."""
        refs: list[list[str]] = [[] for _ in self.files]
        for caption, index in zip(self.captions, self.caption_file):
            refs[index].append(caption)
        return refs

    def keep(self, kept: list[int]) -> "PairSet":
        """The set restricted to the files at ``kept`` (e.g. those that decoded)."""
        remap = {old: new for new, old in enumerate(kept)}
        pairs = [(c, remap[i]) for c, i in zip(self.captions, self.caption_file) if i in remap]
        return PairSet(self.path, self.modality, [self.files[i] for i in kept], [c for c, _ in pairs],
                       [i for _, i in pairs], list(self.skipped))


def read_text(path: Path) -> str:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path} ({exc.strerror or exc.__class__.__name__})", "check the path") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InputError(f"{path}: line {line} is not UTF-8 text", "save the file as UTF-8") from None


TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}


def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(row number, record) of a .csv/.tsv (header row) or .jsonl file; row numbers as users count
    them.  Header names are matched without case or surrounding spaces (``Image``, `` caption``)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path} does not exist" if not path.exists() else f"{path} is not a file",
                         "pass a .csv, .tsv or .jsonl file")
    text = read_text(path)
    suffix = path.suffix.lower()
    if suffix in TABLE_SUFFIXES:
        reader = csv.reader(io.StringIO(text), delimiter=TABLE_SUFFIXES[suffix])
        rows = []
        try:
            header = None
            for fields in reader:
                if not any(f.strip() for f in fields):
                    continue  # blank line
                if header is None:
                    header = [f.strip().lower() for f in fields]
                    continue
                if len(fields) > len(header):
                    raise InputError(f"{path}: row {reader.line_num} has {len(fields)} fields, the header "
                                     f"{len(header)}", "quote fields that hold the separator, e.g. \"a, b\"")
                rows.append((reader.line_num, dict(zip(header, fields))))
        except csv.Error as exc:
            raise InputError(f"{path}: row {reader.line_num}: {exc}", "fix the CSV quoting") from None
        return rows
    if suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: row {number} is not JSON ({exc.msg})", "write one JSON object per line") from None
            if not isinstance(record, dict):
                raise InputError(f"{path}: row {number} is not a JSON object", "write one JSON object per line")
            rows.append((number, record))
        return rows
    raise InputError(f"{path}: unknown format {suffix or '(no suffix)'}", "pass a .csv, .tsv or .jsonl file")


def media_column(path: Path, rows: list[tuple[int, dict]]) -> str:
    if not rows:
        raise InputError(f"{path} holds no rows", "write a header and one row per pair")
    first = rows[0][1]
    for column in MEDIA_COLUMNS:
        if column in first:
            return column
    raise InputError(f"{path}: row {rows[0][0]} has no 'image' or 'audio' column (has: {', '.join(first) or 'none'})",
                     "name the media column 'image' (or 'audio') and the text column 'caption'")


def resolve_media(path: Path, number: int, value, column: str) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}: row {number} has an empty {column!r}", f"give the {column} file's path")
    media = Path(value.strip())
    media = media if media.is_absolute() else Path(path).parent / media
    if not media.is_file():
        raise InputError(f"{path}: row {number}: {value.strip()} does not exist",
                         f"paths are relative to {Path(path).parent}")
    return media


def row_captions(path: Path, number: int, record: dict) -> list[str]:
    value = record.get("captions", record.get("caption"))
    if value is None:
        raise InputError(f"{path}: row {number} has no 'caption' column", "add the caption text")
    values = value if isinstance(value, list) else [value]
    captions = [v.strip() for v in values if isinstance(v, str) and v.strip()]
    if not captions:
        raise InputError(f"{path}: row {number} has an empty caption", "write the caption text")
    return captions


def read_pairs(path: str | Path) -> PairSet:
    path = Path(path)
    rows = read_rows(path)
    column = media_column(path, rows)
    files: list[Path] = []
    index: dict[Path, int] = {}
    captions, caption_file = [], []
    for number, record in rows:
        captions_here = row_captions(path, number, record)
        media = resolve_media(path, number, record.get(column), column)
        for caption in captions_here:
            if media not in index:
                index[media] = len(files)
                files.append(media)
            captions.append(caption)
            caption_file.append(index[media])
    return PairSet(path, column, files, captions, caption_file)
