"""KServe v2 messages: JSON and the binary-data extension, and malformed ones."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmdeploy.split import protocol
from mmdeploy.split.protocol import ProtocolError


@pytest.mark.parametrize("binary", [True, False])
def test_request_round_trip(binary):
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4) / 7
    ids = np.array([[1, 2, 3]], dtype=np.int64)
    q = np.array(3, dtype=np.uint8)
    body, headers = protocol.encode_request({"x": x, "ids": ids, "q": q}, ["y"], binary=binary)
    assert (protocol.HEADER_LENGTH in headers) == binary
    inputs, options = protocol.decode_request(body, headers)
    assert options["outputs"] == ["y"]
    assert options["binary"] == ({"y"} if binary else set())
    for name, value in {"x": x, "ids": ids, "q": q}.items():
        assert inputs[name].dtype == value.dtype and np.array_equal(inputs[name], value)


def test_response_round_trip_mixed():
    y, z = np.ones((1, 4), np.float16), np.array([True, False])
    body, headers = protocol.encode_response("m", {"y": y, "z": z}, {"y"}, "id1")
    header = json.loads(body[: int(headers[protocol.HEADER_LENGTH])])
    assert header["id"] == "id1" and "data" in header["outputs"][1]
    out = protocol.decode_response(body, headers)
    assert np.array_equal(out["y"], y) and np.array_equal(out["z"], z)


_BIN = b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]}'


@pytest.mark.parametrize("body,headers,message", [
    (b"{not json", {}, "not valid JSON"),
    (b"[1, 2]", {}, "JSON object"),
    (b"{}", {}, "non-empty list"),
    (b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}', {}, "unsupported datatype"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "data": [1]}]}', {}, "expected 2"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": [1]}]}', {}, "non-negative"),
    (b'{"inputs": [{"name": "x", "datatype": "INT64", "shape": [1], "data": ["a"]}]}', {}, "INT64 values"),
    (b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}', {}, "needs 'data'"),
    (_BIN + b"\x00\x00", {"Inference-Header-Content-Length": str(len(_BIN))}, "does not match"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": "999"}, "exceeds the body"),
    (b'{"inputs": []}', {"Inference-Header-Content-Length": "x"}, "not an integer"),
])
def test_malformed_requests(body, headers, message):
    with pytest.raises(ProtocolError, match=message) as info:
        protocol.decode_request(body, headers)
    assert 400 <= info.value.status < 500


def test_trailing_binary_bytes_are_rejected():
    body, headers = protocol.encode_request({"x": np.zeros(2, np.float32)}, binary=True)
    with pytest.raises(ProtocolError, match="belong to no tensor"):
        protocol.decode_request(body + b"\x00", headers)
