"""`mmdeploy serve` on KServe's model server: one ``kserve.Model`` per served artifact.

KServe (``kserve.ModelServer``'s REST and gRPC servers, its DataPlane and Open Inference Protocol
codecs) does the protocol work; this module adds only what a public endpoint needs and KServe
leaves to the deployment:

* binding ``host`` (127.0.0.1 by default; KServe itself always binds every interface);
* the bearer token on every call but the health checks, over REST (an ASGI middleware) and gRPC
  (a server interceptor);
* a request size limit and ``Content-Encoding: gzip|deflate`` (the middleware; gRPC has both
  natively: ``max_receive_message_length`` and its own compression);
* input validation against the artifact's signature (4xx with a message, never a 500);
* Triton's model-configuration and statistics extensions over REST (``tritonclient.http``'s
  ``get_model_config`` / ``get_inference_statistics``).  Not over gRPC: KServe's and Triton's
  generated protobuf modules both define package ``inference`` and cannot be imported into one
  process, so the server cannot use Triton's message types (and a process that runs the server
  cannot also hold a ``tritonclient.grpc`` client: test gRPC against a server process).

kserve is imported inside functions: ``mmdeploy --help`` stays fast and the ``serve`` extra
optional.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.errors import InputError, UnsupportedError

TOKEN_ENV = "MMDEPLOY_SERVE_TOKEN"
DEFAULT_MAX_REQUEST = 64 << 20
OPEN_PATHS = {"/", "/v2/health/live", "/v2/health/ready"}  # health checks only
OPEN_GRPC = {"ServerLive", "ServerReady"}


def _import_kserve():
    """kserve parses ``sys.argv`` at import (its own CLI flags): import it with an empty one."""
    if "kserve" in sys.modules:
        import kserve

        return kserve
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
        import kserve.model_server  # noqa: F401 - parses the (emptied) argv now
    except ImportError:
        raise UnsupportedError("serving needs the kserve package",
                               "pip install 'mmdeploy[serve]'") from None
    finally:
        sys.argv = argv
    return kserve


# ----------------------------------------------------------------------------- the served artifact
class ServedArtifact:
    """A runner plus its signature: a split directory's cloud half, or one ONNX component artifact
    (e.g. a BLIP bundle's ``text_decoder``: the image encoder runs on the device, the decoder here)."""

    def __init__(self, path: str | Path, threads: int | None = None):
        from mmdeploy.artifact import read_manifest
        from mmdeploy.split.build import read_split

        path = Path(path)
        top = read_manifest(path) if (path / "manifest.json").is_file() else None
        if top is not None and top.kind == "component" and top.format == "onnx":
            self.name, model_dir, served = top.name, path, top
        elif top is not None and top.kind == "model" and top.format != "split":
            names = ", ".join(a.path for a in top.artifacts if a.format == "onnx")
            raise InputError(f"{path} is a model bundle, not one model to serve",
                             f"serve a split directory or one ONNX component of it ({names})")
        else:
            manifest = read_split(path)  # the error for anything else names split directories
            self.name, model_dir = manifest.metadata["model_name"], path / "cloud"
            served = read_manifest(model_dir)
        self.path = path
        self.model_dir = model_dir
        self.model_file = model_dir / served.metadata.get("model_file", "model.onnx")
        self.inputs = {s.name: s for s in served.inputs}
        self.outputs = {s.name: s for s in served.outputs}
        self.threads = threads
        self.runner = None
        from mmdeploy.artifact import max_sequence
        from mmdeploy.backends.base import feed_limits

        origin = Path((served.parent or {}).get("path") or model_dir)  # a split's cloud half: the cut component
        self.limits = feed_limits(self.model_file, served.inputs, max_sequence(origin))

    def load(self):
        from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner

        self.runner = OnnxRuntimeRunner(self.model_file, threads=self.threads, name="cloud")

    def tensor_metadata(self, specs) -> list[dict]:
        from mmdeploy.split.triton import DTYPES

        return [{"name": s.name, "datatype": DTYPES[s.dtype][1],
                 "shape": [d if isinstance(d, int) and d > 0 else -1 for d in s.shape]} for s in specs.values()]

    def limits_of(self, name: str) -> dict:
        """The limits the shape cannot say, as metadata ``parameters``: ``max_shape`` (-1: any
        size) and the id range ``[min_value, max_value]`` of a token input."""
        spec, limit, out = self.inputs[name], self.limits.get(name, {}), {}
        if limit.get("max_dims"):
            out["max_shape"] = [limit["max_dims"].get(i, d if isinstance(d, int) and d > 0 else -1)
                                for i, d in enumerate(spec.shape)]
        if limit.get("vocab"):
            out.update(min_value=0, max_value=limit["vocab"] - 1)
        return out

    def metadata(self) -> dict:
        """The model metadata (Open Inference Protocol), with each input's real limits."""
        inputs = self.tensor_metadata(self.inputs)
        for entry in inputs:
            if self.limits_of(entry["name"]):
                entry["parameters"] = self.limits_of(entry["name"])
        return {"name": self.name, "versions": ["1"], "platform": "onnxruntime_onnx", "inputs": inputs,
                "outputs": self.tensor_metadata(self.outputs)}

    def config(self) -> dict:
        """The model configuration in Triton's JSON form (what ``get_model_config`` returns)."""
        from mmdeploy.split.triton import DTYPES

        def block(spec):
            dims = [d if isinstance(d, int) and d > 0 else -1 for d in spec.shape]
            return {"name": spec.name, "data_type": DTYPES[spec.dtype][0], "dims": dims or [1]}

        return {"name": self.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
                "max_batch_size": 0, "input": [block(s) for s in self.inputs.values()],
                "output": [block(s) for s in self.outputs.values()]}

    def check(self, inputs: dict[str, np.ndarray], outputs: list[str] | None) -> str | None:
        """None when the request fits the signature and its limits, else the one-line reason."""
        from mmdeploy.backends.base import check_feeds
        from mmdeploy.errors import InputError

        try:
            check_feeds(self.inputs.values(), inputs, self.limits)
        except InputError as exc:
            return exc.one_line()
        unknown = [n for n in (outputs or []) if n not in self.outputs]
        if unknown:
            return f"unknown output {unknown[0]!r}; {self.name} gives " + ", ".join(self.outputs)
        return None


class _Stats:
    """Per-model counters in Triton's statistics-extension shape (per worker process)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.success = [0, 0]  # count, ns
        self.fail = [0, 0]
        self.compute = [0, 0]
        self.last = 0

    def add(self, ok: bool, ns: int, compute_ns: int = 0):
        with self.lock:
            bucket = self.success if ok else self.fail
            bucket[0] += 1
            bucket[1] += ns
            if ok:
                self.compute[0] += 1
                self.compute[1] += compute_ns
                self.last = int(time.time() * 1000)

    def as_dict(self, name: str) -> dict:
        with self.lock:
            def duration(pair):
                return {"count": pair[0], "ns": pair[1]}

            return {"name": name, "version": "1", "last_inference": self.last,
                    "inference_count": self.success[0], "execution_count": self.success[0],
                    "inference_stats": {"success": duration(self.success), "fail": duration(self.fail),
                                        "queue": duration([0, 0]), "compute_input": duration([0, 0]),
                                        "compute_infer": duration(self.compute),
                                        "compute_output": duration([0, 0])}}


def _model_class():
    """The kserve.Model subclass (built lazily: kserve is an optional import)."""
    kserve = _import_kserve()
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferRequest, InferResponse

    class ArtifactModel(kserve.Model):
        def __init__(self, artifact: ServedArtifact, concurrency: int = 4):
            super().__init__(artifact.name)
            self.artifact = artifact
            self.stats = _Stats()
            self._slots: asyncio.Semaphore | None = None
            self._concurrency = max(1, int(concurrency))

        def load(self) -> bool:
            self.artifact.load()
            self.ready = True
            return True

        def get_input_types(self):
            return self.artifact.tensor_metadata(self.artifact.inputs)

        def get_output_types(self):
            return self.artifact.tensor_metadata(self.artifact.outputs)

        async def predict(self, payload, headers=None):
            start = time.perf_counter_ns()
            if not isinstance(payload, InferRequest):
                self.stats.add(False, time.perf_counter_ns() - start)
                raise InvalidInput("send an Open Inference Protocol (v2) request")
            try:
                arrays = {t.name: t.as_numpy() for t in payload.inputs}
            except (ValueError, TypeError) as exc:  # e.g. a truncated binary payload
                self.stats.add(False, time.perf_counter_ns() - start)
                raise InvalidInput(f"inputs do not match their shape/datatype: {str(exc).splitlines()[0][:200]}") \
                    from None
            wanted = [o.name for o in payload.request_outputs or []] or None
            problem = self.artifact.check(arrays, wanted)
            if problem:
                self.stats.add(False, time.perf_counter_ns() - start)
                raise InvalidInput(problem)
            if self._slots is None:
                self._slots = asyncio.Semaphore(self._concurrency)
            t0 = time.perf_counter_ns()
            try:
                async with self._slots:
                    result = await asyncio.get_running_loop().run_in_executor(None, self.artifact.runner.run, arrays)
            except Exception as exc:  # noqa: BLE001 - e.g. inconsistent dynamic dims between inputs
                self.stats.add(False, time.perf_counter_ns() - start)
                raise InvalidInput(f"inference failed on these inputs: {str(exc).splitlines()[0][:300]}") from None
            compute = time.perf_counter_ns() - t0
            outputs = []
            for name in wanted or list(self.artifact.outputs):
                out = kserve.InferOutput(name=name, shape=list(result[name].shape),
                                         datatype=_v2_datatype(result[name]))
                out.set_data_from_numpy(np.ascontiguousarray(result[name]), binary_data=payload.use_binary_outputs)
                outputs.append(out)
            self.stats.add(True, time.perf_counter_ns() - start, compute)
            return InferResponse(response_id=payload.id or "", model_name=self.name, infer_outputs=outputs,
                                 model_version="1", use_binary_outputs=payload.use_binary_outputs,
                                 requested_outputs=payload.request_outputs)

    return ArtifactModel


def _v2_datatype(array: np.ndarray) -> str:
    from mmdeploy.split.triton import DTYPES

    return DTYPES[np.dtype(array.dtype).name][1]


# ----------------------------------------------------------------------------- REST: token, limit, encoding
class Guard:
    """ASGI middleware in front of KServe's app: bearer token, body limit, gzip/deflate bodies."""

    def __init__(self, app, token: str | None, max_request_bytes: int):
        self.app = app
        self.token = token.encode() if token else None
        self.limit = int(max_request_bytes)

    @staticmethod
    async def _answer(send, status: int, message: str, extra: list | None = None):
        body = json.dumps({"error": message}).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())] + (extra or [])})
        await send({"type": "http.response.body", "body": body})

    def _authorized(self, headers: dict) -> bool:
        given = headers.get(b"authorization", b"")
        return given[:7].lower() == b"bearer " and hmac.compare_digest(given[7:].strip(), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        path = scope["path"].rstrip("/") or "/"
        if self.token and path not in OPEN_PATHS and not self._authorized(headers):
            return await self._answer(send, 401, "missing or wrong bearer token",
                                      [(b"www-authenticate", b"Bearer")])
        if scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        length = headers.get(b"content-length")
        if length is not None:
            try:
                n = int(length)
            except ValueError:
                return await self._answer(send, 400, f"bad Content-Length {length.decode(errors='replace')!r}")
            if n > self.limit:
                return await self._answer(send, 413, f"request of {n} bytes exceeds the limit of {self.limit}")
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                return await self._answer(send, 413, f"request exceeds the limit of {self.limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        encoding = headers.get(b"content-encoding", b"identity").strip().lower()
        if encoding not in (b"identity", b""):
            if encoding not in (b"gzip", b"deflate"):
                return await self._answer(send, 415, f"Content-Encoding {encoding.decode(errors='replace')!r} "
                                          "is not supported (gzip, deflate)")
            try:
                body = _inflate(body, encoding.decode(), self.limit)
            except ValueError as exc:
                return await self._answer(send, 413 if "limit" in str(exc) else 400, str(exc))
        scope = dict(scope)
        scope["headers"] = [(k, v) for k, v in scope["headers"]
                            if k not in (b"content-encoding", b"content-length")] + \
            [(b"content-length", str(len(body)).encode())]
        if b"inference-header-content-length" not in headers and (
                b"content-type" not in headers or body.lstrip()[:1] == b"{"):
            # a JSON body, whatever its Content-Type says: tritonclient sends none, curl -d sends
            # application/x-www-form-urlencoded; KServe would take either for binary data
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"].append((b"content-type", b"application/json"))
        sent = False

        async def replay():
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _inflate(body: bytes, encoding: str, limit: int) -> bytes:
    """Decompress a request body, never past ``limit`` bytes (a zip bomb stops at the limit)."""
    # gzip: a gzip header; deflate: zlib-wrapped (RFC 9110), raw deflate accepted too
    attempts = [16 + zlib.MAX_WBITS] if encoding == "gzip" else [zlib.MAX_WBITS, -zlib.MAX_WBITS]
    for wbits in attempts:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise ValueError(f"the {encoding} body inflates past the limit of {limit} bytes")
        if not inflater.eof:
            break
        return out
    raise ValueError(f"the body does not inflate as {encoding}")


# ----------------------------------------------------------------------------- the server
def _pick_port(host: str, port: int, what: str) -> int:
    """Check that ``port`` is usable now (0: a free one); InputError otherwise."""
    if not 0 <= int(port) <= 65535:
        raise InputError(f"{what} {port} is out of range", "use a port between 1 and 65535 (0 picks a free one)")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, int(port)))
        except OSError as exc:
            raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc})",
                             f"pick another {what} (or 0 for a free one)") from None
        return s.getsockname()[1]


