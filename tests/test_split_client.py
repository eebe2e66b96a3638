"""The edge client (tritonclient underneath): the errors it reports, and a wrong token is an
AuthError (a misconfiguration), not an outage."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from builders import cached_split

from mmdeploy.errors import MMDeployError
from mmdeploy.split.client import AuthError, RemoteError, V2Client
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
    assert info.value.status is None and not isinstance(info.value, AuthError)


def test_bad_url():
    with pytest.raises(MMDeployError, match="bad server URL"):
        V2Client("ftp://host")
    assert V2Client("grpc://127.0.0.1:8001").grpc and V2Client("127.0.0.1:9", grpc=True).address == "127.0.0.1:9"


def test_errors_carry_status_and_message_and_the_client_recovers(tmp_path_factory):
    srv = make_server(cached_split(tmp_path_factory, "vision", "block:0"), port=0, grpc_port=None, token="t",
                      max_request_bytes=6000)
    start_in_thread(srv)
    try:
        client = V2Client(srv.url, token="t")
        with pytest.raises(RemoteError, match="404") as info:
            client.infer("x", {"cut_0": np.zeros((1, 17, 32), np.float32)})
        assert info.value.status == 404
        with pytest.raises(RemoteError, match="413") as info:
            client.infer("vision_cloud", {"cut_0": np.zeros((3, 17, 32), np.float32)})
        assert info.value.status == 413
        with pytest.raises(RemoteError, match="400: cut_0: datatype float64") as info:
            client.infer("vision_cloud", {"cut_0": np.zeros((1, 17, 32), np.float64)})
        out = client.infer("vision_cloud", {"cut_0": np.zeros((1, 17, 32), np.float32)})
        assert out["image_embeds"].shape == (1, 16)
        out = client.infer("vision_cloud", {"cut_0": np.zeros((1, 17, 32), np.float32)}, binary=False,
                           compression="gzip")
        assert out["image_embeds"].shape == (1, 16)
        assert client.metadata("vision_cloud")["name"] == "vision_cloud"
        assert client.ready("vision_cloud") and client.ready() and client.live()
        for token in ("wrong", None):
            with pytest.raises(AuthError, match="401") as info:
                V2Client(srv.url, token=token).infer("vision_cloud", {"cut_0": np.zeros((1, 17, 32), np.float32)})
            assert info.value.exit_code == 2 and "MMDEPLOY_SERVE_TOKEN" in info.value.hint
    finally:
        srv.shutdown()
