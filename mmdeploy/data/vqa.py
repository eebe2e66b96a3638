"""VQA sets: JSONL of ``{"image", "question", "answer"}`` or ``"answers": [...]`` (VQAv2 keeps ten
human answers per question; one answer means exact match)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mmdeploy.data.pairs import read_rows, resolve_media
from mmdeploy.errors import InputError


@dataclass
class VQASet:
    path: Path
    files: list[Path]
    questions: list[str]
    answers: list[list[str]]
    skipped: list[dict] = field(default_factory=list)


def read_vqa(path: str | Path) -> VQASet:
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise InputError(f"{path} holds no questions", "write one JSON object per line: image, question, answer")
    files, questions, answers = [], [], []
    for number, record in rows:
        files.append(resolve_media(path, number, record.get("image"), "image"))
        question = record.get("question")
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"{path}: row {number} has no 'question'", "add the question text")
        given = record.get("answers", record.get("answer"))
        given = given if isinstance(given, list) else [given]
        given = [a.strip() for a in given if isinstance(a, str) and a.strip()]
        if not given:
            raise InputError(f"{path}: row {number} has no 'answer' (or 'answers')", "add the reference answer(s)")
        questions.append(question.strip())
        answers.append(given)
    return VQASet(path, files, questions, answers)


def is_vqa(path: Path) -> bool:
    """True if the first row of a .jsonl/.csv has a 'question' field."""
    rows = read_rows(path)
    return bool(rows) and "question" in rows[0][1]