class ModelServer:
    """KServe's REST and gRPC servers for a set of artifacts, bound to ``host``.

    ``serve_forever()`` blocks (the CLI); ``start_in_thread(server)`` serves from a daemon thread
    (tests, notebooks, the demo) and ``shutdown()`` stops it.
    """

    def __init__(self, paths, host: str = "127.0.0.1", port: int = 8000, grpc_port: int | None = 8001,
                 token: str | None = None, max_request_bytes: int = DEFAULT_MAX_REQUEST, concurrency: int = 4,
                 threads: int | None = None, workers: int = 1, verbose: bool = False):
        paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
        if not paths:
            raise InputError("nothing to serve", "pass a split directory or ONNX component artifact")
        artifacts = [ServedArtifact(p, threads=threads) for p in paths]
        names = [a.name for a in artifacts]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise InputError(f"two artifacts are both named {dup[0]!r}",
                             "serve them from separate servers, or re-split one with --name")
        if int(workers) < 1:
            raise InputError(f"--workers {workers} must be 1 or more", "pass --workers 1")
        self.artifacts = artifacts
        self.host = host
        self.token = token or None
        self.max_request_bytes = int(max_request_bytes)
        self.concurrency = concurrency
        self.workers = int(workers)
        self.verbose = verbose
        self.port = _pick_port(host, port, "--port")
        self.grpc_port = _pick_port(host, grpc_port, "--grpc-port") if grpc_port is not None else None
        if self.grpc_port is not None and self.grpc_port == self.port:
            raise InputError(f"--port and --grpc-port are both {self.port}", "pick two different ports")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._rest = None
        self._grpc = None
        self._stopping = None
        self.started = threading.Event()
        self.stopped = threading.Event()  # set when serve_forever has returned (ports closed)
        self.models = None

    # the old server's attributes, kept for callers
    @property
    def server_address(self):
        return (self.host, self.port)

    @property
    def model(self):
        return self.artifacts[0]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def grpc_url(self) -> str | None:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.grpc_port}" if self.grpc_port is not None else None

    def statistics(self) -> dict[str, dict]:
        """Per model: Triton's statistics record (this process's requests)."""
        return {m.name: m.stats.as_dict(m.name) for m in self.models or []}

    def _load(self):
        cls = _model_class()
        self.models = []
        for artifact in self.artifacts:
            model = cls(artifact, self.concurrency)
            model.load()
            self.models.append(model)

    def _app(self, dataplane, repository_extension):
        """A fresh FastAPI app per server (KServe's module-level one can be set up only once)."""
        from fastapi import FastAPI
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import ORJSONResponse
        from kserve.errors import ModelNotFound
        from kserve.protocol.rest.server import RESTServer

        app = FastAPI(title="mmdeploy serve", docs_url=None, redoc_url=None, openapi_url=None,
                      default_response_class=ORJSONResponse)
        by_name = {m.name: m for m in self.models}

        def find(name):
            if name not in by_name:
                raise ModelNotFound(name)
            return by_name[name]

        async def config(model_name: str):
            return find(model_name).artifact.config()

        async def metadata(model_name: str, model_version: str = ""):
            return find(model_name).artifact.metadata()

        async def stats(model_name: str = ""):
            chosen = [find(model_name)] if model_name else list(by_name.values())
            return {"model_stats": [m.stats.as_dict(m.name) for m in chosen]}

        for path, handler in [("/v2/models/{model_name}/config", config),
                              ("/v2/models/{model_name}/versions/{model_version}/config", config),
                              ("/v2/models/{model_name}/stats", stats),
                              ("/v2/models/{model_name}/versions/{model_version}/stats", stats),
                              ("/v2/models/stats", stats),
                              ("/v2/models/{model_name}", metadata),  # after /v2/models/stats
                              ("/v2/models/{model_name}/versions/{model_version}", metadata)]:
            app.add_api_route(path, handler, methods=["GET"])
        rest = RESTServer.__new__(RESTServer)  # only its app-building steps, on our app
        rest.dataplane, rest.model_repository_extension, rest.access_log_format = \
            dataplane, repository_extension, None
        rest._register_endpoints(app)
        rest._add_exception_handlers(app)

        async def invalid_body(_, exc):  # FastAPI's 422 with a JSON list: a one-line 400 instead
            first = (exc.errors() or [{}])[0]
            reason = first.get("ctx", {}).get("error") or first.get("msg") or "invalid request"
            return ORJSONResponse(status_code=400, content={"error": f"the request is not valid JSON: {reason}"})

        app.add_exception_handler(RequestValidationError, invalid_body)
        app.add_middleware(Guard, token=self.token, max_request_bytes=self.max_request_bytes)
        return app

    def _servers(self):
        import uvicorn
        from kserve.model_repository import ModelRepository
        from kserve.protocol.dataplane import DataPlane
        from kserve.protocol.model_repository_extension import ModelRepositoryExtension

        registry = ModelRepository()
        for model in self.models:
            registry.update(model)
        dataplane = _SafeDataPlane(model_registry=registry)
        extension = ModelRepositoryExtension(model_registry=registry)
        app = self._app(dataplane, extension)
        config = uvicorn.Config(app, host=self.host, port=self.port, log_config=None,
                                log_level="info" if self.verbose else "warning",
                                access_log=self.verbose, timeout_keep_alive=65,
                                limit_concurrency=None, backlog=2048)
        return uvicorn.Server(config), dataplane, extension

    async def _grpc_server(self, dataplane, extension):
        import grpc
        from grpc import aio
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
        from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
        from kserve.protocol.grpc.servicer import InferenceServicer

        limit = self.max_request_bytes
        server = aio.server(interceptors=(_TokenInterceptor(self.token), ExceptionToStatusInterceptor()),
                            options=[("grpc.max_receive_message_length", limit),
                                     ("grpc.max_send_message_length", -1),
                                     ("grpc.so_reuseport", 0)])
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
            InferenceServicer(dataplane, extension), server)
        if server.add_insecure_port(f"{self.grpc_url}") == 0:
            raise InputError(f"cannot listen on {self.grpc_url}", "pick another --grpc-port")
        await server.start()
        return server, grpc

    async def _main(self):
        self._stopping = asyncio.Event()
        rest, dataplane, extension = self._servers()
        self._rest = rest
        grpc_server = None
        if self.grpc_port is not None:
            grpc_server, _ = await self._grpc_server(dataplane, extension)
            self._grpc = grpc_server
        task = asyncio.create_task(rest.serve())
        while not rest.started and not task.done():
            await asyncio.sleep(0.01)
        if task.done():
            task.result()
            raise InputError(f"cannot listen on {self.host}:{self.port}", "pick another --port")
        self._announce()
        stop = asyncio.create_task(self._stopping.wait())
        # uvicorn handles SIGINT/SIGTERM itself (its serve() returns): then stop gRPC too
        await asyncio.wait([stop, task], return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        rest.should_exit = True
        if grpc_server is not None:
            await grpc_server.stop(grace=1)
        await task

    def serve_forever(self, on_start=None):
        """Serve until ``shutdown()`` or Ctrl-C (with ``workers`` > 1: REST in worker processes);
        ``on_start()`` runs once the ports accept requests."""
        self._on_start = on_start
        _quiet(self.verbose)
        self._load()
        self._serving = threading.current_thread()
        self.stopped.clear()
        try:
            self._serve()
        finally:
            self.stopped.set()

    def _serve(self):
        if self.workers > 1:
            return self._serve_workers()
        loop = _new_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except KeyboardInterrupt:
            pass
        finally:
            loop.close()

    def _serve_workers(self):
        """REST answered by ``workers`` uvicorn processes sharing one socket; gRPC in this one."""
        import multiprocessing

        rest, dataplane, extension = self._servers()
        sock = rest.config.bind_socket()
        ctx = multiprocessing.get_context("fork")  # children inherit the loaded models and the app
        children = [ctx.Process(target=_worker, args=(rest, sock), daemon=True) for _ in range(self.workers)]
        for child in children:
            child.start()
        self._rest = None
        loop = _new_loop()
        self._loop = loop

        async def main():
            self._stopping = asyncio.Event()
            if threading.current_thread() is threading.main_thread():
                import signal

                for sig in (signal.SIGINT, signal.SIGTERM):
                    asyncio.get_running_loop().add_signal_handler(sig, self._stopping.set)
            if self.grpc_port is not None:
                self._grpc, _ = await self._grpc_server(dataplane, extension)
            await asyncio.sleep(0.5)  # the workers start serving the shared socket
            self._announce()
            await self._stopping.wait()
            if self._grpc is not None:
                await self._grpc.stop(grace=1)

        try:
            loop.run_until_complete(main())
        except KeyboardInterrupt:
            pass
        finally:
            for child in children:
                child.terminate()
            for child in children:
                child.join(5)
            loop.close()

    def _announce(self):
        self.started.set()
        if getattr(self, "_on_start", None):
            self._on_start()

    def shutdown(self, timeout: float = 10.0):
        """Stop serving; from another thread, wait until the ports are closed (a caller that
        probes the address next must find nothing there)."""
        if self._loop is not None and self._stopping is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if getattr(self, "_serving", None) not in (None, threading.current_thread()):
            self.stopped.wait(timeout)

    def server_close(self):  # the old server's API; nothing left to close
        pass


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where installed (what uvicorn's own runner picks), else asyncio's loop."""
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def _worker(rest, sock):
    rest.run(sockets=[sock])


def _quiet(verbose: bool):
    # kserve logs every rejected request (a 4xx) at ERROR with a traceback: quiet unless --verbose
    for name in ("kserve", "kserve.trace"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.CRITICAL)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)


class _SafeDataPlane:
    """KServe's DataPlane, whose request decoding answers 400 on any malformed body
    (it raises e.g. a bare ValueError on a binary section shorter than announced: a 500)."""

    def __new__(cls, model_registry):
        _import_kserve()
        from kserve.errors import InvalidInput
        from kserve.constants.constants import INFERENCE_CONTENT_LENGTH_HEADER
        from kserve.protocol.dataplane import DataPlane

        class SafeDataPlane(DataPlane):
            def decode_inference_request(self, body, headers, model_name):
                if isinstance(body, bytes) and INFERENCE_CONTENT_LENGTH_HEADER in headers:
                    return _binary_request(body, int(headers[INFERENCE_CONTENT_LENGTH_HEADER]), model_name)
                return super().decode_inference_request(body, headers, model_name)

            def decode(self, body, headers, *args, **kwargs):
                try:
                    return super().decode(body, headers, *args, **kwargs)
                except InvalidInput:
                    raise
                except Exception as exc:  # noqa: BLE001 - any decoding failure is the request's
                    first = (str(exc).splitlines() or [exc.__class__.__name__])[0][:300]
                    raise InvalidInput(f"malformed request: {first}") from None

        return SafeDataPlane(model_registry=model_registry)


def _binary_request(body: bytes, json_length: int, model_name: str):
    """KServe's ``InferRequest.from_bytes`` without its copy of every binary tensor into a Python
    list (``set_data_from_numpy(binary_data=False)``: ~100 ms for a 150 kB tensor, measured with
    benchmarks/serve_throughput.py): the inputs keep their raw bytes, as KServe's gRPC path does."""
    import orjson
    from kserve.errors import InvalidInput
    from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput

    if not 0 <= json_length <= len(body):
        raise InvalidInput(f"Inference-Header-Content-Length {json_length} exceeds the body length {len(body)}")
    try:
        header = orjson.loads(body[:json_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"the request header is not valid JSON: {exc}") from None
    if not isinstance(header, dict) or not isinstance(header.get("inputs"), list):
        raise InvalidInput("the request needs an 'inputs' list")
    inputs, offset = [], json_length
    for entry in header["inputs"]:
        if not isinstance(entry, dict):
            raise InvalidInput("every input must be an object")
        params = entry.get("parameters") or None
        tensor = InferInput(name=entry.get("name"), shape=entry.get("shape"), datatype=entry.get("datatype"),
                            parameters=params)
        if entry.get("data") is not None:
            tensor.data = entry["data"]
        elif isinstance(params, dict) and isinstance(params.get("binary_data_size"), int):
            size = params["binary_data_size"]
            if size < 0 or offset + size > len(body):
                raise InvalidInput(f"{tensor.name}: binary_data_size {size} runs past the end of the body")
            tensor._raw_data = body[offset:offset + size]
            offset += size
        else:
            raise InvalidInput(f"{tensor.name}: needs 'data' or binary_data_size")
        inputs.append(tensor)
    if offset != len(body):
        raise InvalidInput(f"{len(body) - offset} bytes of binary data belong to no input")
    outputs = header.get("outputs")
    requested = [RequestedOutput(name=o["name"], parameters=o.get("parameters")) for o in outputs] \
        if isinstance(outputs, list) else None
    return InferRequest(model_name=model_name, request_id=header.get("id"), parameters=header.get("parameters"),
                        infer_inputs=inputs, request_outputs=requested)


class _TokenInterceptor:
    """gRPC: the bearer token in the ``authorization`` metadata of every call but the health checks."""

    def __new__(cls, token: str | None):
        import grpc
        from grpc import aio

        class TokenInterceptor(aio.ServerInterceptor):
            async def intercept_service(self, continuation, details):
                method = details.method.rsplit("/", 1)[-1]
                if token and method not in OPEN_GRPC:
                    given = dict(details.invocation_metadata or ()).get("authorization", "")
                    ok = given[:7].lower() == "bearer " and hmac.compare_digest(given[7:].strip().encode(),
                                                                                 token.encode())
                    if not ok:
                        async def deny(request, context):
                            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong bearer token")

                        return grpc.unary_unary_rpc_method_handler(deny)
                return await continuation(details)

        return TokenInterceptor()


def export_deployment(artifacts: list[Path], output: Path) -> dict:
    """``mmdeploy serve --export DIR``: a Triton repository, manifests and a Dockerfile for any
    servable artifacts (split directories, ONNX components), built atomically."""
    from mmdeploy.artifact import atomic_output
    import shutil

    from mmdeploy.split import deploy, triton

    served = [ServedArtifact(p) for p in artifacts]  # InputError on anything not servable
    names = [s.name for s in served]
    if len(set(names)) != len(names):
        raise InputError("two artifacts have the same model name", "export them separately")
    with atomic_output(output) as tmp:
        copies, paths = [], []
        for s in served:
            def spec(t):
                return {"name": t.name, "dtype": t.dtype, "shape": list(t.shape)}

            triton.write_repository(tmp / "triton", s.name, s.model_file, [spec(t) for t in s.inputs.values()],
                                    [spec(t) for t in s.outputs.values()])
            if s.model_dir == s.path:  # an ONNX component: copy it whole
                shutil.copytree(s.path, tmp / "models" / s.name)
            else:  # a split directory: what serving it needs
                (tmp / "models" / s.name).mkdir(parents=True)
                shutil.copy2(s.path / "manifest.json", tmp / "models" / s.name / "manifest.json")
                shutil.copytree(s.model_dir, tmp / "models" / s.name / s.model_dir.name)
            copies.append((f"models/{s.name}/", f"/models/{s.name}/"))
            paths.append(f"/models/{s.name}")
        files = deploy.write_files(tmp, "-".join(names) if len(names) > 1 else names[0], copies, paths)
    return {"output": str(output), "models": names,
            "files": [f"triton/{n}/" for n in names] + [f"models/{n}/" for n in names] + files}


def make_server(paths, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
                max_request_bytes: int = DEFAULT_MAX_REQUEST, max_concurrency: int = 4,
                threads: int | None = None, verbose: bool = False, grpc_port: int | None = 0,
                workers: int = 1) -> ModelServer:
    """A server for one or several artifacts (split directories or ONNX components); the token
    defaults to ``$MMDEPLOY_SERVE_TOKEN``; InputError on a bad or busy port."""
    token = token if token is not None else os.environ.get(TOKEN_ENV)
    return ModelServer(paths, host=host, port=port, grpc_port=grpc_port, token=token,
                       max_request_bytes=max_request_bytes, concurrency=max_concurrency, threads=threads,
                       workers=workers, verbose=verbose)


def start_in_thread(server: ModelServer, timeout: float = 60.0) -> threading.Thread:
    """Serve from a daemon thread; returns once the REST and gRPC ports accept. Stop with
    ``server.shutdown()``."""
    errors = []

    def target():
        try:
            server.serve_forever()
        except BaseException as exc:  # noqa: BLE001 - surfaced to the caller below
            errors.append(exc)
            server.started.set()

    thread = threading.Thread(target=target, daemon=True, name="mmdeploy-serve")
    thread.start()
    if not server.started.wait(timeout):
        raise RuntimeError("the server did not start")
    if errors:
        raise errors[0]
    return thread
