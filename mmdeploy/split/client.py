"""The edge side's connection to a cloud half, over Triton's client library (``tritonclient``).

Talks to ``mmdeploy serve``, to a Triton Inference Server given the generated repository, or to a
KServe InferenceService: the Open Inference Protocol over HTTP (binary-data extension, the
default) or gRPC (``grpc=True``).  One client per thread (tritonclient's HTTP client is built on
gevent and is not shared across threads).

Failures raise :class:`RemoteError`: ``status`` None for transport failures (unreachable, timed
out, reset), the HTTP status for answers (gRPC codes are mapped to their HTTP equivalents).  A
401/403 raises :class:`AuthError`: a misconfiguration to report, not an outage to fall back from.
"""

from __future__ import annotations

import threading
import uuid
from urllib.parse import urlsplit

import numpy as np

from mmdeploy.errors import MMDeployError

# gRPC status code name -> the HTTP status it stands for (KServe / Triton map them this way)
_GRPC_TO_HTTP = {"INVALID_ARGUMENT": 400, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404,
                 "RESOURCE_EXHAUSTED": 413, "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503,
                 "DEADLINE_EXCEEDED": None, "CANCELLED": None, "UNKNOWN": 500, "FAILED_PRECONDITION": 400,
                 "OUT_OF_RANGE": 400}


class RemoteError(MMDeployError):
    """The cloud could not answer: unreachable, timed out, or an error status."""

    exit_code = 1

    def __init__(self, message: str, status: int | None = None, hint: str | None = None):
        super().__init__(message, hint)
        self.status = status


class AuthError(RemoteError):
    """The server refused our credentials (401/403): fix the token, falling back would hide it."""

    exit_code = 2


def _tritonclient(grpc: bool):
    try:
        if grpc:
            import tritonclient.grpc as client
        else:
            import tritonclient.http as client
        from tritonclient.utils import InferenceServerException
    except ImportError:
        from mmdeploy.errors import UnsupportedError

        raise UnsupportedError("the edge client needs tritonclient", "pip install 'mmdeploy[serve]'") from None
    return client, InferenceServerException


