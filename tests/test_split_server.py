"""The v2 server: endpoints, token, limits; malformed requests get a 4xx, never a 500 or a crash."""

from __future__ import annotations

import http.client
import json
import socket

import numpy as np
import pytest
from builders import cached_split

from mmdeploy.artifact import load_reference
from mmdeploy.errors import InputError
from mmdeploy.split.client import V2Client
from mmdeploy.split.server import make_server, start_in_thread

TOKEN = "s3cret"


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    return cached_split(tmp_path_factory, "vision", "block:0")


@pytest.fixture(scope="module")
def server(split_dir):
    srv = make_server(split_dir, port=0, token=TOKEN, max_request_bytes=1 << 20)
    start_in_thread(srv)
    yield srv
    srv.shutdown()
    srv.server_close()


def _request(srv, method, path, body=None, headers=None, token=TOKEN):
    conn = http.client.HTTPConnection(*srv.server_address[:2], timeout=10)
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def _cut(split_dir):
    feeds, _ = load_reference(split_dir / "cloud")[0]
    return feeds["cut_0"], load_reference(split_dir / "cloud")[0][1]["image_embeds"]


def test_health_and_metadata(server):
    assert _request(server, "GET", "/v2/health/live", token=None)[0] == 200
    assert _request(server, "GET", "/v2/health/ready", token=None)[0] == 200
    status, data = _request(server, "GET", "/v2/models/vision_cloud")
    meta = json.loads(data)
    assert status == 200 and meta["inputs"] == [{"name": "cut_0", "datatype": "FP32", "shape": [-1, 17, 32]}]
    assert _request(server, "GET", "/v2/models/vision_cloud/ready")[0] == 200


def test_token_is_enforced(server):
    assert _request(server, "GET", "/v2/models/vision_cloud", token=None)[0] == 401
    assert _request(server, "GET", "/v2/models/vision_cloud", token="wrong")[0] == 401
    assert _request(server, "POST", "/v2/models/vision_cloud/infer", body=b"{}", token="wrong")[0] == 401
    with pytest.raises(Exception, match="401"):
        V2Client(server.url).infer("vision_cloud", {"cut_0": np.zeros((1, 17, 32), np.float32)})


def test_token_from_environment(split_dir, monkeypatch):
    monkeypatch.setenv("MMDEPLOY_SERVE_TOKEN", "from-env")
    srv = make_server(split_dir, port=0)
    start_in_thread(srv)
    try:
        assert _request(srv, "GET", "/v2/models/vision_cloud", token=None)[0] == 401
        assert _request(srv, "GET", "/v2/models/vision_cloud", token="from-env")[0] == 200
    finally:
        srv.shutdown()
        srv.server_close()


def test_json_and_binary_inference(server, split_dir):
    cut, want = _cut(split_dir)
    body = json.dumps({"inputs": [{"name": "cut_0", "datatype": "FP32", "shape": list(cut.shape),
                                   "data": cut.reshape(-1).tolist()}]})
    status, data = _request(server, "POST", "/v2/models/vision_cloud/infer", body=body)
    out = json.loads(data)["outputs"][0]
    assert status == 200 and out["name"] == "image_embeds" and out["shape"] == list(want.shape)
    assert np.abs(np.asarray(out["data"], np.float32).reshape(want.shape) - want).max() < 1e-5
    got = V2Client(server.url, token=TOKEN).infer("vision_cloud", {"cut_0": cut})
    assert np.abs(got["image_embeds"] - want).max() < 1e-5


def _infer(srv, inputs, extra=None):
    body = json.dumps({"inputs": inputs, **(extra or {})})
    return _request(srv, "POST", "/v2/models/vision_cloud/infer", body=body)


GOOD = {"name": "cut_0", "datatype": "FP32", "shape": [1, 17, 32], "data": [0.5] * (17 * 32)}


@pytest.mark.parametrize("inputs,extra,status,message", [
    ([{**GOOD, "name": "nope"}], None, 400, "unknown input 'nope'"),
    ([GOOD, {**GOOD, "name": "other"}], None, 400, "unknown input"),
    ([{**GOOD, "datatype": "INT64", "data": [1] * (17 * 32)}], None, 400, "datatype int64 given, float32 expected"),
    ([{**GOOD, "shape": [1, 17, 31], "data": [0.5] * (17 * 31)}], None, 400, r"shape \[1, 17, 31\] given"),
    ([{**GOOD, "shape": [17, 32], "data": [0.5] * (17 * 32)}], None, 400, "shape"),
    ([{**GOOD, "data": [0.5] * 3}], None, 400, "3 values"),
    ([GOOD], {"outputs": [{"name": "nope"}]}, 400, "unknown output"),
    ([GOOD], {"outputs": "x"}, 400, "'outputs' must be"),
])
def test_malformed_requests_get_4xx(server, inputs, extra, status, message):
    got, data = _infer(server, inputs, extra)
    assert got == status, data
    assert message in json.loads(data)["error"] or __import__("re").search(message, json.loads(data)["error"])


def test_protocol_errors_and_limits(server, split_dir):
    assert _request(server, "POST", "/v2/models/vision_cloud/infer", body=b"{bad")[0] == 400
    assert _request(server, "POST", "/v2/models/other/infer", body=b"{}")[0] == 404
    assert _request(server, "GET", "/v2/nothing")[0] == 404
    assert _request(server, "GET", "/v2/models/vision_cloud/infer")[0] == 405
    status, data = _request(server, "POST", "/v2/models/vision_cloud/infer", body=b"x" * ((1 << 20) + 1))
    assert status == 413 and "exceeds the limit" in json.loads(data)["error"]
    # no Content-Length: 411, over a raw socket since http.client always sends one
    with socket.create_connection(server.server_address[:2], timeout=10) as s:
        s.sendall(b"POST /v2/models/vision_cloud/infer HTTP/1.1\r\nHost: x\r\n"
                  b"Authorization: Bearer " + TOKEN.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert b" 411 " in s.recv(4096).split(b"\r\n")[0]
    # still healthy, and nothing answered 500
    cut, want = _cut(split_dir)
    assert np.abs(V2Client(server.url, token=TOKEN).infer("vision_cloud", {"cut_0": cut})["image_embeds"]
                  - want).max() < 1e-5
    assert not any(code >= 500 for code in server.stats)


def test_unusable_port_is_an_input_error(split_dir, server):
    with pytest.raises(InputError, match="cannot listen"):
        make_server(split_dir, port=server.server_address[1])
    with pytest.raises(InputError, match="out of range"):
        make_server(split_dir, port=70000)
    with pytest.raises(InputError, match="does not exist"):
        make_server(split_dir.parent / "missing", port=0)


def test_versioned_paths(server):
    assert _request(server, "GET", "/v2/models/vision_cloud/versions/1")[0] == 200
    assert _infer_path(server, "/v2/models/vision_cloud/versions/1/infer")[0] == 200
    assert _infer_path(server, "/v2/models/vision_cloud/versions/2/infer")[0] == 404


def _infer_path(srv, path):
    return _request(srv, "POST", path, body=json.dumps({"inputs": [GOOD]}))
