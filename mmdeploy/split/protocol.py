"""KServe v2 / Open Inference Protocol messages, JSON and binary-data extension.

Binary extension (Triton's): the body is a JSON header followed by raw tensor bytes; the
``Inference-Header-Content-Length`` HTTP header gives the JSON length, each binary input carries
``"parameters": {"binary_data_size": N}`` and the sections follow in the order of the inputs.
Outputs are returned in binary when the request asks for it (``"binary_data_output": true`` in
the request parameters, or ``"binary_data": true`` on one requested output).
Data are little-endian, row-major.  BYTES tensors are not supported (not needed for embeddings).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from mmdeploy.split.triton import DTYPES, V2_TO_NUMPY

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


class ProtocolError(ValueError):
    """A malformed message; ``status`` is the HTTP status a server answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def v2_datatype(array: np.ndarray) -> str:
    name = np.dtype(array.dtype).name
    if name not in DTYPES:
        raise ProtocolError(f"dtype {name} has no KServe v2 datatype")
    return DTYPES[name][1]


def _to_bytes(array: np.ndarray) -> bytes:
    return np.ascontiguousarray(array, dtype=np.dtype(array.dtype).newbyteorder("<")).tobytes()


def _pack(header: dict, binary: list[bytes]):
    body = json.dumps(header, separators=(",", ":")).encode()
    headers = {"Content-Type": JSON_TYPE}
    if binary:
        headers = {"Content-Type": BINARY_TYPE, HEADER_LENGTH: str(len(body))}
        body = body + b"".join(binary)
    return body, headers


def encode_tensors(arrays: dict[str, np.ndarray], binary: bool) -> tuple[list[dict], list[bytes]]:
    entries, sections = [], []
    for name, value in arrays.items():
        value = np.asarray(value)
        entry: dict[str, Any] = {"name": name, "datatype": v2_datatype(value), "shape": list(value.shape)}
        if binary:
            raw = _to_bytes(value)
            entry["parameters"] = {"binary_data_size": len(raw)}
            sections.append(raw)
        else:
            entry["data"] = value.reshape(-1).tolist()
        entries.append(entry)
    return entries, sections


def encode_request(inputs: dict[str, np.ndarray], outputs: list[str] | None = None, binary: bool = True,
                   request_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    entries, sections = encode_tensors(inputs, binary)
    header: dict[str, Any] = {"inputs": entries}
    if request_id:
        header["id"] = request_id
    if binary:
        header["parameters"] = {"binary_data_output": True}
    if outputs:
        header["outputs"] = [{"name": n, "parameters": {"binary_data": binary}} for n in outputs]
    return _pack(header, sections)


def encode_response(model: str, outputs: dict[str, np.ndarray], binary: set[str] | bool,
                    request_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    entries, sections = [], []
    for name, value in outputs.items():
        want_binary = binary if isinstance(binary, bool) else name in binary
        e, s = encode_tensors({name: value}, want_binary)
        entries += e
        sections += s
    header: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": entries}
    if request_id is not None:
        header["id"] = request_id
    return _pack(header, sections)


def _split_body(body: bytes, headers) -> tuple[dict, bytes]:
    length = headers.get(HEADER_LENGTH)
    if length is None:
        json_part, rest = body, b""
    else:
        try:
            n = int(length)
        except ValueError:
            raise ProtocolError(f"{HEADER_LENGTH} is not an integer: {length!r}") from None
        if not 0 <= n <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} {n} exceeds the body length {len(body)}")
        json_part, rest = body[:n], body[n:]
    try:
        header = json.loads(json_part.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"the request is not valid JSON ({exc.__class__.__name__}: {exc})") from None
    if not isinstance(header, dict):
        raise ProtocolError("the request must be a JSON object")
    return header, rest


def decode_tensors(entries: Any, rest: bytes, what: str = "inputs") -> dict[str, np.ndarray]:
    """Tensors of a request or response (JSON ``data`` or binary sections)."""
    if not isinstance(entries, list) or not entries:
        raise ProtocolError(f"'{what}' must be a non-empty list of tensors")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ProtocolError(f"every entry of '{what}' needs a 'name'")
        name = entry["name"]
        datatype, shape = entry.get("datatype"), entry.get("shape")
        if datatype not in V2_TO_NUMPY:
            raise ProtocolError(f"{name}: unsupported datatype {datatype!r} "
                                f"(supported: {', '.join(sorted(V2_TO_NUMPY))})")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                   for d in shape)):
            raise ProtocolError(f"{name}: 'shape' must be a list of non-negative integers")
        dtype = np.dtype(V2_TO_NUMPY[datatype]).newbyteorder("<")
        count = int(np.prod(shape)) if shape else 1
        params = entry.get("parameters") or {}
        if not isinstance(params, dict):
            raise ProtocolError(f"{name}: 'parameters' must be an object")
        if "binary_data_size" in params:
            size = params["binary_data_size"]
            if not isinstance(size, int) or size < 0 or offset + size > len(rest):
                raise ProtocolError(f"{name}: binary_data_size {size!r} does not match the binary data")
            if size != count * dtype.itemsize:
                raise ProtocolError(f"{name}: {size} bytes of binary data for shape {shape} {datatype} "
                                    f"(expected {count * dtype.itemsize})")
            value = np.frombuffer(rest, dtype=dtype, count=count, offset=offset).reshape(shape)
            offset += size
        else:
            data = entry.get("data")
            if not isinstance(data, list):
                raise ProtocolError(f"{name}: needs 'data' (a flat list) or binary data")
            try:
                value = np.asarray(data, dtype=dtype)
            except (TypeError, ValueError, OverflowError):
                raise ProtocolError(f"{name}: 'data' does not hold {datatype} values") from None
            if value.size != count:
                raise ProtocolError(f"{name}: {value.size} values for shape {shape} (expected {count})")
            value = value.reshape(shape)
        if name in arrays:
            raise ProtocolError(f"tensor {name!r} given twice")
        arrays[name] = value.astype(value.dtype.newbyteorder("="), copy=False)
    if offset != len(rest):
        raise ProtocolError(f"{len(rest) - offset} bytes of binary data belong to no tensor")
    return arrays


def decode_request(body: bytes, headers) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """(inputs, options) where options = {"id", "outputs": [names] | None, "binary": set|bool}."""
    header, rest = _split_body(body, headers)
    inputs = decode_tensors(header.get("inputs"), rest)
    params = header.get("parameters") or {}
    if not isinstance(params, dict):
        raise ProtocolError("'parameters' must be an object")
    binary: set[str] | bool = bool(params.get("binary_data_output", False))
    requested = header.get("outputs")
    names = None
    if requested is not None:
        if not isinstance(requested, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str)
                                                      for o in requested):
            raise ProtocolError("'outputs' must be a list of {\"name\": ...} objects")
        names = [o["name"] for o in requested]
        flagged = {o["name"] for o in requested if (o.get("parameters") or {}).get("binary_data")}
        binary = flagged | ({n for n in names} if binary is True else set())
    request_id = header.get("id")
    return inputs, {"id": request_id if isinstance(request_id, str) else None, "outputs": names, "binary": binary}


def decode_response(body: bytes, headers) -> dict[str, np.ndarray]:
    header, rest = _split_body(body, headers)
    return decode_tensors(header.get("outputs"), rest, what="outputs")