class V2Client:
    """A thin wrapper over ``tritonclient.http`` / ``tritonclient.grpc``: numpy in, numpy out,
    mmdeploy's errors out."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 5.0, grpc: bool = False):
        raw = url if "://" in url else (f"grpc://{url}" if grpc else f"http://{url}")
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https", "grpc", "grpcs") or not parts.hostname:
            raise MMDeployError(f"bad server URL {url!r}", "use http://HOST:PORT (or HOST:PORT with --grpc)")
        self.grpc = grpc or parts.scheme.startswith("grpc")
        self.ssl = parts.scheme in ("https", "grpcs")
        port = parts.port or (8001 if self.grpc else (443 if self.ssl else 80))
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        self.address = f"{host}:{port}"
        if parts.path.strip("/") and not self.grpc:
            raise MMDeployError(f"server URL {url!r} has a path", "use http://HOST:PORT")
        self.token = token
        self.timeout = float(timeout)
        self._local = threading.local()

    @property
    def _module(self):  # imported on first use: constructing a client stays cheap
        return _tritonclient(self.grpc)[0]

    @property
    def _error(self):
        return _tritonclient(self.grpc)[1]

    @property
    def headers(self) -> dict[str, str] | None:
        return {"authorization": f"Bearer {self.token}"} if self.token else None

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            if self.grpc:
                client = self._module.InferenceServerClient(self.address, ssl=self.ssl)
            else:
                client = self._module.InferenceServerClient(self.address, ssl=self.ssl,
                                                            connection_timeout=self.timeout,
                                                            network_timeout=self.timeout)
            self._local.client = client
        return client

    def close(self) -> None:
        client = getattr(self._local, "client", None)
        if client is not None:
            try:
                client.close()
            finally:
                self._local.client = None

    def _convert(self, exc: Exception) -> RemoteError:
        """tritonclient's exception (or a transport error) as a RemoteError."""
        if isinstance(exc, self._error):
            status_text = str(exc.status() or "")
            message = (exc.message() or str(exc)).splitlines()[0][:300] if (exc.message() or str(exc)) else ""
            if status_text.startswith("StatusCode."):
                code = status_text.split(".", 1)[1]
                status = _GRPC_TO_HTTP.get(code, 500)
                if status is None:
                    return RemoteError(f"{self.address} did not answer within {self.timeout:g} s ({code})")
                if code == "UNAVAILABLE":
                    self.close()
                    return RemoteError(f"cannot reach {self.address} ({message})")
            else:
                try:
                    status = int(status_text)
                except ValueError:
                    status = None
            if status is None:
                self.close()
                return RemoteError(f"cannot reach {self.address} ({message})")
        else:
            self.close()
            name = exc.__class__.__name__
            if "timeout" in name.lower() or isinstance(exc, TimeoutError):
                return RemoteError(f"{self.address} did not answer within {self.timeout:g} s")
            return RemoteError(f"cannot reach {self.address} ({name}: {str(exc)[:200]})")
        if status in (401, 403):
            return AuthError(f"server answered {status}: {message}", status=status,
                             hint="check --token / MMDEPLOY_SERVE_TOKEN against the server's")
        return RemoteError(f"server answered {status}: {message}", status=status)

    def _call(self, name: str, *args, **kwargs):
        try:
            return getattr(self._client(), name)(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - every tritonclient/transport failure becomes RemoteError
            raise self._convert(exc) from None

    # --------------------------------------------------------------- protocol
    def live(self) -> bool:
        try:
            return bool(self._call("is_server_live"))
        except RemoteError:
            return False

    def ready(self, model: str | None = None) -> bool:
        try:
            if model:
                return bool(self._call("is_model_ready", model, headers=self.headers))
            return bool(self._call("is_server_ready"))
        except RemoteError:
            return False

    def metadata(self, model: str) -> dict:
        kwargs = {"as_json": True} if self.grpc else {}
        return self._call("get_model_metadata", model, headers=self.headers, **kwargs)

    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str] | None = None,
              binary: bool = True, compression: str | None = None) -> dict[str, np.ndarray]:
        from tritonclient.utils import np_to_triton_dtype

        m = self._module
        tensors = []
        for name, value in inputs.items():
            value = np.ascontiguousarray(value)
            tensor = m.InferInput(name, list(value.shape), np_to_triton_dtype(value.dtype))
            if self.grpc:
                tensor.set_data_from_numpy(value)
            else:
                tensor.set_data_from_numpy(value, binary_data=binary)
            tensors.append(tensor)
        requested = None
        if outputs:
            requested = [m.InferRequestedOutput(n) if self.grpc else m.InferRequestedOutput(n, binary_data=binary)
                         for n in outputs]
        kwargs = {"request_id": uuid.uuid4().hex[:12], "headers": self.headers}
        if self.grpc:
            kwargs["client_timeout"] = self.timeout
            if compression:
                kwargs["compression_algorithm"] = compression
        elif compression:
            kwargs["request_compression_algorithm"] = compression
        result = self._call("infer", model, tensors, outputs=requested, **kwargs)
        response = result.get_response(as_json=True) if self.grpc else result.get_response()
        names = outputs or [o["name"] for o in response.get("outputs", [])]
        try:
            return {n: result.as_numpy(n) for n in names}
        except Exception as exc:  # noqa: BLE001 - a response that does not decode
            raise RemoteError(f"malformed response from the server: {exc}") from None


class RemoteRunner:
    """A Runner whose model runs on an Open Inference Protocol server (``mmdeploy serve``, Triton,
    KServe). ``outputs`` limits what the server sends back (e.g. only a decoder's ``logits``)."""

    def __init__(self, url: str, model: str, input_names: list[str], output_names: list[str],
                 token: str | None = None, timeout: float = 30.0, binary: bool = True, grpc: bool = False):
        self.client = V2Client(url, token=token, timeout=timeout, grpc=grpc)
        self.model = model
        self.name = f"remote:{model}"
        self.input_names = list(input_names)
        self.output_names = list(output_names)
        self.binary = binary

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = {n: np.ascontiguousarray(feeds[n]) for n in self.input_names if n in feeds}
        return self.client.infer(self.model, inputs, self.output_names, binary=self.binary)
