"""Quiet output: third-party chatter goes to a log file, the tool's own lines to the terminal.

The libraries the stages drive print a lot, much of it from C/C++ (absl ``I0000`` lines, LiteRT
stage timers, TensorFlow Lite's delegate notice) that Python cannot intercept.  :func:`session`
points file descriptors 1 and 2 (and ``sys.stdout``/``sys.stderr``) at a log file while a
command's stages run, gives the stages one ``progress`` hook that prints one line per stage with
its elapsed time on the real terminal, and moves the log to ``<output>/logs/mmdeploy.log`` when
the command succeeds.  With ``--verbose`` (:data:`VERBOSE`) nothing is redirected.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, TextIO

LOG_NAME = "mmdeploy.log"
VERBOSE = False  # set by the CLI's global --verbose

_active = False  # sessions do not nest: an inner one (a recipe's convert) reuses the outer
_terminal_stream: TextIO | None = None  # where the tool's own lines go while a session redirects
_kept: Path | None = None  # the log a failed session kept (named in its error)


def terminal() -> TextIO | None:
    """The real stderr while a session redirects fds 1/2 into its log, else None."""
    return _terminal_stream


def _flush_c_stdio() -> None:
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except Exception:  # noqa: BLE001 - best effort (no libc symbol table on some platforms)
        pass


def _terminal(stream: TextIO) -> tuple[TextIO, bool]:
    """A stream that still reaches where ``stream`` goes once fds 1/2 are redirected.

    Returns (stream, owned): a file on a duplicate of the fd when ``stream`` is fd 1 or 2
    (owned: close it afterwards), else ``stream`` itself (a test's StringIO, a pipe object).
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return stream, False
    if fd not in (1, 2):
        return stream, False
    encoding = getattr(stream, "encoding", None) or "utf-8"
    return open(os.dup(fd), "w", buffering=1, encoding=encoding, errors="replace"), True


@contextlib.contextmanager
def redirect(log_file: Path) -> Iterator[TextIO]:
    """Send fds 1 and 2, ``sys.stdout`` and ``sys.stderr`` to ``log_file``; yield the terminal.

    The yielded stream reaches the original ``sys.stderr``.  Python-level logging and warnings
    follow ``sys.stderr`` into the log; C-level writes follow the file descriptors.
    """
    for s in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            s.flush()
    old_out, old_err = sys.stdout, sys.stderr
    terminal, owned = _terminal(old_err)
    saved = [os.dup(1), os.dup(2)]
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    # never closed (closefd=False): a library that kept a reference writes to fd 1/2 afterwards
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", errors="replace", closefd=False)
    try:
        yield terminal
    finally:
        for s in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                s.flush()
        _flush_c_stdio()
        sys.stdout, sys.stderr = old_out, old_err
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for s in saved:
            os.close(s)
        if owned:
            terminal.close()


class StageLines:
    """The ``progress`` hook: each message starts a stage; a stage's line is printed when it ends,
    with its elapsed time.  On a terminal a spinner shows the running stage and its ticking
    elapsed time (rich); elsewhere (CI logs, pipes) plain lines only, plus one line every
    :attr:`heartbeat_s` while a long stage runs (exporting or quantizing a model past 2 GB takes
    minutes), so a log shows the tool is alive."""

    heartbeat_s = 60.0

    def __init__(self, stream: TextIO):
        from rich.console import Console

        self.console = Console(file=stream, highlight=False, soft_wrap=True)
        self.tty = self.console.is_terminal
        self.current: str | None = None
        self.start = 0.0
        self._live = None
        self._beat = None

    def _heartbeat(self, stop) -> None:
        """Every heartbeat_s of one stage's run, a line (a stage shorter than that gets none)."""
        said: tuple[str | None, float] = (None, 0.0)  # (stage, its start) last spoken of, and when
        last = 0.0
        while not stop.wait(self.heartbeat_s / 4):
            current, start = self.current, self.start
            if current is None:
                continue
            now = time.perf_counter()
            if said != (current, start):
                said, last = (current, start), start
            if now - last >= self.heartbeat_s:
                last = now
                self.console.print(f"  … {current}: still running ({(now - start) / 60:.0f} min)", markup=False)

    def __call__(self, message: str) -> None:
        self.finish()
        self.current, self.start = message, time.perf_counter()
        if self.tty and self._live is None:
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=self.console, transient=True)
            self._task = self._live.add_task(_escape(message), total=None)
            self._live.start()
        elif self._live is not None:
            self._live.reset(self._task, description=_escape(message))
        if not self.tty and self._beat is None:
            import threading

            stop = threading.Event()
            thread = threading.Thread(target=self._heartbeat, args=(stop,), daemon=True,
                                      name="mmdeploy-heartbeat")
            thread.start()
            self._beat = (stop, thread)

    def finish(self, failed: bool = False) -> None:
        """End the running stage: print its line (marked failed if ``failed``)."""
        if self.current is None:
            return
        seconds = time.perf_counter() - self.start
        took = f"  {seconds:.1f} s" if seconds >= 0.05 else ""
        if self.tty:
            mark = "[red]✗[/]" if failed else "[green]✓[/]"
            self.console.print(f"{mark} {_escape(self.current)}[dim]{took}[/]")
        else:
            self.console.print(f"{'x' if failed else '·'} {self.current}{took}", markup=False)
        self.current = None

    def close(self, failed: bool = False) -> None:
        self.finish(failed)
        if self._beat is not None:
            stop, thread = self._beat
            stop.set()
            thread.join()
            self._beat = None
        if self._live is not None:
            self._live.stop()
            self._live = None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


