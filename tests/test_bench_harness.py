import numpy as np
import pytest

from _bench_models import bundle, component
from mmdeploy.artifact import read_manifest
from mmdeploy.bench import BenchSettings, bench, harness
from mmdeploy.errors import InputError
from mmdeploy.targets import get_target


def test_bundle_benches_every_component_with_all_fields(tmp_path):
    b = bundle(tmp_path / "m", {"vision": 2, "text": 1})
    doc = bench([b], BenchSettings(warmup=2, iters=20, threads=1), get_target("cpu"))
    assert doc["schema"] == "mmdeploy.bench" and doc["schema_version"] == 1
    assert doc["kind"] == "measurement" and doc["target"]["name"] == "cpu"
    assert [r["component"] for r in doc["results"]] == ["vision", "text"]
    for r in doc["results"]:
        for key in ("load_ms", "first_inference_ms", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
                    "throughput_per_s", "peak_rss_mb", "size_bytes"):
            assert r[key] > 0, key
        assert len(r["samples_ms"]) == 20 and r["input_source"] == "reference.npz"
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"]
    m = doc["machine"]
    assert m["cpu_count"] >= 1 and "governor" in m and "onnxruntime" in m["tools"]


def test_one_component_directory_and_components_filter(tmp_path):
    b = bundle(tmp_path / "m", {"vision": 2, "text": 1})
    doc = bench([b / "text"], BenchSettings(warmup=0, iters=5), None)
    assert [(r["artifact"], r["component"], r["model"]) for r in doc["results"]] == [("text", "text", "chain")]
    doc = bench([b], BenchSettings(warmup=0, iters=5), None, components=["vision"])
    assert [r["component"] for r in doc["results"]] == ["vision"]


def test_duration_and_interleaved_blocks(tmp_path):
    a = component(tmp_path / "a", 1)
    b = component(tmp_path / "b", 1)
    doc = bench([a, b], BenchSettings(warmup=1, iters=None, duration=0.2, blocks=2), None)
    assert all(len(r["samples_ms"]) > 2 for r in doc["results"])
    doc = bench([a, b], BenchSettings(warmup=1, iters=30, blocks=3), None)
    assert [len(r["samples_ms"]) for r in doc["results"]] == [30, 30]


def test_inputs_rebatched_from_reference_or_synthesized(tmp_path):
    c = component(tmp_path / "c", 1, reference=False)
    feeds, source = harness.make_feeds(c, read_manifest(c), 3)
    assert source == "synthesized" and feeds["x"].shape == (3, 64, 256) and feeds["x"].dtype == np.float32
    r = component(tmp_path / "r", 1)
    feeds, source = harness.make_feeds(r, read_manifest(r), 4)
    assert source == "reference.npz" and feeds["x"].shape == (4, 64, 256)
    doc = bench([r], BenchSettings(warmup=0, iters=3, batch=4), None)
    assert doc["results"][0]["batch"] == 4


def test_bad_input(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        bench([tmp_path / "nope"], BenchSettings(), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="not an mmdeploy artifact"):
        bench([tmp_path / "empty"], BenchSettings(), None)
    with pytest.raises(InputError, match="iters"):
        bench([tmp_path / "empty"], BenchSettings(iters=0), None)


def test_format_mismatch_without_compile_is_clear(tmp_path):
    from mmdeploy.artifact import Manifest, write_manifest

    d = tmp_path / "ov"
    d.mkdir()
    (d / "model.xml").write_text("<net/>")
    write_manifest(d, Manifest(kind="component", name="vision", format="openvino"))
    # (`cpu` runs an OpenVINO artifact as shipped, beside the ONNX; a single-runtime target does not)
    with pytest.raises(InputError, match="openvino artifact; target tflite runs tflite"):
        bench([d], BenchSettings(iters=1), get_target("tflite"))


def test_onnx_bundle_compiled_on_the_fly_for_openvino_target(tmp_path):
    b = bundle(tmp_path / "m", {"vision": 2})
    doc = bench([b], BenchSettings(warmup=1, iters=5), get_target("openvino-cpu"))
    (r,) = doc["results"]
    assert r["format"] == "openvino" and r["p50_ms"] > 0 and doc["target"]["backend"] == "openvino"


def test_bundle_with_compiled_artifacts_picks_the_targets_format(tmp_path):
    from mmdeploy.artifact import ArtifactRef, Manifest, write_manifest

    b = bundle(tmp_path / "m", {"vision": 1})
    m = read_manifest(b)
    fake = b / "vision-openvino"
    fake.mkdir()
    (fake / "model.xml").write_text("<net/>")
    write_manifest(fake, Manifest(kind="component", name="vision", format="openvino"))
    m.artifacts.append(ArtifactRef(path="vision-openvino", component="vision", format="openvino", target="openvino"))
    write_manifest(b, m)
    assert [i.path.name for i in harness.collect([b])] == ["vision"]
    assert [i.path.name for i in harness.collect([b], target=get_target("openvino-cpu"))] == ["vision-openvino"]


def test_progress_reports_every_timed_run(tmp_path):
    seen: dict[str, int] = {}

    def progress(label, n, total):
        seen[label] = seen.get(label, 0) + n
        assert total == 25

    bench([component(tmp_path / "a", 1)], BenchSettings(warmup=0, iters=25), None, progress=progress)
    assert seen == {"a/vision": 25}


def test_size_counts_the_model_not_the_reference(tmp_path):
    c = component(tmp_path / "c", 2)
    doc = bench([c], BenchSettings(warmup=0, iters=2), None)
    assert doc["results"][0]["size_bytes"] == (c / "model.onnx").stat().st_size
