"""A small KServe v2 / Open Inference Protocol client (works against `mmdeploy serve` and Triton).

One keep-alive HTTP connection per thread (``http.client``); tensors go in the binary-data
extension by default.  Transport failures raise :class:`RemoteError` (``status`` None), HTTP
errors raise it with the status and the server's message.
"""

from __future__ import annotations

import http.client
import json
import threading
import uuid
from urllib.parse import urlsplit

import numpy as np

from mmdeploy.errors import MMDeployError
from mmdeploy.split.protocol import ProtocolError, decode_response, encode_request


class RemoteError(MMDeployError):
    """The cloud could not answer: unreachable, timed out, or an HTTP error status."""

    exit_code = 1

    def __init__(self, message: str, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status


class V2Client:
    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MMDeployError(f"bad server URL {url!r}", "use http://HOST:PORT")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.token = token
        self.timeout = float(timeout)
        self._local = threading.local()

    # --------------------------------------------------------------- transport
    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = cls(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes, http.client.HTTPMessage]:
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        for attempt in (0, 1):  # a kept-alive connection the server closed: reconnect once
            conn = self._connection()
            try:
                conn.request(method, self.prefix + path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                if response.getheader("Connection", "").lower() == "close":
                    self.close()
                return response.status, data, response.headers
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.close()
                if attempt == 1:  # inference is idempotent: one reconnect is safe
                    raise RemoteError(f"{self.host}:{self.port} closed the connection ({exc.__class__.__name__})") from None
            except TimeoutError:
                self.close()
                raise RemoteError(f"{self.host}:{self.port} did not answer within {self.timeout:g} s") from None
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                raise RemoteError(f"cannot reach {self.host}:{self.port} ({exc.__class__.__name__}: {exc})") from None
        raise AssertionError("unreachable")

    @staticmethod
    def _check(status: int, data: bytes) -> None:
        if status >= 400:
            try:
                message = json.loads(data).get("error", "")
            except (ValueError, AttributeError):
                message = data[:200].decode("utf-8", "replace")
            raise RemoteError(f"server answered {status}: {message}", status=status)

    # --------------------------------------------------------------- protocol
    def live(self) -> bool:
        try:
            return self.request("GET", "/v2/health/live")[0] == 200
        except RemoteError:
            return False

    def ready(self, model: str | None = None) -> bool:
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        try:
            return self.request("GET", path)[0] == 200
        except RemoteError:
            return False

    def metadata(self, model: str) -> dict:
        status, data, _ = self.request("GET", f"/v2/models/{model}")
        self._check(status, data)
        return json.loads(data)

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
              binary: bool = True) -> dict[str, np.ndarray]:
        body, headers = encode_request(inputs, outputs, binary=binary, request_id=uuid.uuid4().hex[:12])
        status, data, response_headers = self.request("POST", f"/v2/models/{model}/infer", body, headers)
        self._check(status, data)
        try:
            return decode_response(data, response_headers)
        except ProtocolError as exc:
            raise RemoteError(f"malformed response from the server: {exc}") from None


class RemoteRunner:
    """A Runner whose model runs on a KServe v2 server (``mmdeploy serve`` or Triton).

    ``outputs`` limits what the server sends back (e.g. only a decoder's ``logits``).
    """

    def __init__(self, url: str, model: str, input_names: list[str], output_names: list[str],
                 token: str | None = None, timeout: float = 30.0, binary: bool = True):
        self.client = V2Client(url, token=token, timeout=timeout)
        self.model = model
        self.name = f"remote:{model}"
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.binary = binary

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {n: np.ascontiguousarray(feeds[n]) for n in self.input_names if n in feeds}
        return self.client.infer(self.model, inputs, self.output_names, binary=self.binary)
