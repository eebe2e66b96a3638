"""Remote targets for real: OpenSSH's sshd on 127.0.0.1 and a "device" Python that has only
numpy + onnxruntime + tflite-runtime (see ``_device.py``).  Nothing of mmdeploy runs there but
the one worker file the host ships."""

import json
import subprocess

import pytest

from _bench_models import bundle
from _device import bare_python, device_python, free_port, needs_ssh, sshd, user_profile, workdir_empty  # noqa: F401
from mmdeploy.bench import BenchSettings, bench
from mmdeploy.errors import InputError
from mmdeploy.targets import get_target

pytestmark = needs_ssh


def test_device_python_has_no_mmdeploy_torch_or_transformers(sshd):
    """The point of the worker: the device needs none of the host's stack (checked over SSH,
    in the environment the worker gets)."""
    from mmdeploy.targets.remote import SSH

    ssh = SSH(get_target("loopback", [sshd["targets"]]))
    for module in ("mmdeploy", "torch", "transformers", "onnx"):
        proc = ssh.run(f"cd / && {sshd['python']} -c 'import {module}'", timeout=60)
        assert proc.returncode == 1 and b"ModuleNotFoundError" in proc.stderr, f"{module} is importable on the device"
    ok = ssh.run(f"cd / && {sshd['python']} -c 'import numpy, onnxruntime, tflite_runtime'", timeout=60)
    assert ok.returncode == 0, ok.stderr


def test_worker_file_imports_only_the_standard_library():
    """Its imports at module level are stdlib (numpy and runtimes only inside functions)."""
    import ast
    import sys

    from mmdeploy.targets.remote import WORKER

    tree = ast.parse(WORKER.read_text())
    top = {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
    top |= {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom)}
    assert top <= set(sys.stdlib_module_names)
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("mmdeploy")]


def test_bench_over_ssh_copies_runs_and_brings_json_back(sshd, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 2, "text": 1})
    profile = get_target("loopback", [sshd["targets"]])
    doc = bench([b], BenchSettings(warmup=2, iters=20), profile)
    assert doc["remote"]["host"].endswith("@127.0.0.1") and doc["remote"]["port"] == sshd["port"]
    assert [r["component"] for r in doc["results"]] == ["vision", "text"]
    r = doc["results"][0]
    assert len(r["samples_ms"]) == 20 and r["p50_ms"] > 0 and r["threads"] == 1
    assert r["runner"].startswith("onnxruntime 1.") and r["host"].endswith("@127.0.0.1")
    assert r["path"] == str(b / "vision")
    tools = doc["machine"]["tools"]  # the device's runtime and OS versions, not the host's
    assert tools["numpy"] and tools["onnxruntime"] and "tflite-runtime" in tools and doc["machine"]["system"]
    assert workdir_empty(sshd)  # the device's copy is cleaned up


def test_cli_remote_with_budget_and_host_flag(sshd, tmp_path, capsys):
    from mmdeploy.cli import main

    b = bundle(tmp_path / "m", {"vision": 1})
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(b), "--target", "loopback", "--targets-dir", str(sshd["targets"]), "--iters", "10",
              "--host", f"{sshd['user']}@127.0.0.1:{sshd['port']}", "--max-p50-ms", "1e-6", "--json"])
    assert exc.value.code == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["remote"]["port"] == sshd["port"] and not doc["passed"]


def test_several_hosts_run_in_parallel_into_one_table(sshd, tmp_path, capsys):
    from mmdeploy.cli import main

    b = bundle(tmp_path / "m", {"vision": 1})
    hosts = f"{sshd['user']}@127.0.0.1:{sshd['port']},{sshd['user']}@localhost:{sshd['port']}"
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(b), "--target", "loopback", "--targets-dir", str(sshd["targets"]), "--iters", "5",
              "--host", hosts, "--json"])
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert sorted(r["host"] for r in doc["results"]) == [f"{sshd['user']}@127.0.0.1", f"{sshd['user']}@localhost"]
    assert len(doc["devices"]) == 2
    from mmdeploy.bench.report import markdown

    table = markdown(doc)
    assert f"| {sshd['user']}@127.0.0.1 |" in table and f"| {sshd['user']}@localhost |" in table


def test_unreachable_host_is_a_clear_error(sshd, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 1})
    profile = get_target("loopback", [sshd["targets"]], host=f"nobody@127.0.0.1:{free_port()}")
    with pytest.raises(InputError) as exc:
        bench([b], BenchSettings(iters=1), profile)
    line = exc.value.one_line()
    assert "cannot reach target loopback" in line and "127.0.0.1" in line and "host/port" in line


def test_refused_key_names_the_host_and_identity(sshd, tmp_path, capsys):
    from mmdeploy.cli import main

    b = bundle(tmp_path / "m", {"vision": 1})
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(b), "--target", "loopback", "--targets-dir", str(sshd["targets"]),
              "--identity", str(sshd["dir"] / "other_key"), "--iters", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "127.0.0.1" in err and "refused the SSH key" in err
    assert "--identity" in err and "authorized_keys" in err


def test_device_without_numpy(sshd, bare_python, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 1})
    profile = get_target("loopback", [sshd["targets"]], python=str(bare_python))
    with pytest.raises(InputError) as exc:
        bench([b], BenchSettings(iters=1), profile)
    line = exc.value.one_line()
    assert "127.0.0.1" in line and "numpy is not installed" in line and "pip install numpy" in line
    assert workdir_empty(sshd)


def test_device_without_python(sshd, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 1})
    profile = get_target("loopback", [sshd["targets"]], python="/nonexistent/python3")
    with pytest.raises(InputError) as exc:
        bench([b], BenchSettings(iters=1), profile)
    line = exc.value.one_line()
    assert "/nonexistent/python3 was not found" in line and "--device-python" in line
    assert workdir_empty(sshd)


