import pytest

from mmdeploy import targets
from mmdeploy.errors import InputError

SHIPPED = {"cpu", "openvino-cpu", "tflite", "tensorrt", "jetson-orin-nano", "jetson-agx-orin", "rpi5"}


def test_shipped_profiles_load_with_backend_precision_and_roofline():
    found = targets.list_targets()
    assert SHIPPED <= set(found)
    for name in SHIPPED:
        p = found[name]
        assert p.backend in targets.BACKENDS and p.precision and p.peak_gflops and p.memory_bandwidth_gbs
    assert found["jetson-orin-nano"].remote and found["jetson-orin-nano"].backend == "tensorrt"
    assert found["rpi5"].remote and found["rpi5"].backend == "tflite"
    assert not found["cpu"].remote and found["cpu"].backend == "onnxruntime"


def test_user_profiles_from_env_config_and_dir_override_in_order(tmp_path, monkeypatch):
    home, env_dir, cli_dir = tmp_path / "cfg", tmp_path / "env", tmp_path / "cli"
    (home / "mmdeploy" / "targets").mkdir(parents=True)
    env_dir.mkdir()
    cli_dir.mkdir()
    (home / "mmdeploy" / "targets" / "mine.yaml").write_text("backend: onnxruntime\nthreads: 1\n")
    (env_dir / "mine.yaml").write_text("backend: onnxruntime\nthreads: 2\n")
    (cli_dir / "cpu.yaml").write_text("name: cpu\nbackend: onnxruntime\nthreads: 3\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    assert targets.get_target("mine").threads == 1
    monkeypatch.setenv("MMDEPLOY_TARGETS_PATH", str(env_dir))
    assert targets.get_target("mine").threads == 2
    assert targets.get_target("cpu", [cli_dir]).threads == 3
    assert targets.get_target("cpu").threads is None


def test_host_override_makes_remote():
    p = targets.get_target("cpu", host="me@10.0.0.2:2222")
    assert p.remote and p.host == "me@10.0.0.2:2222"


def test_unknown_target_lists_names():
    with pytest.raises(InputError) as exc:
        targets.get_target("jetson-nano-9000")
    assert "unknown target 'jetson-nano-9000'" in exc.value.one_line()
    assert "jetson-orin-nano" in exc.value.one_line() and "rpi5" in exc.value.one_line()


def test_bad_profile_names_file_and_line(tmp_path):
    (tmp_path / "x.yaml").write_text("backend: onnxruntime\nthreads: many\n")
    with pytest.raises(InputError, match=r"x.yaml:2: invalid target profile: threads"):
        targets.list_targets([tmp_path])
    (tmp_path / "x.yaml").write_text("backend: coreml\n")
    with pytest.raises(InputError, match=r"x.yaml:1: unknown backend 'coreml'"):
        targets.list_targets([tmp_path])
    with pytest.raises(InputError, match="not a directory"):
        targets.list_targets([tmp_path / "missing"])


def test_remote_target_without_host_is_a_clear_error(tmp_path):
    from _bench_models import component
    from mmdeploy.bench import BenchSettings, bench

    c = component(tmp_path / "c", 1)
    with pytest.raises(InputError) as exc:
        bench([c], BenchSettings(iters=1), targets.get_target("jetson-orin-nano"))
    line = exc.value.one_line()
    assert "no host is configured" in line and "--host" in line and "jetson-orin-nano.yaml" in line


def test_cli_list_targets_and_unknown_target(tmp_path, capsys):
    from _bench_models import component
    from mmdeploy.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["bench", "--list-targets"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert all(name in out for name in SHIPPED)
    c = component(tmp_path / "c", 1)
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(c), "--target", "nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown target 'nope'") and "openvino-cpu" in err
