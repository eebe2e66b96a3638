"""Small helpers shared by the command modules (output only, no logic)."""

from __future__ import annotations

import json
import sys
from typing import Any


def split_list(value: str | None) -> list[str] | None:
    """'a,b , c' -> ['a', 'b', 'c'];  None -> None."""
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def print_json(data: Any) -> None:
    json.dump(data, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)
