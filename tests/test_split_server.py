"""`mmdeploy serve` (KServe's model server) against the official Triton client, tritonclient.http:
infer (binary, JSON, gzip, deflate), metadata, config, statistics, health, the token; malformed
requests get a 4xx with one line, never a 5xx, and the server keeps serving.

gRPC is tested in test_split_grpc.py (tritonclient.grpc cannot share a process with KServe's server).
"""

from __future__ import annotations

import gzip
import http.client
import json
import socket
import struct
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
from builders import cached_split
from tritonclient.utils import InferenceServerException

from mmdeploy.artifact import load_reference
from mmdeploy.errors import InputError
from mmdeploy.split.server import make_server, start_in_thread

TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
LIMIT = 1 << 20


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    return cached_split(tmp_path_factory, "vision", "block:0")


@pytest.fixture(scope="module")
def server(split_dir):
    srv = make_server(split_dir, port=0, token=TOKEN, max_request_bytes=LIMIT)
    start_in_thread(srv)
    yield srv
    srv.shutdown()


@pytest.fixture(scope="module")
def client(server):
    c = httpclient.InferenceServerClient(f"127.0.0.1:{server.port}", network_timeout=30)
    yield c
    c.close()


def _cut(split_dir):
    feeds, outputs = load_reference(split_dir / "cloud")[0]
    return feeds["cut_0"], outputs["image_embeds"]


def _request(srv, method, path, body=None, headers=None, token=TOKEN):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=30)
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def _infer(client, cut, binary=True, compression=None, headers=AUTH):
    tensor = httpclient.InferInput("cut_0", list(cut.shape), "FP32")
    tensor.set_data_from_numpy(cut, binary_data=binary)
    out = httpclient.InferRequestedOutput("image_embeds", binary_data=binary)
    # a copy: tritonclient adds its own headers (Content-Encoding...) to the dict it is given
    result = client.infer("vision_cloud", [tensor], outputs=[out], headers=dict(headers) if headers else None,
                          request_compression_algorithm=compression)
    return result.as_numpy("image_embeds")


def test_binds_loopback_by_default(server):
    assert server.host == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
    assert server.grpc_url.startswith("127.0.0.1:")


def test_health_is_open_and_metadata_config_need_the_token(server, client):
    assert client.is_server_live() and client.is_server_ready()  # no token
    assert client.is_model_ready("vision_cloud", headers=AUTH)
    meta = client.get_model_metadata("vision_cloud", headers=AUTH)
    assert meta["name"] == "vision_cloud"
    assert meta["inputs"] == [{"name": "cut_0", "datatype": "FP32", "shape": [-1, 17, 32]}]
    config = client.get_model_config("vision_cloud", headers=AUTH)
    assert config["input"] == [{"name": "cut_0", "data_type": "TYPE_FP32", "dims": [-1, 17, 32]}]
    assert config["output"][0]["name"] == "image_embeds"
    for call in (lambda h: client.get_model_metadata("vision_cloud", headers=h),
                 lambda h: client.get_model_config("vision_cloud", headers=h),
                 lambda h: client.get_inference_statistics("vision_cloud", headers=h)):
        for headers in (None, {"Authorization": "Bearer wrong"}):
            with pytest.raises(InferenceServerException) as info:
                call(headers)
            assert info.value.status() == "401"


@pytest.mark.parametrize("binary,compression", [(True, None), (False, None), (True, "gzip"), (False, "gzip"),
                                                (True, "deflate")])
def test_infer_binary_json_and_compressed(server, client, split_dir, binary, compression):
    cut, want = _cut(split_dir)
    got = _infer(client, cut, binary, compression)
    assert got.shape == want.shape and np.abs(got - want).max() < 1e-5


