"""The v2 client: errors it reports and reconnection after the server closes a connection."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from builders import cached_split

from mmdeploy.errors import MMDeployError
from mmdeploy.split.client import RemoteError, V2Client
from mmdeploy.split.server import make_server, start_in_thread


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_is_a_remote_error():
    client = V2Client(f"http://127.0.0.1:{_free_port()}", timeout=1)
    assert client.live() is False
    with pytest.raises(RemoteError, match="cannot reach") as info:
        client.infer("m", {"x": np.zeros(1, np.float32)})
    assert info.value.status is None


def test_bad_url():
    with pytest.raises(MMDeployError, match="bad server URL"):
        V2Client("ftp://host")


def test_http_errors_carry_status_and_message_and_connection_recovers(tmp_path_factory):
    srv = make_server(cached_split(tmp_path_factory, "vision", "block:0"), port=0, max_request_bytes=4096)
    start_in_thread(srv)
    try:
        client = V2Client(srv.url)
        with pytest.raises(RemoteError, match="404: unknown model 'x'") as info:
            client.infer("x", {"cut_0": np.zeros((1, 17, 32), np.float32)})
        assert info.value.status == 404
        with pytest.raises(RemoteError, match="413") as info:  # the server closes this connection
            client.infer("vision_cloud", {"cut_0": np.zeros((2, 17, 32), np.float32)})
        out = client.infer("vision_cloud", {"cut_0": np.zeros((1, 17, 32), np.float32)})
        assert out["image_embeds"].shape == (1, 16)
        assert client.metadata("vision_cloud")["name"] == "vision_cloud"
        assert client.ready("vision_cloud") and client.ready()
    finally:
        srv.shutdown()
        srv.server_close()
