"""Remote targets over SSH, with the system ``ssh`` binary.

The artifact is streamed to the device as a tar over ssh, the device's own Python runs
``python -m mmdeploy.bench.remote_worker`` (the same harness, with the device's runtime; for
a Jetson the TensorRT engine is built there by the tensorrt backend's ``compile``), and the
JSON document comes back on stdout.  Keys, known_hosts and jump hosts are the user's normal
ssh configuration; ``BatchMode=yes`` makes a missing key an error instead of a password prompt.
"""

from __future__ import annotations

import io
import json
import shlex
import shutil
import subprocess
import tarfile
import uuid
from pathlib import Path

from mmdeploy.errors import InputError, MMDeployError


class RemoteError(MMDeployError):
    """The device ran the benchmark and it failed there (exit 1: not the user's input)."""

    exit_code = 1


def _split_host(host: str, port: int) -> tuple[str, int]:
    """``user@addr:2222`` -> (``user@addr``, 2222)."""
    if host.count(":") == 1 and host.rsplit(":", 1)[1].isdigit():
        addr, p = host.rsplit(":", 1)
        return addr, int(p)
    return host, port


class SSH:
    def __init__(self, profile, connect_timeout: int = 10):
        if not profile.host:
            where = profile.source or "the target profile"
            raise InputError(f"target {profile.name} runs on a remote device but no host is configured",
                             f"set host: user@address in {where}, or pass --host user@address "
                             f"(or use --estimate for a roofline ESTIMATE)")
        if shutil.which("ssh") is None:
            raise InputError("the ssh client is not installed", "install OpenSSH (e.g. apt-get install openssh-client)")
        self.profile = profile
        self.host, self.port = _split_host(profile.host, profile.port)
        # ssh keeps the first value given for an option: the profile's own options come first
        self.options = ["-p", str(self.port)]
        for opt in profile.ssh_options:
            self.options += ["-o", opt]
        if profile.identity_file:
            self.options += ["-i", str(Path(profile.identity_file).expanduser())]
        self.options += ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
                         "-o", "StrictHostKeyChecking=accept-new", "-o", "LogLevel=ERROR"]

    def run(self, command: str, stdin: bytes | None = None, timeout: float | None = None):
        return subprocess.run(["ssh", *self.options, self.host, command], input=stdin,
                              capture_output=True, timeout=timeout)

    def check(self) -> None:
        """Fail early, naming what to configure, when the device cannot be reached."""
        try:
            proc = self.run("true", timeout=60)
        except subprocess.TimeoutExpired:
            proc = None
        if proc is None or proc.returncode != 0:
            why = "timed out" if proc is None else (proc.stderr.decode(errors="replace").strip().splitlines()
                                                    or [f"ssh exit {proc.returncode}"])[-1]
            raise InputError(f"cannot reach target {self.profile.name} at {self.host} port {self.port} over SSH: {why}",
                             f"check host/port in {self.profile.source or 'the profile'} or --host, and that "
                             "`ssh` logs in without a password (keys, known_hosts)")

    def put(self, local: Path, remote_parent: str) -> str:
        """Copy a directory into ``remote_parent`` (tar over ssh); returns its remote path."""
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(str(local), arcname=local.name)
        q = shlex.quote(remote_parent)
        proc = self.run(f"mkdir -p {q} && tar -C {q} -xzf -", stdin=buffer.getvalue(), timeout=600)
        if proc.returncode != 0:
            raise RemoteError(f"copying {local} to {self.host}:{remote_parent} failed: "
                              f"{proc.stderr.decode(errors='replace').strip()[-300:]}")
        return f"{remote_parent}/{local.name}"


def run_remote(paths: list[str | Path], settings, profile, components: list[str] | None = None,
               keep: bool = False, timeout: float | None = None) -> dict:
    """Bench ``paths`` on the profile's device; returns the device's JSON document."""
    from mmdeploy.artifact import bundle_dir, read_manifest

    ssh = SSH(profile)
    ssh.check()
    workdir = f"{profile.workdir.rstrip('/')}/{uuid.uuid4().hex[:12]}"
    remote_paths, mapping = [], {}
    uploaded: dict[Path, str] = {}
    try:
        for raw in paths:
            path = Path(raw).resolve()
            read_manifest(path)  # InputError before anything is copied
            bundle = bundle_dir(path)
            top = bundle if bundle is not None else path
            if top not in uploaded:
                uploaded[top] = ssh.put(top, workdir)
            remote = uploaded[top] if top == path else f"{uploaded[top]}/{path.name}"
            remote_paths.append(remote)
            mapping[remote] = str(raw)
        device_profile = profile.model_copy(update={"remote": False, "host": None})
        request = {"paths": remote_paths, "components": components,
                   "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
                   "target": device_profile.model_dump()}
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in profile.env.items())
        command = f"cd {shlex.quote(workdir)} && {env} {shlex.quote(profile.python)} -m mmdeploy.bench.remote_worker"
        proc = ssh.run(command, stdin=json.dumps(request).encode(), timeout=timeout)
        out = proc.stdout.decode(errors="replace")
        if proc.returncode != 0:
            tail = proc.stderr.decode(errors="replace").strip().splitlines()
            last = tail[-1] if tail else f"exit {proc.returncode}"
            if proc.returncode == 2 and last.startswith("error: "):  # the device refused the input
                raise InputError(f"on {ssh.host}: {last[len('error: '):]}",
                                 f"fix the device's setup ({profile.python}, the {profile.backend} runtime)")
            raise RemoteError(f"benchmark on {ssh.host} failed: {tail[-1] if tail else f'exit {proc.returncode}'}",
                              f"check {profile.python} on the device has mmdeploy and the {profile.backend} runtime")
        try:
            doc = json.loads(out)
        except json.JSONDecodeError:
            raise RemoteError(f"the device {ssh.host} did not return a JSON document",
                              f"run `{profile.python} -m mmdeploy.bench.remote_worker` there by hand") from None
    finally:
        if not keep:
            ssh.run(f"rm -rf {shlex.quote(workdir)}", timeout=120)
    for r in doc.get("results", []):
        r["remote_path"] = r.get("path")
        r["path"] = next((mapping[k] + r["path"][len(k):] for k in mapping if r["path"].startswith(k)), r["path"])
    doc["remote"] = {"host": ssh.host, "port": ssh.port, "workdir": workdir, "python": profile.python}
    doc["target"] = profile.model_dump()
    return doc