def test_statistics_count_inferences(server, client, split_dir):
    before = client.get_inference_statistics("vision_cloud", headers=AUTH)["model_stats"][0]
    _infer(client, _cut(split_dir)[0])
    after = client.get_inference_statistics("vision_cloud", headers=AUTH)["model_stats"][0]
    assert after["name"] == "vision_cloud"
    assert after["inference_count"] == before["inference_count"] + 1
    assert after["inference_stats"]["success"]["count"] == before["inference_stats"]["success"]["count"] + 1


def test_wrong_or_missing_token_is_401(server, client, split_dir):
    cut, _ = _cut(split_dir)
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret"}):
        with pytest.raises(InferenceServerException) as info:
            _infer(client, cut, headers=headers)
        assert info.value.status() == "401" and "bearer token" in info.value.message()


def test_token_from_environment(split_dir, monkeypatch):
    monkeypatch.setenv("MMDEPLOY_SERVE_TOKEN", "from-env")
    srv = make_server(split_dir, port=0, grpc_port=None)
    start_in_thread(srv)
    try:
        assert _request(srv, "GET", "/v2/models/vision_cloud", token=None)[0] == 401
        assert _request(srv, "GET", "/v2/models/vision_cloud", token="from-env")[0] == 200
        assert _request(srv, "GET", "/v2/health/ready", token=None)[0] == 200
    finally:
        srv.shutdown()


GOOD = {"name": "cut_0", "datatype": "FP32", "shape": [1, 17, 32], "data": [0.5] * (17 * 32)}
BINARY_HEADER = json.dumps({"inputs": [{"name": "cut_0", "datatype": "FP32", "shape": [1, 17, 32],
                                        "parameters": {"binary_data_size": 17 * 32 * 4}}]}).encode()


def _json(inputs, extra=None):
    return json.dumps({"inputs": inputs, **(extra or {})}).encode(), {"Content-Type": "application/json"}