def test_device_without_the_runtime(sshd, tmp_path):
    """OpenVINO IR is compiled here; the device python has no openvino: say what to install."""
    b = bundle(tmp_path / "m", {"vision": 1})
    profile = get_target("loopback", [sshd["targets"]]).model_copy(update={"backend": "openvino"})
    with pytest.raises(InputError) as exc:
        bench([b], BenchSettings(iters=1), profile)
    line = exc.value.one_line()
    assert "127.0.0.1" in line and "openvino runtime is not installed" in line and "pip install openvino" in line
    assert workdir_empty(sshd)


def test_full_disk_on_the_device(sshd, tmp_path):
    """A real full disk: the work folder on a 1 MiB tmpfs (needs root to mount; else skipped)."""
    import os

    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        b = bundle(tmp_path / "m", {"vision": 4})
        profile = get_target("loopback", [sshd["targets"]]).model_copy(update={"workdir": str(mnt / "w")})
        with pytest.raises(InputError) as exc:
            bench([b], BenchSettings(iters=1), profile)
        line = exc.value.one_line()
        assert "127.0.0.1" in line and "free" in line and "workdir:" in line
        assert not any((mnt / "w").iterdir())
    finally:
        subprocess.run(["umount", str(mnt)])


def test_jetson_target_on_a_machine_without_tensorrt(sshd, tmp_path, capsys):
    """`--target jetson` on a device with neither TensorRT nor trtexec: one line, exit 2."""
    from mmdeploy.cli import main

    b = bundle(tmp_path / "m", {"vision": 1})
    targets = user_profile(sshd, tmp_path / "cfg", "jetson")
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(b), "--target", "jetson", "--targets-dir", str(targets),
              "--host", f"{sshd['user']}@127.0.0.1", "--iters", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "127.0.0.1" in err and "tensorrt runtime is not installed" in err
    assert "JetPack" in err and workdir_empty(sshd)


@pytest.mark.slow
def test_rpi_end_to_end_with_accuracy_on_the_device(sshd, demo_bundle, tmp_path, capsys):
    """`--target rpi`: the board is detected (this machine is no Pi: its own identity is kept,
    the generic profile applies), the .tflite tower (compiled here) runs with tflite-runtime on
    the device python, and --accuracy evaluates the demo's zero-shot task with the image tower
    on the device.  tflite-runtime 2.14 (its last release) lacks GATHER_ND v5, which litert-torch
    emits for the text tower: that is a setup error naming what to install."""
    from mmdeploy.cli import main
    from mmdeploy.stages.compile import compile_artifact

    tfl = tmp_path / "demo-tflite"
    compile_artifact(demo_bundle, "tflite:fp32", tfl)
    targets = user_profile(sshd, tmp_path / "cfg", "rpi")
    base = ["bench", str(tfl), "--target", "rpi", "--targets-dir", str(targets), "--host",
            f"{sshd['user']}@127.0.0.1", "--device-python", str(sshd["python"]), "--threads", "1"]
    with pytest.raises(SystemExit) as exc:
        main(base + ["--iters", "1", "--components", "text"])
    err = capsys.readouterr().err.strip()
    assert exc.value.code == 2 and "lacks op GATHER_ND v5" in err and "ai-edge-litert" in err
    assert workdir_empty(sshd)
    with pytest.raises(SystemExit) as exc:
        main(base + ["--iters", "10", "--components", "vision", "--accuracy", "--accuracy-limit", "30", "--json"])
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    doc = json.loads(captured.out)
    board = doc["device"]["board"]
    assert board["matched"] is False and board["applied"].startswith("rpi (generic")
    assert board["identity"] and board["model"] is None
    r = doc["results"][0]
    assert r["component"] == "vision" and r["format"] == "tflite" and r["runner"].startswith("tflite tflite-runtime 2.")
    assert len(r["samples_ms"]) == 10 and r["threads"] == 1
    acc = doc["accuracy"][0]
    assert acc["evaluated_on"] == "device" and acc["n"] == 30
    assert abs(acc["value"] - acc["host_value"]) <= 1 / 30  # fp32 on both sides
    parity = r["device_parity"]["outputs"]
    assert min(p["cosine"] for p in parity.values()) > 0.9999 and r["device_parity"]["calls"] >= 1
    assert workdir_empty(sshd)


@pytest.mark.slow
def test_recipe_compiles_here_and_benches_on_the_device(sshd, tiny_clip_dir, tmp_path):
    """OpenVINO IR is portable: `run` compiles it locally, copies it, benches it over SSH -- on a
    device python that has openvino (here: the host's own interpreter)."""
    import sys

    from mmdeploy.stages.recipe import run_recipe

    profile = json.loads((sshd["targets"] / "loopback.yaml").read_text())
    profile.update(name="loopback-ov", backend="openvino", python=sys.executable)
    targets = tmp_path / "targets"
    targets.mkdir()
    (targets / "loopback-ov.yaml").write_text(json.dumps(profile))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\nsource: {tiny_clip_dir}\ncomponents: [vision]\ntargets: [loopback-ov]\n"
                      "bench: {iters: 5, warmup: 1}\nbudgets:\n  - {component: vision, max_p50_ms: 10000}\n")
    summary = run_recipe(recipe, tmp_path / "out", targets_dir=[targets])
    assert summary["passed"] and summary["targets"]["loopback-ov"]["artifacts"] == ["loopback-ov/fp32"]
    doc = json.loads((tmp_path / "out" / "bench" / "loopback-ov" / "results.json").read_text())
    assert doc["remote"]["port"] == sshd["port"] and doc["results"][0]["format"] == "openvino"
