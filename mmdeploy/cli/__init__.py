"""The ``mmdeploy`` command line: a thin typer app.

Each command lives in its own small module (``mmdeploy/cli/<command>.py``) that parses options,
calls the library and prints.  Only typer is imported at start-up so ``--help`` is fast.
"""

from __future__ import annotations

import importlib
import os
import sys

import typer

from mmdeploy import __version__

app = typer.Typer(
    name="mmdeploy",
    help="Deploy trained multimodal checkpoints: PyTorch → ONNX → ONNX Runtime / OpenVINO / "
    "TFLite / TensorRT, with quantization, pruning, split computing and benchmarks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# command modules, each with a register(app) function
COMMAND_MODULES = ["convert", "compile", "quantize", "prune", "split", "bench", "run", "caption", "vqa", "eval",
                   "zeroshot", "classify", "embed", "bake", "demo"]


def _version(value: bool):
    if value:
        typer.echo(f"mmdeploy {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
):
    """Global options; ``--debug`` (tracebacks) and ``--verbose`` (library output on the terminal
    instead of ``<output>/logs/mmdeploy.log``) may be given anywhere on the line."""


for _name in COMMAND_MODULES:
    importlib.import_module(f"mmdeploy.cli.{_name}").register(app)


def get_command():
    """The click group behind ``app``, with readable metavars (PATH, N, MS) on every option."""
    import typer.main

    from mmdeploy.cli._usage import readable_metavars

    group = typer.main.get_command(app)
    readable_metavars(group)
    return group


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the app, turning MMDeployError into one line and an exit code.

    Usage errors (unknown command or option, a missing or malformed value) exit 2 with a
    "did you mean"; with ``--json`` every failure also prints ``{"error": {...}}`` on stdout.
    """
    from typer._click.exceptions import ClickException, NoArgsIsHelpError
    from typer.exceptions import Abort, Exit

    from mmdeploy.cli._usage import print_json_error, show_usage_error, usage_message
    from mmdeploy.errors import CheckFailed, MMDeployError

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args or os.environ.get("MMDEPLOY_DEBUG") == "1"
    args = [a for a in args if a != "--debug"]
    as_json = "--json" in args
    from mmdeploy import logs

    logs.VERBOSE = "--verbose" in args or os.environ.get("MMDEPLOY_VERBOSE") == "1"
    if next((a for a in args if not a.startswith("-")), None) != "serve":  # serve --verbose: its own
        args = [a for a in args if a != "--verbose"]
    from mmdeploy.models.preprocess import quiet_libraries

    quiet_libraries()

    def fail(kind: str, message: str, hint: str | None, exit_code: int) -> None:
        if as_json:
            print_json_error(kind, message, hint, exit_code)
        sys.exit(exit_code)

    import signal

    from mmdeploy.artifact import place_error, sigterm_raises
    from mmdeploy.errors import toolchain_missing

    received: list[int] = []

    def stop_if_interrupted() -> None:
        """After Ctrl-C / SIGTERM, whatever error it became (a library may turn it into another):
        the interrupt's line and exit code; the cleanup has run."""
        if received:
            logs.drop_kept_log()
            terminated = signal.SIGTERM in received
            print(f"{'terminated' if terminated else 'interrupted'}, nothing written", file=sys.stderr)
            sys.exit(143 if terminated else 130)

    try:
        with sigterm_raises(received.append):  # SIGTERM unwinds like Ctrl-C: temporary files are removed
            try:
                code = get_command().main(args=args, prog_name="mmdeploy", standalone_mode=False)
            except ImportError as exc:  # torch & co. missing: the runtime-only install
                raise toolchain_missing(exc) or exc
    except MMDeployError as exc:
        stop_if_interrupted()
        if debug:
            import traceback

            traceback.print_exc()
        if isinstance(exc, CheckFailed) and exc.details:
            print(exc.details, file=sys.stderr)
        print(f"error: {exc.one_line()}", file=sys.stderr)
        fail(type(exc).__name__, exc.message, exc.hint, exc.exit_code)
    except NoArgsIsHelpError as exc:
        print(exc.format_message())
        sys.exit(2)
    except ClickException as exc:
        show_usage_error(exc)
        fail("UsageError", usage_message(exc), "see --help", 2)
    except Exit as exc:
        sys.exit(exc.exit_code)
    except (Abort, KeyboardInterrupt):
        received.append(signal.SIGINT)  # Ctrl-C outside the block, or a handler that was not ours
        stop_if_interrupted()
    except Exception as exc:  # noqa: BLE001 - the last line of defence for users
        stop_if_interrupted()
        if debug:
            raise
        place = place_error(exc)
        if place is not None:  # a read-only or full disk, no permission: the user's to fix
            print(f"error: {place.one_line()}", file=sys.stderr)
            fail("InputError", place.message, place.hint, 2)
        message = f"{exc.__class__.__name__}: {exc}".splitlines()[0] if str(exc) else exc.__class__.__name__
        print(f"internal error: {message} (rerun with --debug for a traceback and report it)", file=sys.stderr)
        fail("InternalError", message, "rerun with --debug for a traceback and report it", 1)
    if code == 130:  # typer turns Ctrl-C (and so SIGTERM) into exit code 130
        received.append(signal.SIGINT)
    stop_if_interrupted()
    sys.exit(code if isinstance(code, int) else 0)
