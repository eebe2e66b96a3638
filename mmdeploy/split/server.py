"""Serving the cloud half over the KServe v2 / Open Inference Protocol (standard library only).

Endpoints: ``GET /v2/health/live``, ``GET /v2/health/ready``, ``GET /v2``,
``GET /v2/models/{name}``, ``GET /v2/models/{name}/ready``, ``POST /v2/models/{name}/infer``
(also under ``/v2/models/{name}/versions/1/``).
The server binds 127.0.0.1 unless told otherwise.  With a token every endpoint except the health
checks needs ``Authorization: Bearer <token>``.  Every malformed request gets a 4xx with
``{"error": "..."}``; a request larger than ``max_request_bytes`` gets 413 before its body is read.
Concurrent requests run in threads (ONNX Runtime sessions are thread-safe); at most
``max_concurrency`` run the model at once, the rest wait.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.errors import InputError
from mmdeploy.split.protocol import ProtocolError, decode_request, encode_response

TOKEN_ENV = "MMDEPLOY_SERVE_TOKEN"
DEFAULT_MAX_REQUEST = 64 << 20


class ServedModel:
    """What ``serve`` serves: a runner plus its v2 signature for validation.

    Either the cloud half of a split directory, or a whole ONNX component artifact (e.g. a BLIP
    bundle's ``text_decoder``: the image encoder runs on the device, the decoder in the cloud).
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        from mmdeploy.artifact import read_manifest
        from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner
        from mmdeploy.split.build import read_split

        path = Path(path)
        top = read_manifest(path) if (path / "manifest.json").is_file() else None
        if top is not None and top.kind == "component" and top.format == "onnx":
            self.name, model_dir, served = top.name, path, top
        elif top is not None and top.kind == "model" and top.format != "split":
            from mmdeploy.errors import InputError

            names = ", ".join(a.path for a in top.artifacts if a.format == "onnx")
            raise InputError(f"{path} is a model bundle, not one model to serve",
                             f"serve a split directory or one ONNX component of it ({names})")
        else:
            manifest = read_split(path)  # the error for anything else names split directories
            self.name, model_dir = manifest.metadata["model_name"], path / "cloud"
            served = read_manifest(model_dir)
        self.inputs = {s.name: s for s in served.inputs}
        self.outputs = {s.name: s for s in served.outputs}
        self.runner = OnnxRuntimeRunner(model_dir / served.metadata.get("model_file", "model.onnx"),
                                        threads=threads, name="cloud")

    def metadata(self) -> dict[str, Any]:
        from mmdeploy.split.triton import DTYPES

        def entry(s):
            return {"name": s.name, "datatype": DTYPES[s.dtype][1],
                    "shape": [d if isinstance(d, int) and d > 0 else -1 for d in s.shape]}

        return {"name": self.name, "versions": ["1"], "platform": "onnxruntime_onnx",
                "inputs": [entry(s) for s in self.inputs.values()],
                "outputs": [entry(s) for s in self.outputs.values()]}

    def validate(self, inputs: dict[str, np.ndarray]) -> None:
        unknown = sorted(set(inputs) - set(self.inputs))
        if unknown:
            raise ProtocolError(f"unknown input {unknown[0]!r}; {self.name} takes "
                                + ", ".join(self.inputs))
        missing = [n for n in self.inputs if n not in inputs]
        if missing:
            raise ProtocolError(f"missing input {missing[0]!r}")
        for name, spec in self.inputs.items():
            value = inputs[name]
            if value.dtype != np.dtype(spec.dtype):
                raise ProtocolError(f"{name}: datatype {value.dtype.name} given, {spec.dtype} expected")
            if len(value.shape) != len(spec.shape) or any(
                    isinstance(d, int) and d > 0 and d != got for d, got in zip(spec.shape, value.shape)):
                want = [d if isinstance(d, int) and d > 0 else -1 for d in spec.shape]
                raise ProtocolError(f"{name}: shape {list(value.shape)} given, {want} expected")

    def infer(self, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> dict[str, np.ndarray]:
        self.validate(inputs)
        if outputs:
            unknown = [n for n in outputs if n not in self.outputs]
            if unknown:
                raise ProtocolError(f"unknown output {unknown[0]!r}; {self.name} gives " + ", ".join(self.outputs))
        try:
            result = self.runner.run(inputs)
        except Exception as exc:  # noqa: BLE001 - e.g. inconsistent dynamic dims between inputs
            raise ProtocolError(f"inference failed on these inputs: {str(exc).splitlines()[0][:300]}") from None
        return {n: result[n] for n in (outputs or self.outputs)}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: one connection per client thread
    server_version = "mmdeploy-v2"
    timeout = 60  # a stalled client frees its thread after this many seconds

    def setup(self):
        super().setup()
        # headers and body leave in one write, and no Nagle delay waiting for the peer's ACK
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, fmt, *args):  # quiet by default; counters are in server.stats
        if self.server.verbose:
            super().log_message(fmt, *args)

    # --------------------------------------------------------------- plumbing
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {"Content-Type": "application/json"}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")
        if self.command != "HEAD":
            self._headers_buffer.append(body)
        self.flush_headers()
        self.server.count(status)

    def _json(self, status: int, data: dict) -> None:
        self._send(status, json.dumps(data).encode())

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def _authorized(self) -> bool:
        token = self.server.token
        if not token or self.path.rstrip("/") in ("/v2/health/live", "/v2/health/ready"):
            return True
        given = self.headers.get("Authorization", "")
        if given.startswith("Bearer ") and hmac.compare_digest(given[7:].strip().encode(), token.encode()):
            return True
        self._send(401, json.dumps({"error": "missing or wrong bearer token"}).encode(),
                   {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"})
        return False

    def _body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked" or length is None:
            self.close_connection = True
            self._error(411, "a Content-Length header is required")
            return None
        try:
            n = int(length)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            self._error(400, f"bad Content-Length {length!r}")
            return None
        if n > self.server.max_request_bytes:
            # Discard a moderately oversized body before answering, so the client (still sending)
            # reads the 413 instead of a broken pipe; beyond that, answer and drop the connection.
            if n <= 16 * self.server.max_request_bytes:
                remaining = n
                while remaining > 0 and (chunk := self.rfile.read(min(remaining, 1 << 16))):
                    remaining -= len(chunk)
            self.close_connection = True
            self._error(413, f"request of {n} bytes exceeds the limit of {self.server.max_request_bytes}")
            return None
        return self.rfile.read(n)

    def _route(self) -> tuple[str, str | None]:
        parts = [p for p in self.path.split("?", 1)[0].split("/") if p]
        if parts[:2] == ["v2", "models"] and len(parts) >= 3:
            rest = parts[3:]
            if rest[:1] == ["versions"] and len(rest) >= 2:  # /versions/{v}/...: one version, "1"
                if rest[1] != "1":
                    return "unknown-version", parts[2]
                rest = rest[2:]
            return "/".join(["models", "{name}"] + rest), parts[2]
        return "/".join(parts), None

    # --------------------------------------------------------------- methods
    def do_GET(self):  # noqa: N802 - http.server naming
        try:
            self._get()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def do_POST(self):  # noqa: N802
        try:
            self._post()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # noqa: BLE001 - never crash a handler thread silently
            self.close_connection = True
            self._error(500, f"internal error: {exc.__class__.__name__}")

    def _model_or_404(self, name: str | None):
        model = self.server.model
        if name != model.name:
            self._error(404, f"unknown model {name!r}; this server serves {model.name!r}")
            return None
        return model

    def _get(self):
        if not self._authorized():
            return
        route, name = self._route()
        if route in ("v2/health/live", "v2/health/ready"):
            self._send(200, b"", {"Content-Type": "text/plain"})
        elif route == "v2":
            self._json(200, {"name": "mmdeploy", "version": "1", "extensions": ["binary_tensor_data"]})
        elif route == "models/{name}":
            if model := self._model_or_404(name):
                self._json(200, model.metadata())
        elif route == "models/{name}/ready":
            if self._model_or_404(name):
                self._send(200, b"", {"Content-Type": "text/plain"})
        elif route == "models/{name}/infer":
            self._error(405, "use POST for infer")
        else:
            self._error(404, f"no endpoint {self.path}")

    def _post(self):
        if not self._authorized():
            self._drain()
            return
        route, name = self._route()
        if route != "models/{name}/infer":
            self._drain()
            self._error(404 if route not in ("v2/health/live", "v2/health/ready", "v2", "models/{name}")
                        else 405, f"no POST endpoint {self.path}")
            return
        body = self._body()
        if body is None:
            return
        model = self._model_or_404(name)
        if model is None:
            return
        try:
            inputs, options = decode_request(body, self.headers)
            with self.server.slots:
                outputs = model.infer(inputs, options["outputs"])
        except ProtocolError as exc:
            self._error(exc.status, str(exc))
            return
        payload, headers = encode_response(model.name, outputs, options["binary"], options["id"])
        self._send(200, payload, headers)

    def _drain(self):
        """Read a small body we will not use so the connection stays usable."""
        try:
            n = int(self.headers.get("Content-Length", 0))
        except ValueError:
            n = -1
        if 0 <= n <= self.server.max_request_bytes:
            self.rfile.read(n)
        else:
            self.close_connection = True


class V2Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def __init__(self, model: ServedModel, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                 max_request_bytes: int = DEFAULT_MAX_REQUEST, max_concurrency: int = 4, verbose: bool = False):
        self.model = model
        self.token = token or None
        self.max_request_bytes = int(max_request_bytes)
        self.slots = threading.BoundedSemaphore(max(1, int(max_concurrency)))
        self.verbose = verbose
        self.stats: dict[int, int] = {}
        self._stats_lock = threading.Lock()
        self.started = time.time()
        super().__init__((host, port), _Handler)

    def count(self, status: int) -> None:
        with self._stats_lock:
            self.stats[status] = self.stats.get(status, 0) + 1

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def make_server(split_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                max_request_bytes: int = DEFAULT_MAX_REQUEST, max_concurrency: int = 4,
                threads: int | None = None, verbose: bool = False) -> V2Server:
    """A bound (not yet serving) server for ``split_dir``'s cloud half (or one ONNX component
    artifact, served under its component name); InputError on a bad port."""
    model = ServedModel(split_dir, threads=threads)
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    if not 0 <= int(port) <= 65535:
        raise InputError(f"port {port} is out of range", "use a port between 1 and 65535 (0 picks a free one)")
    try:
        return V2Server(model, host, int(port), token, max_request_bytes, max_concurrency, verbose)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                         "pick another --port (or --port 0 for a free one)") from None


def start_in_thread(server: V2Server) -> threading.Thread:
    """Serve in a daemon thread (tests, notebooks); stop with ``server.shutdown()``."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    return thread
