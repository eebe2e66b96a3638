"""The edge runtime: run the edge half here, the cloud half over the network, fall back locally.

:class:`HybridRunner` is a Runner (``run(feeds) -> outputs``).  Each request: run the edge half,
send the cut tensors to the server (``tritonclient``: HTTP with the binary-data extension, or
gRPC), retry up to ``retries`` times; when
the cloud is unreachable, slow (``timeout``) or answering errors, run the whole component
locally (``DIR/full``) and count it as a fallback.  After a failed request the remote path is
skipped for ``cooldown`` seconds so a dead server costs one timeout, not one per request.
A 401/403 is not an outage: it raises :class:`~mmdeploy.split.client.AuthError` (no fallback).
``cache_size`` keeps the last results by input content (e.g. a text tower placed in the cloud
with ``--at cloud``: prompt embeddings are fetched once, then served from the cache).
:class:`LocalChain` runs both halves in-process (for checks and profiling).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from mmdeploy.artifact import max_sequence, read_manifest
from mmdeploy.backends.base import check_feeds, feed_limits
from mmdeploy.split.build import cloud_feeds, read_split
from mmdeploy.split.client import AuthError, RemoteError, V2Client


def _runner(directory: Path, threads: int | None, name: str):
    from mmdeploy.artifact import read_manifest
    from mmdeploy.backends.onnxruntime import OnnxRuntimeRunner

    manifest = read_manifest(directory)
    return OnnxRuntimeRunner(directory / manifest.metadata.get("model_file", "model.onnx"), threads=threads,
                             name=name)


class _Metrics:
    def __init__(self):
        self.lock = threading.Lock()
        self.counts = {"requests": 0, "remote": 0, "fallback": 0, "failures": 0, "skipped": 0, "cached": 0}
        self.samples: dict[str, list[float]] = {"edge_ms": [], "remote_ms": [], "fallback_ms": [], "total_ms": []}
        self.last_error: str | None = None

    def add(self, **values: Any) -> None:
        with self.lock:
            for key, value in values.items():
                if key in self.counts:
                    self.counts[key] += value
                elif key in self.samples:
                    self.samples[key].append(value)

    def summary(self) -> dict[str, Any]:
        with self.lock:
            latency = {}
            for part, values in self.samples.items():
                if values:
                    arr = np.asarray(values)
                    latency[part[:-3]] = {"n": len(values), "mean_ms": float(arr.mean()),
                                     "p50_ms": float(np.percentile(arr, 50)), "p90_ms": float(np.percentile(arr, 90)),
                                     "max_ms": float(arr.max())}
            return {**self.counts, "latency": latency, "last_error": self.last_error}


class HybridRunner:
    """Edge half locally + cloud half remotely, with timeout, retries and local fallback."""

    def __init__(self, split_dir: str | Path, server: str, *, token: str | None = None, timeout: float = 2.0,
                 retries: int = 1, fallback: bool = True, cooldown: float = 0.5, threads: int | None = None,
                 binary: bool = True, cache_size: int = 0, grpc: bool = False):
        self.dir = Path(split_dir)
        self.manifest = read_split(self.dir)
        meta = self.manifest.metadata
        self.model_name = meta["model_name"]
        self.crossings = meta["cut"]["crossing"]
        self.edge = _runner(self.dir / "edge", threads, "edge")
        self.full = _runner(self.dir / "full", threads, "full") if fallback else None
        self.client = V2Client(server, token=token, timeout=timeout, grpc=grpc)
        self.retries = max(0, int(retries))
        self.cooldown = float(cooldown)
        self.binary = binary
        self.name = "hybrid"
        self.input_names = [s.name for s in self.manifest.inputs]  # the component's, forwarded ones too
        self.output_names = [s.name for s in self.manifest.outputs]
        full = read_manifest(self.dir / "full")
        origin = (self.manifest.parent or {}).get("path")
        self.limits = feed_limits(self.dir / "full" / full.metadata.get("model_file", "model.onnx"),
                                  self.manifest.inputs, max_sequence(origin) if origin and Path(origin).exists() else None)
        self._metrics = _Metrics()
        self._down_until = 0.0
        self.cache_size = max(0, int(cache_size))
        self._cache: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._cache_lock = threading.Lock()

    def metrics(self) -> dict[str, Any]:
        return self._metrics.summary()

    def _remote(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        edge_out = self.edge.run({k: v for k, v in feeds.items() if k in self.edge.input_names})
        t1 = time.perf_counter()
        self._metrics.add(edge_ms=(t1 - t0) * 1e3)
        payload = cloud_feeds(self.crossings, edge_out, feeds)
        error: RemoteError | None = None
        for _ in range(1 + self.retries):
            t2 = time.perf_counter()
            try:
                out = self.client.infer(self.model_name, payload, self.output_names, binary=self.binary)
            except AuthError:
                raise  # a wrong token is a misconfiguration: report it, do not hide it behind the fallback
            except RemoteError as exc:
                error = exc
                self._metrics.add(failures=1)
                if exc.status is not None and 400 <= exc.status < 500 and exc.status not in (408, 429):
                    break  # our request is wrong: retrying will not help
                continue
            self._metrics.add(remote=1, remote_ms=(time.perf_counter() - t2) * 1e3)
            return out
        assert error is not None
        raise error

    @staticmethod
    def _key(feeds: dict[str, np.ndarray]) -> str:
        digest = hashlib.sha1()
        for name in sorted(feeds):
            value = np.ascontiguousarray(feeds[name])
            digest.update(f"{name}:{value.dtype}:{value.shape}".encode())
            digest.update(value.tobytes())
        return digest.hexdigest()

    def run_with_route(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
        """(outputs, "remote" | "fallback" | "cache"); InputError when ``feeds`` do not fit the model."""
        check_feeds(self.manifest.inputs, feeds, self.limits)  # before the edge runtime, the server
        self._metrics.add(requests=1)
        key = self._key(feeds) if self.cache_size else None
        if key is not None:
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                self._metrics.add(cached=1)
                return {k: v.copy() for k, v in hit.items()}, "cache"
        out, route = self._run(feeds)
        if key is not None:
            with self._cache_lock:
                self._cache[key] = {k: v.copy() for k, v in out.items()}
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out, route

    def _run(self, feeds: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str]:
        start = time.perf_counter()
        if time.monotonic() >= self._down_until:
            try:
                out = self._remote(feeds)
                self._metrics.add(total_ms=(time.perf_counter() - start) * 1e3)
                return out, "remote"
            except AuthError:
                raise
            except RemoteError as exc:
                self._metrics.last_error = exc.one_line()
                self._down_until = time.monotonic() + self.cooldown
                if self.full is None:
                    raise
        else:
            self._metrics.add(skipped=1)
            if self.full is None:
                raise RemoteError("the cloud failed recently and fallback is off", hint="retry later")
        t0 = time.perf_counter()
        out = self.full.run(feeds)
        now = time.perf_counter()
        self._metrics.add(fallback=1, fallback_ms=(now - t0) * 1e3)
        self._metrics.add(total_ms=(now - start) * 1e3)
        return out, "fallback"

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.run_with_route(feeds)[0]


class LocalChain:
    """Both halves in this process: edge then cloud, as a Runner."""

    def __init__(self, split_dir: str | Path, edge_threads: int | None = None, cloud_threads: int | None = None):
        self.dir = Path(split_dir)
        manifest = read_split(self.dir)
        self.crossings = manifest.metadata["cut"]["crossing"]
        self.edge = _runner(self.dir / "edge", edge_threads, "edge")
        self.cloud = _runner(self.dir / "cloud", cloud_threads, "cloud")
        self.name = "split-chain"
        self.input_names = [s.name for s in manifest.inputs]
        self.output_names = [s.name for s in manifest.outputs]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        edge_out = self.edge.run({k: v for k, v in feeds.items() if k in self.edge.input_names})
        return self.cloud.run(cloud_feeds(self.crossings, edge_out, feeds))