MALFORMED = {
    "unknown input": (*_json([{**GOOD, "name": "nope"}]), 400, "unknown input 'nope'"),
    "extra input": (*_json([GOOD, {**GOOD, "name": "other"}]), 400, "unknown input"),
    "wrong dtype": (*_json([{**GOOD, "datatype": "INT64", "data": [1] * (17 * 32)}]), 400,
                    "datatype int64 given, float32 expected"),
    "wrong shape": (*_json([{**GOOD, "shape": [1, 17, 31], "data": [0.5] * (17 * 31)}]), 400,
                    "shape [1, 17, 31] given"),
    "wrong rank": (*_json([{**GOOD, "shape": [17, 32]}]), 400, "shape [17, 32] given"),
    "too few values": (*_json([{**GOOD, "data": [0.5] * 3}]), 400, ""),
    "unknown output": (*_json([GOOD], {"outputs": [{"name": "nope"}]}), 400, "unknown output 'nope'"),
    "not json": (b"{bad", {"Content-Type": "application/json"}, 400, ""),
    "truncated binary payload": (BINARY_HEADER + struct.pack("<4f", 1, 2, 3, 4),
                                 {"Inference-Header-Content-Length": str(len(BINARY_HEADER))}, 400, ""),
    "header length past the body": (BINARY_HEADER, {"Inference-Header-Content-Length": "999999"}, 400, ""),
    "gzip that does not inflate": (b"\x1f\x8b\x08\x00garbage", {"Content-Encoding": "gzip"}, 400,
                                   "does not inflate as gzip"),
    "deflate that does not inflate": (b"garbage", {"Content-Encoding": "deflate"}, 400, "does not inflate"),
    "unknown encoding": (b"x", {"Content-Encoding": "br"}, 415, "not supported"),
    "body over the limit": (b"x" * (LIMIT + 1), {}, 413, "exceeds the limit"),
    "gzip bomb over the limit": (gzip.compress(b"\0" * (LIMIT + 10)), {"Content-Encoding": "gzip"}, 413,
                                 "past the limit"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_requests_get_4xx_with_one_line(server, client, split_dir, case):
    body, headers, status, message = MALFORMED[case]
    got, data = _request(server, "POST", "/v2/models/vision_cloud/infer", body=body, headers=headers)
    assert got == status, (got, data)
    error = json.loads(data)["error"]
    assert message in error and "\n" not in error and error
    # the server keeps serving
    cut, want = _cut(split_dir)
    assert np.abs(_infer(client, cut) - want).max() < 1e-5


def test_unknown_model_and_endpoint(server, client, split_dir):
    cut, _ = _cut(split_dir)
    tensor = httpclient.InferInput("cut_0", list(cut.shape), "FP32")
    tensor.set_data_from_numpy(cut)
    with pytest.raises(InferenceServerException) as info:
        client.infer("nope", [tensor], headers=dict(AUTH))
    assert info.value.status() == "404" and "nope" in info.value.message()
    assert _request(server, "GET", "/v2/nothing")[0] == 404
    assert _request(server, "GET", "/v2/models/vision_cloud/infer")[0] == 405


def test_several_artifacts_at_once(tmp_path_factory, split_dir):
    text_dir = cached_split(tmp_path_factory, "text", "cloud")
    srv = make_server([split_dir, text_dir], port=0, grpc_port=None)
    start_in_thread(srv)
    try:
        c = httpclient.InferenceServerClient(f"127.0.0.1:{srv.port}")
        assert c.is_model_ready("vision_cloud") and c.is_model_ready("text_cloud")
        cut, want = _cut(split_dir)
        assert np.abs(_infer(c, cut, headers=None) - want).max() < 1e-5
        feeds, outputs = load_reference(text_dir / "cloud")[0]
        tensors = []
        for name, value in feeds.items():
            t = httpclient.InferInput(name, list(value.shape), "INT64" if value.dtype == np.int64 else "FP32")
            t.set_data_from_numpy(value)
            tensors.append(t)
        got = c.infer("text_cloud", tensors).as_numpy("text_embeds")
        assert np.abs(got - outputs["text_embeds"]).max() < 1e-5
        c.close()
    finally:
        srv.shutdown()
    with pytest.raises(InputError, match="both named"):
        make_server([split_dir, split_dir], port=0)


def test_unusable_port_is_an_input_error(split_dir, server):
    with pytest.raises(InputError, match="cannot listen"):
        make_server(split_dir, port=server.port)
    with pytest.raises(InputError, match="out of range"):
        make_server(split_dir, port=70000)
    with pytest.raises(InputError, match="does not exist"):
        make_server(split_dir.parent / "missing", port=0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        with pytest.raises(InputError, match="cannot listen"):
            make_server(split_dir, port=0, grpc_port=s.getsockname()[1])


def test_deflate_accepts_zlib_and_raw(server, split_dir):
    cut, want = _cut(split_dir)
    body = json.dumps({"inputs": [{**GOOD, "data": cut.reshape(-1).tolist()}]}).encode()
    raw = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    for packed in (zlib.compress(body), raw.compress(body) + raw.flush()):
        status, data = _request(server, "POST", "/v2/models/vision_cloud/infer", body=packed,
                                headers={"Content-Encoding": "deflate"})
        assert status == 200, data
        out = json.loads(data)["outputs"][0]
        assert np.abs(np.asarray(out["data"], np.float32).reshape(want.shape) - want).max() < 1e-5


def test_cli_workers_serve_and_stop_cleanly(split_dir):
    """`serve --workers 2`: REST answered by two processes; SIGTERM stops all of them."""
    import os
    import re
    import signal
    import subprocess
    import sys

    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mmdeploy", "serve", str(split_dir), "--port", "0",
                             "--grpc-port", "0", "--workers", "2", "--token", TOKEN],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        match = re.search(r"127\.0\.0\.1:(\d+)/v2", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        c = httpclient.InferenceServerClient(f"127.0.0.1:{match.group(1)}", network_timeout=30)
        cut, want = _cut(split_dir)
        for _ in range(10):
            assert np.abs(_infer(c, cut) - want).max() < 1e-5
        c.close()
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert len(children) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert all(not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()
                   for pid in children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
