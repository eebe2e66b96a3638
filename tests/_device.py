"""A real SSH "device" for tests: OpenSSH's sshd on 127.0.0.1 and a Python environment that has
ONLY numpy + onnxruntime + tflite-runtime (no mmdeploy, torch or transformers), as a Raspberry
Pi or a Jetson has.  The environment is built once per test session (10-50 s from pip's cache or PyPI;
``MMDEPLOY_TEST_DEVICE_VENV=DIR`` reuses one).  Skipped only when sshd is absent (``.ci/run``
installs Debian's openssh-server)."""

from __future__ import annotations

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

REPO = Path(__file__).resolve().parents[1]
SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.access("/usr/sbin/sshd", os.X_OK) else None)
HAVE_SSH = SSHD is not None and shutil.which("ssh") is not None and shutil.which("ssh-keygen") is not None
needs_ssh = [pytest.mark.ssh, pytest.mark.skipif(not HAVE_SSH, reason="OpenSSH server/client not installed "
                                                  "(apt-get install openssh-server)")]
# tflite-runtime 2.14 (the last release, what a Pi installs) is built against numpy 1.x: with
# numpy 2 its interpreter fails to load ("_ARRAY_API not found"), so the device keeps numpy 1.26
DEVICE_PACKAGES = ("numpy==1.26.4", "onnxruntime==1.31.1", "tflite-runtime==2.14.0")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _python_in(venv: Path) -> Path:
    return venv / "bin" / "python"


@pytest.fixture(scope="session")
def device_python(tmp_path_factory) -> Path:
    """The device's interpreter: a venv without system site-packages holding only the 3 wheels."""
    given = os.environ.get("MMDEPLOY_TEST_DEVICE_VENV")
    venv = Path(given) if given else tmp_path_factory.mktemp("device") / "venv"
    py = _python_in(venv)
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        *DEVICE_PACKAGES], check=True, timeout=600)
    return py


@pytest.fixture(scope="session")
def bare_python(tmp_path_factory) -> Path:
    """A device interpreter without numpy (a fresh venv)."""
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return _python_in(venv)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory, device_python):
    """sshd on 127.0.0.1 with a throw-away host key and client key; a `loopback` profile
    (ONNX Runtime on the device python) in ``targets``."""
    d = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key", "other_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / key)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    port = free_port()
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
PermitUserEnvironment no
MaxStartups 30:30:60
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
    targets = d / "targets"
    targets.mkdir()
    user = getpass.getuser()
    connection = {"host": f"{user}@127.0.0.1", "port": port, "identity_file": str(d / "client_key"),
                  "ssh_options": [f"UserKnownHostsFile={d / 'known_hosts'}", "IdentitiesOnly=yes"],
                  "python": str(device_python), "workdir": str(d / "remote-work")}
    (targets / "loopback.yaml").write_text(json.dumps({
        "name": "loopback", "description": "ONNX Runtime over ssh on 127.0.0.1", "backend": "onnxruntime",
        "threads": 1, "remote": True, **connection}))
    yield {"port": port, "dir": d, "targets": targets, "user": user, "connection": connection,
           "work": d / "remote-work", "python": device_python}
    proc.terminate()
    proc.wait(timeout=10)


def user_profile(sshd: dict, directory: Path, shipped: str, **update) -> Path:
    """A user's copy of a shipped profile (as in ~/.config/mmdeploy/targets/) with the loopback
    connection settings: how a user points ``--target rpi`` at their own device."""
    import yaml

    from mmdeploy.targets import SHIPPED

    data = yaml.safe_load((SHIPPED / f"{shipped}.yaml").read_text())
    conn = dict(sshd["connection"])
    conn.pop("host")
    data.update(conn, **update)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{data['name']}.yaml").write_text(yaml.safe_dump(data))
    return directory


def workdir_empty(sshd: dict) -> bool:
    work = sshd["work"]
    return not work.exists() or not any(work.iterdir())
