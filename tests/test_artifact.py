import json

import numpy as np
import pytest

from mmdeploy.artifact import (Manifest, atomic_output, component_dirs, load_reference, read_manifest,
                               save_reference, sha256_path, verify_files, write_manifest)
from mmdeploy.errors import InputError


def _component(directory, name="vision"):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "model.bin").write_bytes(b"weights")
    return write_manifest(directory, Manifest(name=name, format="onnx"))


def test_manifest_hashes_every_file_and_detects_changes(tmp_path):
    manifest = _component(tmp_path / "a")
    assert set(manifest.files) == {"model.bin"}
    assert read_manifest(tmp_path / "a").files["model.bin"].bytes == 7
    assert verify_files(tmp_path / "a") == []
    (tmp_path / "a" / "model.bin").write_bytes(b"tampered")
    assert verify_files(tmp_path / "a") == ["model.bin"]


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output(out) as tmp:
            _component(tmp / "vision")
            raise RuntimeError("crash mid-way")
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no partial directory either


def test_atomic_output_replaces_an_artifact_but_never_a_user_directory(tmp_path):
    out = tmp_path / "out"
    for _ in range(2):  # the second run replaces the first artifact
        with atomic_output(out) as tmp:
            _component(tmp)
    assert read_manifest(out).name == "vision"
    user_dir = tmp_path / "photos"
    user_dir.mkdir()
    (user_dir / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="not an mmdeploy artifact"):
        with atomic_output(user_dir):
            pass
    assert (user_dir / "holiday.jpg").exists()


def test_bundle_lists_its_components(tmp_path):
    _component(tmp_path / "vision", "vision")
    _component(tmp_path / "text", "text")
    write_manifest(tmp_path, Manifest(kind="model", name="m", artifacts=[
        {"path": "vision", "component": "vision", "format": "onnx"},
        {"path": "text", "component": "text", "format": "onnx"}]))
    assert [m.name for _, m in component_dirs(tmp_path)] == ["vision", "text"]
    # the bundle hashes the sub-artifacts' files and manifests too
    assert "vision/manifest.json" in read_manifest(tmp_path).files


def test_read_manifest_errors_are_user_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_manifest(tmp_path / "missing")
    with pytest.raises(InputError, match="not an mmdeploy artifact"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"kind": "nonsense"}))
    with pytest.raises(InputError, match="not a valid manifest"):
        read_manifest(tmp_path)


def test_reference_round_trip(tmp_path):
    cases = [({"x": np.arange(6, dtype=np.float32).reshape(2, 3)}, {"y": np.ones((2, 4))}),
             ({"x": np.zeros((1, 3), np.float32)}, {"y": np.zeros((1, 4))})]
    save_reference(tmp_path, cases)
    loaded = load_reference(tmp_path)
    assert len(loaded) == 2
    np.testing.assert_array_equal(loaded[0][0]["x"], cases[0][0]["x"])
    np.testing.assert_array_equal(loaded[1][1]["y"], cases[1][1]["y"])


def test_sha256_path_of_a_directory_depends_on_names_and_contents(tmp_path):
    (tmp_path / "a").write_text("1")
    first = sha256_path(tmp_path)
    (tmp_path / "a").rename(tmp_path / "b")
    assert sha256_path(tmp_path) != first
