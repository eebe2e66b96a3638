"""Quiet, legible output: library chatter in a log file, one line per stage, full-width tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmdeploy import logs
from mmdeploy.errors import InputError

# A stand-in "stage" that prints like the libraries do: Python print, warnings, logging, and a
# C-level write to fd 2 (what absl/LiteRT do; Python cannot intercept it without fd redirection).
NOISY = """
import logging, os, sys, warnings
from pathlib import Path
from mmdeploy import logs

def stage(say):
    say("step one")
    print("python stdout chatter")
    warnings.warn("a FutureWarning from a library", FutureWarning)
    logging.getLogger("somelib").warning("library logging")
    os.write(2, b"I0000 C-level chatter\\n")
    os.write(1, b"C-level stdout\\n")
    logging.getLogger("mmdeploy").warning("the tool's own warning")
    say("step two")

out = Path(sys.argv[1])
with logs.session(out, show=True) as say:
    out.mkdir()
    stage(say)
print("result on stdout")
"""


def _run(code: str, *args, env=None):
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=120)


def test_library_output_goes_to_the_log_in_the_output(tmp_path):
    done = _run(NOISY, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "result on stdout\n"
    lines = done.stderr.splitlines()
    assert [line.split("  ")[0] for line in lines] == ["warning: the tool's own warning", "· step one", "· step two"]
    log = (tmp_path / "out" / "logs" / "mmdeploy.log").read_text()
    for chatter in ("python stdout chatter", "FutureWarning", "library logging", "I0000 C-level chatter",
                    "C-level stdout"):
        assert chatter in log
    assert "the tool's own warning" not in log


def test_verbose_shows_everything_and_writes_no_log(tmp_path):
    code = NOISY.replace("from mmdeploy import logs\n", "from mmdeploy import logs\nlogs.VERBOSE = True\n", 1)
    done = _run(code, tmp_path / "out")
    assert done.returncode == 0, done.stderr
    assert "I0000 C-level chatter" in done.stderr and "python stdout chatter" in done.stdout
    assert not (tmp_path / "out" / "logs").exists()


def test_failure_keeps_the_log_and_names_it_in_the_error():
    with pytest.raises(InputError) as info:
        with logs.session(None, show=False):
            os.write(2, b"what the library said before failing\n")
            raise InputError("bad thing", "fix it")
    hint = info.value.hint
    assert hint.startswith("fix it; library output in ")
    log = Path(hint.rsplit(" ", 1)[1])
    try:
        assert "what the library said before failing" in log.read_text()
    finally:
        log.unlink()
    assert logs.terminal() is None  # the redirection ended


def test_a_failing_stage_is_marked(tmp_path):
    code = NOISY.replace('    say("step two")', '    say("step two")\n    raise RuntimeError("boom")')
    done = _run(code, tmp_path / "out")
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[-1] == "RuntimeError: boom"
    where = next(line for line in lines if line.startswith("library output in "))
    assert lines[lines.index(where) - 1].startswith("x step two")
    log = Path(where.rsplit(" ", 1)[1])
    assert "I0000 C-level chatter" in log.read_text()
    log.unlink()
    assert not (tmp_path / "out" / "logs").exists()  # failed: nothing moved into the output


def test_ctrl_c_prints_interrupted_nothing_written(tmp_path, tiny_clip_dir):
    out = tmp_path / "bundle"
    proc = subprocess.Popen([sys.executable, "-m", "mmdeploy", "convert", str(tiny_clip_dir), "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any(p.name.startswith(f".{out.name}.partial-") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130
    assert err.strip().splitlines()[-1] == "interrupted, nothing written"
    assert list(tmp_path.iterdir()) == []


def test_convert_prints_its_own_lines_only(cli_subprocess, tiny_clip_dir, tmp_path):
    done = cli_subprocess("convert", tiny_clip_dir, "-o", tmp_path / "b", "--components", "vision")
    assert done.returncode == 0, done.stderr
    assert all(line.startswith("· ") for line in done.stderr.splitlines()), done.stderr
    assert "[vision] verifying against PyTorch" in done.stderr
    assert "| artifact | format |" in done.stdout  # not a terminal: a Markdown table


def test_tables_off_a_terminal_are_full_width_markdown():
    import io

    from rich.console import Console
    from rich.table import Table

    from mmdeploy.cli._common import print_table

    table = Table(title="compiled into /some/long/path")
    table.add_column("artifact")
    table.add_column("latency", justify="right")
    long_name = "text-openvino-fp16-with-a-name-longer-than-any-terminal-" + "x" * 80
    table.add_row(long_name, "[green]1.25[/] ms")
    table.add_row("a|b", "2")
    buffer = io.StringIO()
    print_table(table, Console(file=buffer, width=80))
    assert buffer.getvalue().splitlines() == [
        "compiled into /some/long/path", "",
        "| artifact | latency |", "|---|---:|",
        f"| {long_name} | 1.25 ms |", "| a\\|b | 2 |"]
