"""Nothing lost, nothing leaked (issue 23): outputs users already have, places that cannot be
written, and hints that must be commands the tool accepts."""

from __future__ import annotations

import ast
import re
import shlex
import shutil
from pathlib import Path

import pytest

import mmdeploy
from mmdeploy.artifact import _umask, check_output, read_manifest
from mmdeploy.errors import InputError


def _one_line(result, code=2):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == code, (result.stdout, result.stderr)
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    return lines[-1]


@pytest.fixture
def users_bundle(clip_bundle, tmp_path) -> Path:
    """A user's `convert` output of the tiny CLIP, with their own note saved inside it."""
    out = tmp_path / "out" / "x"
    shutil.copytree(clip_bundle, out)
    (out / "vision" / "notes.txt").write_text("my notes")
    return out


def test_a_users_note_is_never_deleted_even_with_force(cli, users_bundle, tiny_siglip_dir):
    for extra in ([], ["--force"]):
        result = cli("convert", tiny_siglip_dir, "-o", users_bundle, *extra)
        line = _one_line(result)
        assert "vision/notes.txt" in line and "did not write" in line
        assert "loading" not in result.stderr  # refused before the checkpoint loaded
    assert (users_bundle / "vision" / "notes.txt").read_text() == "my notes"
    assert read_manifest(users_bundle).family == "clip"


def test_another_sources_bundle_needs_force(cli, users_bundle, tiny_clip_dir, tiny_siglip_dir):
    (users_bundle / "vision" / "notes.txt").unlink()
    line = _one_line(cli("convert", tiny_siglip_dir, "-o", users_bundle))
    assert "holds another artifact" in line and str(tiny_clip_dir.resolve()) in line and "--force" in line
    siglip = str(tiny_siglip_dir.resolve())
    check_output(users_bundle, force=True, source=siglip, format="bundle")  # --force lets it through
    check_output(users_bundle, source=str(tiny_clip_dir.resolve()), format="bundle")  # the same source: rebuilt


def test_a_modified_bundle_needs_force(users_bundle, tiny_clip_dir):
    (users_bundle / "vision" / "notes.txt").unlink()
    with (users_bundle / "vision" / "model.onnx").open("ab") as fh:
        fh.write(b"edited")
    with pytest.raises(InputError, match="incomplete or modified artifact .*vision/model.onnx"):
        check_output(users_bundle, source=str(tiny_clip_dir.resolve()))
    check_output(users_bundle, force=True)


def test_bundles_follow_the_umask(clip_bundle):
    """Under umask 022: 0644 files, 0755 folders (a serving container running as another user reads them)."""
    mask = _umask()
    assert (clip_bundle.stat().st_mode & 0o777) == 0o777 & ~mask
    for path in clip_bundle.rglob("*"):
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        assert (path.stat().st_mode & 0o777) == want, path


def test_an_output_below_a_file_is_one_line(cli, tiny_clip_dir, tmp_path):
    (tmp_path / "report.txt").write_text("x")
    line = _one_line(cli("convert", tiny_clip_dir, "-o", tmp_path / "report.txt" / "bundle"))
    assert "report.txt is a file, not a folder" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.txt"]


def test_a_missing_parent_is_created_and_removed_again_on_failure(tmp_path):
    from mmdeploy.artifact import atomic_output

    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "a" / "b" / "bundle") as work:
            assert work.parent == tmp_path / "a" / "b" and work.name.startswith(".bundle.partial-")
            raise RuntimeError("failed mid-way")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- hints are commands

_ERROR_CALL = re.compile(r"(Error|Unavailable|Exceeded|Failed)$")


def _hint_commands() -> list[tuple[str, str]]:
    """Every `mmdeploy ...` command quoted in an error's message or hint in the package:
    (where, command line)."""
    found = []
    root = Path(mmdeploy.__file__).parent
    for file in sorted(root.rglob("*.py")):
        tree = ast.parse(file.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if not _ERROR_CALL.search(name or ""):
                continue
            for arg in [*node.args, *(k.value for k in node.keywords)]:
                text = _literal(arg)
                quoted = re.findall(r"`(mmdeploy [^`]+)`", text)
                prose = [c for c in re.findall(r"\b(mmdeploy [a-z][^;,)]*)", text)
                         if c.split()[1] in _commands()]  # "mmdeploy never deletes ..." is prose
                for cmd in quoted or prose:
                    found.append((f"{file.relative_to(root.parent)}:{node.lineno}", cmd.strip()))
    return found


def _commands() -> set[str]:
    from mmdeploy.cli import get_command

    return set(get_command().commands)


def _literal(node) -> str:
    """A string literal's text; f-string placeholders become X; concatenations joined."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal(node.left) + _literal(node.right)
    return ""


def _values_ok(command: str, option: str, value: str) -> bool:
    """Values the commands check in code (not click choices); placeholders (DIR, X, ...) pass."""
    if value.isupper() or value in ("X", "...") or value.startswith("<"):
        return True
    if command == "quantize" and option == "method":
        from mmdeploy.cli.quantize import METHODS

        return value in METHODS
    if command in ("convert", "compile") and option == "target":
        from mmdeploy.stages.compile import parse_targets

        try:
            parse_targets([value])
        except InputError:
            return False
    return True


def test_every_hint_that_names_a_command_is_valid_syntax():
    from mmdeploy.cli import get_command

    group = get_command()
    hints = _hint_commands()
    assert len(hints) >= 5, hints
    bad = []
    for where, line in hints:
        words = shlex.split(line.replace("|", " "))[1:]
        sub = group.commands.get(words[0]) if words else None
        if sub is None:
            bad.append(f"{where}: {line} (no command {words[:1]})")
            continue
        ctx = sub.make_context(words[0], [], resilient_parsing=True)
        try:
            opts, _, _ = sub.make_parser(ctx).parse_args(list(words[1:]))
        except Exception as exc:  # noqa: BLE001 - click's NoSuchOption, BadOptionUsage...
            bad.append(f"{where}: {line} ({exc})")
            continue
        for option, value in opts.items():
            if isinstance(value, str) and not _values_ok(words[0], option, value):
                bad.append(f"{where}: {line} (--{option} {value} is rejected)")
    print(f"hints checked: {len(hints)}")
    assert not bad, "\n".join(bad)
