"""Text-encoder sets: sentence pairs with a gold similarity, and queries with their documents.

* ``sentence1,sentence2,score`` (MTEB STS, STS-B, SICK...): the ``sts`` task, scored by
  ``cosine_spearman``.  The score may be on any scale (0-5, 0-1): only its order counts.
* ``query,document`` (sentence-transformers' ``anchor,positive`` too): the ``text-retrieval``
  task; every distinct document is a candidate for every query, a query's own documents are the
  rows it appears on; scored by ``recall@k``.

CSV, TSV or JSONL (read by :func:`mmdeploy.data.pairs.read_rows`: UTF-8 with or without BOM,
header names without case or surrounding spaces).  Common header variants are accepted (see
``SENTENCE_COLUMNS`` ...).  Errors name the file and row.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mmdeploy.errors import InputError

# accepted header names, the canonical one first
SENTENCE1 = ("sentence1", "sentence_1", "sentence 1", "text1", "text_1", "s1")
SENTENCE2 = ("sentence2", "sentence_2", "sentence 2", "text2", "text_2", "s2")
SCORE = ("score", "similarity_score", "similarity", "relatedness_score", "gold", "label")
QUERY = ("query", "question", "anchor")
DOCUMENT = ("document", "doc", "passage", "positive", "corpus")


def _column(record: dict, names: tuple[str, ...]) -> str | None:
    return next((n for n in names if n in record), None)


def table_kind(record: dict) -> str | None:
    """``sts``, ``text-retrieval`` or None, from the first record's columns."""
    if _column(record, SENTENCE1) and _column(record, SENTENCE2):
        return "sts"
    if _column(record, QUERY) and _column(record, DOCUMENT):
        return "text-retrieval"
    return None


@dataclass
class SentencePairs:
    path: Path
    sentence1: list[str]
    sentence2: list[str]
    scores: list[float]
    modality: str = "text"

    def keep(self, kept: list[int]) -> "SentencePairs":
        return SentencePairs(self.path, [self.sentence1[i] for i in kept], [self.sentence2[i] for i in kept],
                             [self.scores[i] for i in kept])


@dataclass
class QueryDocuments:
    path: Path
    queries: list[str]  # distinct, in first-seen order
    documents: list[str]  # distinct, in first-seen order
    positives: list[list[int]]  # per query: indices into documents
    modality: str = "text"

    def keep(self, kept: list[int]) -> "QueryDocuments":
        """The first queries (every document stays a candidate)."""
        return QueryDocuments(self.path, [self.queries[i] for i in kept], self.documents,
                              [self.positives[i] for i in kept])


def _text(path: Path, number: int, record: dict, column: str) -> str:
    value = record.get(column)
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{path}: row {number} has an empty {column!r}", f"write the {column} text")
    return value.strip()


def _rows(path: Path):
    from mmdeploy.data.pairs import read_rows

    rows = read_rows(path)
    if not rows:
        raise InputError(f"{path} holds no rows", "write a header and one row per pair")
    return rows


def read_sentence_pairs(path: str | Path) -> SentencePairs:
    path = Path(path)
    rows = _rows(path)
    first = rows[0][1]
    c1, c2, cs = _column(first, SENTENCE1), _column(first, SENTENCE2), _column(first, SCORE)
    if not (c1 and c2 and cs):
        raise InputError(f"{path}: row {rows[0][0]} lacks a sentence1, sentence2 or score column "
                         f"(has: {', '.join(first) or 'none'})", "name the columns sentence1,sentence2,score")
    s1, s2, scores = [], [], []
    for number, record in rows:
        s1.append(_text(path, number, record, c1))
        s2.append(_text(path, number, record, c2))
        raw = record.get(cs)
        try:
            score = float(raw.strip() if isinstance(raw, str) else raw)
        except (TypeError, ValueError):
            score = math.nan
        if not math.isfinite(score):
            raise InputError(f"{path}: row {number}: {cs} {raw!r} is not a number", "give a gold similarity, e.g. 3.8")
        scores.append(score)
    if len(rows) < 3:
        raise InputError(f"{path} holds {len(rows)} pair(s): a rank correlation needs at least 3",
                         "add more sentence pairs")
    if len(set(scores)) < 2:
        raise InputError(f"{path}: every pair has the same score {scores[0]:g}: there is no order to correlate with",
                         "give each pair its own gold similarity")
    return SentencePairs(path, s1, s2, scores)


def read_query_documents(path: str | Path) -> QueryDocuments:
    path = Path(path)
    rows = _rows(path)
    first = rows[0][1]
    cq, cd = _column(first, QUERY), _column(first, DOCUMENT)
    if not (cq and cd):
        raise InputError(f"{path}: row {rows[0][0]} lacks a query or document column "
                         f"(has: {', '.join(first) or 'none'})", "name the columns query,document")
    queries: dict[str, int] = {}
    documents: dict[str, int] = {}
    positives: list[list[int]] = []
    for number, record in rows:
        q, d = _text(path, number, record, cq), _text(path, number, record, cd)
        if q not in queries:
            queries[q] = len(queries)
            positives.append([])
        if d not in documents:
            documents[d] = len(documents)
        if documents[d] not in positives[queries[q]]:
            positives[queries[q]].append(documents[d])
    if len(documents) < 2:
        raise InputError(f"{path} holds one document: retrieval needs several candidates", "add query,document rows")
    return QueryDocuments(path, list(queries), list(documents), positives)
