"""Remote targets for real: an OpenSSH server started by the test on 127.0.0.1.

Skipped only when the ``sshd`` binary is absent (``.ci/run`` installs Debian's openssh-server).
"""

import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _bench_models import bundle
from mmdeploy.bench import BenchSettings, bench
from mmdeploy.errors import InputError
from mmdeploy.targets import get_target

REPO = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None)

pytestmark = [pytest.mark.ssh,
              pytest.mark.skipif(SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None,
                                 reason="OpenSSH server/client not installed (apt-get install openssh-server)")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = _free_port()
    (d / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {d / 'host_key'}
PidFile {d / 'sshd.pid'}
AuthorizedKeysFile {d / 'authorized_keys'}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
""")
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # privilege separation directory Debian's sshd needs
    proc = subprocess.Popen([SSHD, "-f", str(d / "sshd_config"), "-D", "-e"],
                            stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("sshd exited: " + (d / "sshd.log").read_text()[-500:])
            time.sleep(0.1)
    profiles = d / "targets"
    profiles.mkdir()
    (profiles / "loopback.yaml").write_text(json.dumps({
        "name": "loopback", "description": "ONNX Runtime over ssh on 127.0.0.1", "backend": "onnxruntime",
        "threads": 1, "remote": True, "host": f"{getpass.getuser()}@127.0.0.1", "port": port,
        "identity_file": str(d / "client_key"),
        "ssh_options": [f"UserKnownHostsFile={d / 'known_hosts'}", "IdentitiesOnly=yes"],
        "python": sys.executable, "workdir": str(d / "remote-work"),
        "env": {"PYTHONPATH": str(REPO)}}))
    yield {"port": port, "dir": d, "targets": profiles}
    proc.terminate()
    proc.wait(timeout=10)


def test_bench_over_ssh_copies_runs_and_brings_json_back(sshd, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 2, "text": 1})
    profile = get_target("loopback", [sshd["targets"]])
    doc = bench([b], BenchSettings(warmup=2, iters=20), profile)
    assert doc["remote"]["host"].endswith("@127.0.0.1") and doc["remote"]["port"] == sshd["port"]
    assert [r["component"] for r in doc["results"]] == ["vision", "text"]
    r = doc["results"][0]
    assert len(r["samples_ms"]) == 20 and r["p50_ms"] > 0 and r["threads"] == 1
    assert r["path"] == str(b / "vision") and r["remote_path"].startswith(str(sshd["dir"] / "remote-work"))
    assert not any((sshd["dir"] / "remote-work").iterdir())  # the device's copy is cleaned up


def test_cli_remote_with_budget_and_host_flag(sshd, tmp_path, capsys):
    from mmdeploy.cli import main

    b = bundle(tmp_path / "m", {"vision": 1})
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(b), "--target", "loopback", "--targets-dir", str(sshd["targets"]), "--iters", "10",
              "--host", f"{getpass.getuser()}@127.0.0.1:{sshd['port']}", "--max-p50-ms", "1e-6", "--json"])
    assert exc.value.code == 1
    doc = json.loads(capsys.readouterr().out)
    assert doc["remote"]["port"] == sshd["port"] and not doc["passed"]


def test_unreachable_host_is_a_clear_error(sshd, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 1})
    profile = get_target("loopback", [sshd["targets"]], host=f"nobody@127.0.0.1:{_free_port()}")
    with pytest.raises(InputError) as exc:
        bench([b], BenchSettings(iters=1), profile)
    line = exc.value.one_line()
    assert "cannot reach target loopback" in line and "host/port" in line


def test_jetson_like_target_reports_the_devices_error(sshd, tmp_path):
    """A TensorRT target over SSH: the device builds the engine itself; without TensorRT there,
    the device's one-line error comes back naming the host (here: no TensorRT on 127.0.0.1)."""
    from mmdeploy.errors import MMDeployError

    b = bundle(tmp_path / "m", {"vision": 1})
    profile = get_target("loopback", [sshd["targets"]]).model_copy(update={"backend": "tensorrt",
                                                                           "precision": "fp16"})
    with pytest.raises(MMDeployError) as exc:
        bench([b], BenchSettings(iters=1), profile)
    line = exc.value.one_line()
    assert "127.0.0.1" in line and "tensorrt" in line.lower()


@pytest.mark.slow
def test_recipe_compiles_here_and_benches_on_the_device(sshd, tiny_clip_dir, tmp_path):
    """OpenVINO IR is portable: `run` compiles it locally, copies it, benches it over SSH."""
    from mmdeploy.stages.recipe import run_recipe

    profile = json.loads((sshd["targets"] / "loopback.yaml").read_text())
    profile.update(name="loopback-ov", backend="openvino")
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
