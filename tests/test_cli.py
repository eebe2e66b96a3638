"""The command line: exit codes, one-line errors, no tracebacks, nothing half-written."""

import subprocess
import sys

import pytest


def test_help_does_not_import_heavy_libraries():
    code = ("import sys, mmdeploy.cli; heavy = {'torch', 'onnxruntime', 'openvino', 'transformers', "
            "'onnx', 'tensorflow', 'litert_torch'} & set(sys.modules); print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_version_and_help(cli_subprocess):
    assert cli_subprocess("--version").stdout.startswith("mmdeploy ")
    result = cli_subprocess("--help")
    assert result.returncode == 0 and "convert" in result.stdout


def _assert_one_line_error(result, *fragments):
    """The real entry point's contract for bad input: exit 2, one line, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]


@pytest.fixture(scope="module")
def bad_sources(tmp_path_factory, tiny_clip_dir):
    import shutil

    root = tmp_path_factory.mktemp("bad")
    (root / "not-a-checkpoint").mkdir()
    (root / "not-a-checkpoint" / "notes.txt").write_text("hello")
    (root / "garbage").mkdir()
    (root / "garbage" / "config.json").write_text("{not json")
    (root / "unknown").mkdir()
    (root / "unknown" / "config.json").write_text('{"model_type": "mystery-net"}')
    truncated = root / "truncated"
    shutil.copytree(tiny_clip_dir, truncated)
    weights = truncated / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    corrupt = root / "corrupt"
    shutil.copytree(tiny_clip_dir, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    (root / "junk.onnx").write_bytes(b"this is not onnx")
    return root


@pytest.mark.parametrize("name,fragments", [
    ("missing", ["does not exist"]),
    ("not-a-checkpoint", ["not a checkpoint folder"]),
    ("garbage", ["not valid JSON"]),
    ("unknown", ["unknown model family", "clip", "siglip"]),
    ("truncated", ["truncated"]),
    ("corrupt", ["not a valid safetensors"]),
    ("junk.onnx", ["not a valid ONNX model"]),
])
def test_bad_sources(cli, bad_sources, tmp_path, name, fragments):
    out = tmp_path / "out"
    _assert_one_line_error(cli("convert", bad_sources / name, "--output", out), *fragments)
    assert not out.exists()


def test_bad_components_and_debug_traceback(cli, tiny_clip_dir, tmp_path):
    out = tmp_path / "out"
    _assert_one_line_error(cli("convert", tiny_clip_dir, "-o", out, "--components", "vision,audio"),
                           "'audio'", "valid components: vision, text")
    assert not out.exists()
    debug = cli("convert", tiny_clip_dir, "-o", out, "--components", "audio", "--debug")
    assert debug.returncode == 2 and "Traceback" in debug.stderr


def test_inspect(cli, clip_bundle):
    result = cli("inspect", clip_bundle)
    assert result.returncode == 0
    assert "pixel_values: float32[batch, 3, 32, 32]" in result.stdout
    assert "all sha256 match" in result.stdout
    assert cli("inspect", clip_bundle, "--json").stdout.lstrip().startswith("{")
    _assert_one_line_error(cli("inspect", clip_bundle / "nope"), "does not exist")


def test_parity_failure_exits_1_with_a_table(cli_subprocess, tiny_clip_dir, tmp_path):
    result = cli_subprocess("convert", tiny_clip_dir, "-o", tmp_path / "out", "--components", "vision", "--atol", "1e-12")
    assert result.returncode == 1
    assert "FAIL" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
