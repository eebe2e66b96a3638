"""`mmdeploy serve` over gRPC with the official tritonclient.grpc, and the edge (HybridRunner) over
gRPC under load and through a server crash.

The gRPC client runs in its own process (tests/_grpc_edge.py): tritonclient.grpc and KServe's
server register the same protobuf package and cannot share one.  Loopback only; every loop is
bounded in count and time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from builders import cached_split

from mmdeploy.split.server import make_server, start_in_thread

EDGE = str(Path(__file__).with_name("_grpc_edge.py"))
TOKEN = "s3cret"


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    return cached_split(tmp_path_factory, "vision", "block:0")


def _edge(*args, timeout=300):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent.parent),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, EDGE, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_tritonclient_grpc_api(split_dir):
    srv = make_server(split_dir, port=0, grpc_port=0, token=TOKEN, max_request_bytes=1 << 20)
    start_in_thread(srv)
    try:
        seen = _edge("api", srv.grpc_url, TOKEN, split_dir)
    finally:
        srv.shutdown()
    assert seen["live"] and seen["ready"] and seen["model_ready"]
    assert seen["metadata"]["name"] == "vision_cloud"
    assert seen["metadata"]["inputs"] == [{"name": "cut_0", "datatype": "FP32", "shape": ["-1", "17", "32"]}]
    for key in ("infer", "infer_gzip", "infer_after"):
        assert seen[key]["status"] == "OK" and seen[key]["max_error"] < 1e-5, seen[key]
    for key in ("wrong_token", "no_token"):
        assert seen[key]["status"] == "StatusCode.UNAUTHENTICATED", seen[key]
    assert seen["metadata_wrong_token"] == "StatusCode.UNAUTHENTICATED"
    assert seen["wrong_dtype"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert "datatype float64 given, float32 expected" in seen["wrong_dtype"]["message"]
    assert seen["wrong_shape"]["status"] == "StatusCode.INVALID_ARGUMENT"
    assert seen["unknown_model"]["status"] == "StatusCode.NOT_FOUND"
    assert seen["over_limit"]["status"] == "StatusCode.RESOURCE_EXHAUSTED"


def test_1000_grpc_requests_from_32_clients_none_lost(split_dir):
    srv = make_server(split_dir, port=0, grpc_port=0, token=TOKEN)
    start_in_thread(srv)
    try:
        summary = _edge("load", srv.grpc_url, TOKEN, split_dir, 1000, 32)
    finally:
        srv.shutdown()
    assert summary["routes"] == {"remote": 1000} and summary["wrong"] == 0
    assert summary["metrics"]["failures"] == 0
    stats = srv.statistics()["vision_cloud"]["inference_stats"]
    assert stats["success"]["count"] == 1000 and stats["fail"]["count"] == 0


def test_grpc_server_killed_mid_run_every_request_answered_by_fallback(split_dir):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    server = subprocess.Popen([sys.executable, "-m", "mmdeploy", "serve", str(split_dir), "--port", "0",
                               "--grpc-port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=env)
    edge = None
    try:
        line = server.stdout.readline()
        match = re.search(r"gRPC (127\.0\.0\.1:\d+)", line)
        assert match, (line, server.stderr.read() if server.poll() is not None else "")
        edge_env = dict(env, PYTHONPATH=os.pathsep.join([str(Path(__file__).parent.parent),
                                                         os.environ.get("PYTHONPATH", "")]))
        edge = subprocess.Popen([sys.executable, EDGE, "load", match.group(1), "", str(split_dir), "600", "16",
                                 "--fallback"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=edge_env)
        for _ in range(20):  # until 150 answered (bounded: at most 20 progress lines)
            progress = edge.stdout.readline()
            if not progress or int(progress.split()[1]) >= 150:
                break
        server.send_signal(signal.SIGKILL)  # the cloud dies with requests in flight
        out, err = edge.communicate(timeout=300)
        assert edge.returncode == 0, err[-3000:]
    finally:
        server.kill()
        server.wait(timeout=10)
        if edge is not None and edge.poll() is None:
            edge.kill()
    summary = json.loads(out.strip().splitlines()[-1])
    routes = summary["routes"]
    assert sum(routes.values()) == 600 and summary["wrong"] == 0
    assert routes.get("remote", 0) >= 150 and routes.get("fallback", 0) > 0
    m = summary["metrics"]
    assert m["remote"] + m["fallback"] == m["requests"] == 600 and m["last_error"]
