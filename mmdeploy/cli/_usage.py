"""Usage errors and help text: readable metavars, "did you mean", JSON error objects.

typer (0.29) vendors its own copy of click, so its usage errors are not ``click`` exceptions;
everything here goes through ``typer``'s own classes.
"""

from __future__ import annotations

import difflib
import json
import sys

# option-name suffix -> metavar, for numbers whose unit is in the name
_UNIT_METAVARS = {"_ms": "MS", "_mb": "MB", "_s": "S"}
# option names whose value is a directory to write
_DIR_OPTIONS = {"output", "report", "save_profiles", "targets_dir"}


def metavar_for(param) -> str | None:
    """PATH / DIR / N / MS / MB / X / NAME for one click parameter; "" for flags."""
    if getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    name = (param.name or "value").lower()
    try:
        bare = param.bare_type()
    except Exception:  # noqa: BLE001 - a parameter typer cannot describe keeps its own label
        return None
    bare = bare.removeprefix("list[").removesuffix("]").lower()
    if bare == "path":
        return "DIR" if name in _DIR_OPTIONS else "PATH"
    if bare in ("int", "float"):
        for suffix, label in _UNIT_METAVARS.items():
            if name.endswith(suffix):
                return label
        return "N" if bare == "int" else "X"
    return name.upper()


def _is_argument(param) -> bool:
    return not any(o.startswith("-") for o in getattr(param, "opts", []) or [])


def readable_metavars(command) -> None:
    """Give every parameter of ``command`` (a click command or group, recursively) a metavar.

    Options show their value's kind (``--output DIR``, ``--iters N``, ``--max-p50-ms MS``);
    arguments are named for what they are (``SOURCE``, ``ARTIFACT``) with the kind beside it.
    """
    for param in getattr(command, "params", []):
        if param.metavar is not None:
            continue
        label = metavar_for(param)
        if _is_argument(param):
            param.metavar = (param.name or "value").upper()
            kind = label if label in ("PATH", "DIR") else None
            param.display_type_rich = lambda ctx, kind=kind: kind  # not "<list[Path]>"
        elif label is not None:
            param.metavar = label
    original = command.get_help_option

    def help_option(ctx, original=original):
        option = original(ctx)
        if option is not None:
            option.metavar = ""  # a flag: no "<bool>"
        return option

    command.get_help_option = help_option
    for sub in getattr(command, "commands", {}).values():
        readable_metavars(sub)


def usage_message(exc) -> str:
    """One line for a typer/click usage error, with a "did you mean" where one is close."""
    from typer._click.exceptions import MissingParameter, NoSuchOption

    text = " ".join(exc.format_message().split())
    if isinstance(exc, NoSuchOption):
        ctx = getattr(exc, "ctx", None)
        names = [o for p in (ctx.command.params if ctx else []) for o in [*p.opts, *p.secondary_opts]]
        close = difflib.get_close_matches(exc.option_name, names, n=2)
        text = f"No such option: {exc.option_name}"
        if close:
            text += f"; did you mean {' or '.join(close)}?"
    elif isinstance(exc, MissingParameter) and exc.param is not None:
        param = exc.param
        opts = [o for o in getattr(param, "opts", []) if o.startswith("-")]
        what = f"{max(opts, key=len)} {param.metavar or ''}".strip() if opts else (param.metavar or param.name.upper())
        text = f"{text.rstrip('.')}; pass {what}"
    return text


def show_usage_error(exc) -> None:
    """Usage line, a pointer to --help, and ``error: ...`` on stderr (the caller exits 2)."""
    ctx = getattr(exc, "ctx", None)
    if ctx is not None:
        print(ctx.get_usage(), file=sys.stderr)
        print(f"Try '{ctx.command_path} --help' for help.", file=sys.stderr)
    print(f"error: {usage_message(exc)}", file=sys.stderr)


def print_json_error(kind: str, message: str, hint: str | None, exit_code: int) -> None:
    """The ``--json`` contract on failure: one JSON object on stdout."""
    json.dump({"error": {"type": kind, "message": message, "hint": hint, "exit_code": exit_code}},
              sys.stdout, indent=2)
    sys.stdout.write("\n")
    sys.stdout.flush()
