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
    """A rich console on stdout, or on stderr (the real one while library output is redirected)."""
    from rich.console import Console

    from mmdeploy.logs import terminal

    if stderr and terminal() is not None:
        out = Console(file=terminal(), highlight=False)
    else:
        out = Console(stderr=stderr, highlight=False)
    out.soft_wrap = not out.is_terminal  # CI logs, pipes: never wrap at 80 columns
    return out


def print_table(table, out=None) -> None:
    """Print a rich Table: boxed on a terminal, else as a full-width Markdown table (CI logs,
    pipes, files) whose cells are never cut or wrapped."""
    from rich.text import Text

    out = out or console()
    if out.is_terminal:
        out.print(table)
        return

    def plain(cell) -> str:
        text = cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain
        return " ".join(text.split()).replace("|", "\\|")

    lines = [f"{plain(table.title)}", ""] if table.title else []
    columns = table.columns
    lines.append("| " + " | ".join(plain(c.header) for c in columns) + " |")
    lines.append("|" + "|".join("---:" if c.justify == "right" else "---" for c in columns) + "|")
    for row in zip(*(c.cells for c in columns)):
        lines.append("| " + " | ".join(plain(cell) for cell in row) + " |")
    out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)


def quiet(output: Any = None, json_out: bool = False):
    """Context for a command's stages: library output to ``<output>/logs/mmdeploy.log`` (unless
    --verbose); yields the ``progress`` hook, one line per stage (None with --json)."""
    from mmdeploy.logs import session

    return session(output, show=not json_out)
