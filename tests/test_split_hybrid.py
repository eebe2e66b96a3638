"""HybridRunner reliability over loopback: no lost requests, fallback when the cloud dies or misbehaves."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from builders import cached_split

from mmdeploy.artifact import load_reference
from mmdeploy.split.client import RemoteError
from mmdeploy.split.hybrid import HybridRunner
from mmdeploy.split.server import make_server, start_in_thread


@pytest.fixture(scope="module")
def split_dir(tmp_path_factory):
    return cached_split(tmp_path_factory, "vision", "block:0")


@pytest.fixture(scope="module")
def cases(split_dir):
    return load_reference(split_dir / "full")


def _check(out, ref):
    assert np.abs(out["image_embeds"] - ref["image_embeds"]).max() < 1e-5


@pytest.mark.slow
def test_1000_requests_from_32_clients_none_lost(split_dir, cases):
    srv = make_server(split_dir, port=0, token="t", max_concurrency=4)
    start_in_thread(srv)
    try:
        runner = HybridRunner(split_dir, srv.url, token="t", timeout=10, retries=2, fallback=False)

        def one(i):
            feeds, ref = cases[i % len(cases)]
            out, route = runner.run_with_route(feeds)
            _check(out, ref)
            return route

        with ThreadPoolExecutor(32) as pool:
            routes = list(pool.map(one, range(1000)))
    finally:
        srv.shutdown()
        srv.server_close()
    assert routes.count("remote") == 1000
    m = runner.metrics()
    assert m["requests"] == m["remote"] == 1000 and m["fallback"] == 0
    assert m["latency"]["edge"]["n"] == 1000 and m["latency"]["remote"]["n"] == 1000
    stats = srv.statistics()["vision_cloud"]["inference_stats"]
    assert stats["success"]["count"] == 1000 and stats["fail"]["count"] == 0


def _start_cli_server(split_dir):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "mmdeploy", "serve", str(split_dir), "--port", "0",
                             "--grpc-port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = proc.stdout.readline()
    match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return proc, match.group(1)


@pytest.mark.slow
def test_server_killed_mid_run_every_request_answered_by_fallback(split_dir, cases):
    proc, url = _start_cli_server(split_dir)
    try:
        runner = HybridRunner(split_dir, url, timeout=2, retries=1, cooldown=0.2)
        done = threading.Semaphore(0)

        def one(i):
            feeds, ref = cases[i % len(cases)]
            out, route = runner.run_with_route(feeds)
            _check(out, ref)
            done.release()
            return route

        with ThreadPoolExecutor(16) as pool:
            futures = [pool.submit(one, i) for i in range(600)]
            for _ in range(150):
                done.acquire(timeout=60)
            proc.send_signal(signal.SIGKILL)  # the cloud dies with requests in flight
            routes = [f.result(timeout=120) for f in futures]
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert len(routes) == 600
    assert routes.count("remote") >= 150 and routes.count("fallback") > 0
    m = runner.metrics()
    assert m["remote"] + m["fallback"] == m["requests"] == 600
    assert m["failures"] >= 1 and m["last_error"]


class _BadHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    mode = "error"

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.mode == "slow":
            time.sleep(1.5)
        body = b'{"error": "boom"}'
        try:
            self.send_response(500)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (timeout): expected in "slow" mode
            pass


@pytest.mark.parametrize("mode", ["error", "slow"])
def test_erroring_or_slow_cloud_falls_back(split_dir, cases, mode):
    handler = type("H", (_BadHandler,), {"mode": mode})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        runner = HybridRunner(split_dir, f"http://127.0.0.1:{srv.server_address[1]}", timeout=0.3, retries=1,
                              cooldown=0)
        feeds, ref = cases[0]
        out, route = runner.run_with_route(feeds)
        _check(out, ref)
        assert route == "fallback"
        m = runner.metrics()
        assert m["fallback"] == 1 and m["failures"] == 2 and m["remote"] == 0
        assert ("500" if mode == "error" else "did not answer") in m["last_error"]
        assert "fallback" in m["latency"]
        strict = HybridRunner(split_dir, f"http://127.0.0.1:{srv.server_address[1]}", timeout=0.3, retries=0,
                              fallback=False)
        with pytest.raises(RemoteError):
            strict.run(feeds)
    finally:
        srv.shutdown()
        srv.server_close()


def test_cooldown_skips_the_dead_cloud(split_dir, cases):
    runner = HybridRunner(split_dir, "http://127.0.0.1:9", timeout=0.5, retries=0, cooldown=60)
    for feeds, ref in cases * 2:
        _check(runner.run(feeds), ref)
    m = runner.metrics()
    assert m["fallback"] == 4 and m["failures"] == 1 and m["skipped"] == 3


def test_cache_serves_repeated_inputs_without_the_cloud(tmp_path_factory):
    split_dir = cached_split(tmp_path_factory, "text", "cloud")
    cases = load_reference(split_dir / "full")
    srv = make_server(split_dir, port=0)
    start_in_thread(srv)
    try:
        runner = HybridRunner(split_dir, srv.url, cache_size=8, fallback=False)
        routes = [runner.run_with_route(feeds)[1] for feeds, _ in cases * 3]
        for feeds, ref in cases:
            out = runner.run(feeds)
            assert np.abs(out["text_embeds"] - ref["text_embeds"]).max() < 1e-5
    finally:
        srv.shutdown()
        srv.server_close()
    assert routes == ["remote"] * len(cases) + ["cache"] * 2 * len(cases)
    m = runner.metrics()
    assert m["remote"] == len(cases) and m["cached"] == 3 * len(cases)
    assert srv.statistics()["text_cloud"]["inference_count"] == len(cases)


def test_after_shutdown_returns_the_server_is_gone_and_the_fallback_answers(split_dir, cases):
    """shutdown() from another thread returns only once the ports are closed: the very next
    request is answered by the local fallback, not by a server still stopping."""
    srv = make_server(split_dir, port=0)
    start_in_thread(srv)
    url = f"http://127.0.0.1:{srv.server_address[1]}"
    feeds, ref = cases[0]
    assert HybridRunner(split_dir, url).run_with_route(feeds)[1] == "remote"
    srv.shutdown()
    offline = HybridRunner(split_dir, url, timeout=0.5, retries=0)
    out, route = offline.run_with_route(feeds)
    assert route == "fallback" and offline.metrics()["fallback"] == 1
    _check(out, ref)
