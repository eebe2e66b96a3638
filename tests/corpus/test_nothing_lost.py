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


# --------------------------------------------------------------------------- the server's inputs


@pytest.fixture(scope="module")
def text_server(demo_bundle):
    """`mmdeploy serve` of the demo's text tower (vocabulary 36 ids, at most 16 tokens)."""
    from mmdeploy.split.server import make_server, start_in_thread

    srv = make_server(demo_bundle / "text", port=0, grpc_port=None)
    start_in_thread(srv)
    yield srv
    srv.shutdown()


def post_json(srv, ids, mask=None, content_type="application/json"):
    """POST a JSON infer request for the text tower; (status, decoded body)."""
    import http.client
    import json

    ids = [list(map(int, row)) for row in ids]
    mask = mask if mask is not None else [[1] * len(row) for row in ids]
    body = {"inputs": [
        {"name": "input_ids", "datatype": "INT64", "shape": [len(ids), len(ids[0])], "data": sum(ids, [])},
        {"name": "attention_mask", "datatype": "INT64", "shape": [len(mask), len(mask[0])], "data": sum(mask, [])}]}
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    headers = {"Content-Type": content_type} if content_type else {}
    conn.request("POST", "/v2/models/text/infer", body=json.dumps(body), headers=headers)
    response = conn.getresponse()
    data = json.loads(response.read() or b"{}")
    conn.close()
    return response.status, data


@pytest.mark.parametrize("ids, mask, message", [
    ([[5, -1, 35]], None, "input_ids: id -1 is outside the vocabulary [0, 36)"),  # Gather wraps: was 200
    ([[5, 36, 35]], None, "input_ids: id 36 is outside the vocabulary [0, 36)"),
    ([[5] * 40], None, "input_ids: sequence 40 given, the model takes at most 16"),
    ([[5, 6, 35]], [[1, 1]], "attention_mask: sequence 2 given, but input_ids has sequence 3"),
])
def test_the_server_checks_requests_before_the_runtime(text_server, ids, mask, message):
    status, data = post_json(text_server, ids, mask)
    assert status == 400 and message in data["error"], data
    assert "ONNXRuntime" not in data["error"] and "\n" not in data["error"]


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded", None])
def test_a_json_body_is_accepted_whatever_its_content_type(text_server, content_type):
    status, data = post_json(text_server, [[5, 6, 35]], content_type=content_type)  # curl -d: form-urlencoded
    assert status == 200, data
    assert data["outputs"][0]["name"] == "text_embeds" and data["outputs"][0]["shape"] == [1, 64]


def test_metadata_states_the_real_limits(text_server):
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", text_server.port, timeout=30)
    conn.request("GET", "/v2/models/text")
    meta = json.loads(conn.getresponse().read())
    conn.close()
    ids = next(t for t in meta["inputs"] if t["name"] == "input_ids")
    assert ids["shape"] == [-1, -1]
    assert ids["parameters"] == {"max_shape": [-1, 16], "min_value": 0, "max_value": 35}


def test_infer_split_checks_its_inputs_before_any_runtime(cli, tmp_path_factory, tmp_path):
    import numpy as np
    from builders import cached_split

    split = cached_split(tmp_path_factory, "vision", "block:0")
    bad = tmp_path / "wrong.npz"
    np.savez(bad, pixel_values=np.zeros((1, 3, 5, 5), np.float32))
    line = _one_line(cli("infer-split", split, bad, "--server", "http://127.0.0.1:9", "--no-fallback"))
    assert "wrong.npz: pixel_values: shape [1, 3, 5, 5] given" in line, line


# --------------------------------------------------------------------------- recipes, estimates


@pytest.mark.parametrize("passes, message", [
    ("  - quantize: {method: static}", "quantize option method"),
    ("  - prune: {method: heads, amount: 1.5}", "outside (0, 1)"),
    ("  - prune: {method: rows, amount: 0.2}", "unknown pruning method 'rows'"),
    ("  - simplify: {level: 3}", "unknown simplify option 'level'"),
])
def test_a_recipe_is_checked_whole_before_its_first_step(cli, tmp_path, passes, message):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nsource: demo:tiny-clip\npasses:\n{passes}\ntargets: [cpu]\n")
    result = cli("run", recipe, "-o", tmp_path / "out")
    line = _one_line(result)
    assert f"{recipe}:4" in line and message in line, line
    assert "convert" not in result.stderr.replace(line, "")  # nothing ran
    assert not (tmp_path / "out").exists()


def test_an_ort_only_int8_graph_is_not_estimated_for_tensorrt_boards(cli, tmp_path):
    import shutil as sh

    from _bench_models import component
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from mmdeploy.artifact import write_manifest

    c = component(tmp_path / "c", 2, width=64)
    q = tmp_path / "q"
    sh.copytree(c, q)
    quantize_dynamic(str(c / "model.onnx"), str(q / "model.onnx"), weight_type=QuantType.QInt8)
    write_manifest(q, read_manifest(c))
    line = _one_line(cli("bench", q, "--target", "jetson", "--estimate"))
    assert "assumes tensorrt, which cannot run" in line and "MatMulInteger" in line, line


# --------------------------------------------------------------------------- configs users get wrong


def _edit_config(folder: Path, section: str, key: str, value) -> None:
    import json

    config = json.loads((folder / "config.json").read_text())
    config[section][key] = value
    (folder / "config.json").write_text(json.dumps(config))


def test_a_blip_bos_token_id_outside_the_vocabulary_is_named(cli, tmp_path):
    from builders import tiny_blip_checkpoint

    folder = tiny_blip_checkpoint(tmp_path / "blip")
    _edit_config(folder, "text_config", "bos_token_id", 30522)  # BLIP's base value, kept after a new tokenizer
    line = _one_line(cli("convert", folder, "-o", tmp_path / "out"))
    assert "text_config.bos_token_id 30522 is outside the vocabulary [0, " in line and "--opset" not in line, line


def test_a_clap_audio_size_that_does_not_fit_is_named(cli, tmp_path):
    from builders import tiny_clap_checkpoint

    folder = tiny_clap_checkpoint(tmp_path / "clap")
    _edit_config(folder, "audio_config", "spec_size", 48)
    line = _one_line(cli("convert", folder, "-o", tmp_path / "out"))
    assert "audio_config.spec_size 48 does not fit the features (101 frames x 32 mel bins" in line, line
    assert "at least 64" in line and "--opset" not in line


def test_infer_split_takes_an_image_file(cli, demo_bundle, tmp_path):
    from PIL import Image

    from mmdeploy.split.build import split_component

    split = tmp_path / "split"
    split_component(demo_bundle, split, component="vision", at="block:0")
    image = tmp_path / "photo.png"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(image)
    result = cli("infer-split", split, image, "--server", "http://127.0.0.1:9", "--timeout", "0.5",
                 "--retries", "0", "--json")
    assert result.returncode == 0, result.stderr
    import json

    doc = json.loads(result.stdout)
    assert doc["route"] == "fallback" and doc["outputs"]["image_embeds"]["shape"] == [1, 64]
    line = _one_line(cli("infer-split", split, tmp_path / "missing.jpg", "--server", "http://127.0.0.1:9"))
    assert "missing.jpg does not exist" in line
