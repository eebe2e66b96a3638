"""The built-in text set: varied real English sentences (news, daily life, science, sport,
travel, cooking...) mixed with what sentence encoders are mostly fed -- questions, search
queries, requests, chat and review snippets, error messages -- the default calibration data
(and the accuracy guard's held-out samples) for text encoders.  A set of long declarative
captions alone left int8 ranges that lost short questions (cosine 0.974 on MiniLM).

Shipped as ``sentences.txt`` in the package, one sentence per line; written for this project.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.resources import files


@lru_cache(maxsize=1)
def _lines() -> tuple[str, ...]:
    text = files("mmdeploy.data").joinpath("sentences.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def sentences(limit: int | None = None) -> list[str]:
    """The shipped sentences (124), optionally the first ``limit``."""
    return list(_lines()[:limit] if limit else _lines())