class _Own(logging.Handler):
    """The tool's own warnings (logger ``mmdeploy``) stay on the terminal."""

    def __init__(self, lines: Callable[[str], None]):
        super().__init__(logging.WARNING)
        self.lines = lines

    def emit(self, record: logging.LogRecord) -> None:
        self.lines(f"warning: {record.getMessage()}")


@contextlib.contextmanager
def session(output: str | Path | None = None, *, show: bool = True) -> Iterator[Callable[[str], None] | None]:
    """Run a command's stages quietly; yields the ``progress`` hook (None when ``show`` is False).

    Third-party output is written to a temporary log, moved to ``<output>/logs/mmdeploy.log``
    when the block succeeds and ``output`` is a directory.  When the block raises, the log is
    kept (if anything was written) and its path is added to the error's hint; on Ctrl-C it is
    removed.  With :data:`VERBOSE` or inside another session, nothing is redirected.
    """
    global _active, _terminal_stream, _kept
    if VERBOSE or _active:
        lines = StageLines(sys.stderr) if show else None
        try:
            yield lines
        except BaseException:
            if lines:
                lines.close(failed=True)
            raise
        if lines:
            lines.close()
        return
    from mmdeploy.artifact import signals_deferred

    _kept = None  # an earlier command's log is that command's
    own = logging.getLogger("mmdeploy")
    log_file: Path | None = None  # until the log exists
    _active = True
    try:
        with signals_deferred():  # Ctrl-C / SIGTERM right now: raised once the log is known, below
            fd, name = tempfile.mkstemp(prefix="mmdeploy-", suffix=".log")
            os.close(fd)
            log_file = Path(name)
        with redirect(log_file) as terminal:
            _terminal_stream = terminal
            lines = StageLines(terminal) if show else None
            handler = _Own((lambda m: lines.console.print(m, markup=False)) if lines
                           else (lambda m: print(m, file=terminal)))
            own.addHandler(handler)
            propagate, own.propagate = own.propagate, False
            try:
                yield lines
            except BaseException as exc:
                if lines:
                    lines.close(failed=not (isinstance(exc, SystemExit) and not exc.code))
                raise
            finally:
                own.removeHandler(handler)
                own.propagate = propagate
            if lines:
                lines.close()
    except BaseException as exc:
        if log_file is None:  # interrupted, or no temporary space, before the log existed
            raise
        if _interrupted(exc):  # Ctrl-C / SIGTERM, or an error a library made of one
            log_file.unlink(missing_ok=True)
        elif isinstance(exc, SystemExit):  # typer.Exit and friends: an exit code, not a failure
            _keep(log_file, output)
        elif log_file.stat().st_size == 0:
            log_file.unlink(missing_ok=True)
        else:
            _mention(exc, log_file)
        raise
    finally:
        _active, _terminal_stream = False, None
    _keep(log_file, output)


def log_failure(exc: BaseException, label: str) -> str:
    """One line for a failure that a search records and goes past (``nncf: failed during
    quantization: <first line>``); the full traceback goes to the command's log (the redirected
    stderr inside a :func:`session`, else the ``mmdeploy`` logger at debug level)."""
    import traceback

    lines = [line for line in str(exc).splitlines() if line.strip()]
    first = f"{type(exc).__name__}: {lines[0].strip()}" if lines else type(exc).__name__
    if not hasattr(exc, "one_line"):  # a project error's line is already its message
        first = first[:300]
    else:
        first = exc.one_line()
    text = "".join(traceback.format_exception(exc))
    if _terminal_stream is not None:  # inside a session: stderr is the log file
        print(f"{label}: {text}", file=sys.stderr)
    else:
        logging.getLogger("mmdeploy.search").debug("%s: %s", label, text)
    return first


def _interrupted(exc: BaseException | None) -> bool:
    """Whether ``exc`` was raised while handling Ctrl-C / SIGTERM (a KeyboardInterrupt in its chain)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def drop_kept_log() -> None:
    """Remove the log a failed session kept: the failure was an interrupt (the CLI knows), and an
    interrupted command leaves nothing behind."""
    global _kept
    if _kept is not None:
        _kept.unlink(missing_ok=True)
        _kept = None


def _keep(log_file: Path, output: str | Path | None) -> None:
    """Move the log into ``output``/logs (or drop it: no output directory, or nothing logged)."""
    from mmdeploy.artifact import LOG_DIR, follow_umask

    if output is None or Path(output).is_file() or log_file.stat().st_size == 0:
        log_file.unlink(missing_ok=True)
        return
    dest = Path(output) / LOG_DIR / LOG_NAME
    dest.parent.mkdir(parents=True, exist_ok=True)  # bench writes its --report folder afterwards
    shutil.move(str(log_file), dest)
    follow_umask(dest)  # mkstemp made it 0600


def _mention(exc: BaseException, log_file: Path) -> None:
    """Point the one-line error at the log of what the libraries printed."""
    from mmdeploy.errors import MMDeployError

    global _kept
    _kept = log_file
    note = f"library output in {log_file}"
    if isinstance(exc, MMDeployError):
        exc.hint = f"{exc.hint}; {note}" if exc.hint else note
    else:
        print(note, file=sys.stderr)
