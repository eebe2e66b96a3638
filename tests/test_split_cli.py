"""`mmdeploy split`, `serve`, `infer-split` from the command line: outputs and one-line errors."""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
from builders import cached_bundle, cached_split

from mmdeploy.artifact import load_reference
from mmdeploy.cli import main
from mmdeploy.split.server import make_server, start_in_thread


def run(capsys, *args):
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in args])
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    return cached_bundle(tmp_path_factory)


def test_split_writes_a_directory(capsys, bundle, tmp_path):
    code, out, _ = run(capsys, "split", bundle, "--component", "vision", "--at", "block:1", "--output",
                       tmp_path / "s", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["metadata"]["cut"]["crossing"][0]["name"] == "cut_0"
    assert (tmp_path / "s" / "triton" / "vision_cloud" / "config.pbtxt").is_file()


@pytest.mark.parametrize("args,message", [
    (["--component", "vision", "--at", "block:9"], "no block 9; valid blocks: block:0 .. block:1"),
    (["--component", "vision", "--at", "no/such/tensor"], "'no/such/tensor' is not in the graph"),
    (["--component", "audio", "--at", "block:0"], "valid components: vision, text"),
    (["--component", "vision", "--at", "block:0", "--compress", "int4"], "fp16 or int8"),
    (["--component", "vision"], "--at is required"),
])
def test_bad_input_is_one_line_exit_2_nothing_written(capsys, bundle, tmp_path, args, message):
    code, _, err = run(capsys, "split", bundle, *args, "--output", tmp_path / "s")
    assert code == 2 and message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_missing_artifact(capsys, tmp_path):
    code, _, err = run(capsys, "split", tmp_path / "nope", "--at", "block:0", "--output", tmp_path / "s")
    assert code == 2 and "does not exist" in err


def test_list_and_plan(capsys, bundle):
    code, out, _ = run(capsys, "split", bundle, "-c", "text", "--list", "--json")
    rows = json.loads(out)
    assert code == 0 and [r["at"] for r in rows] == ["block:0", "block:1"] and len(rows[0]["crossing"]) >= 2
    code, out, _ = run(capsys, "split", bundle, "-c", "vision", "--plan", "--edge", "rpi5", "--cloud", "jetson-agx-orin",
                       "--bandwidth", "5Mbps", "--rtt", "30ms", "--json")
    plan = json.loads(out)
    assert code == 0 and plan["estimated"] == ["rpi5", "jetson-agx-orin"] and plan["rtt_ms"] == 30
    assert plan["choice"]["total_ms"] == min(r["total_ms"] for r in plan["rows"])


def test_auto_and_sweep(capsys, bundle, tmp_path):
    code, out, _ = run(capsys, "split", bundle, "-c", "vision", "--at", "auto", "--edge", "rpi5", "--cloud",
                       "cpu-1t", "--runs", "2", "--output", tmp_path / "auto", "--json")
    data = json.loads(out)
    assert code == 0 and data["metadata"]["plan"]["best_split"]["at"] == data["metadata"]["at"]
    code, out, _ = run(capsys, "split", bundle, "-c", "vision", "--sweep", "1,100", "--edge", "rpi5",
                       "--cloud", "jetson-agx-orin", "--output", tmp_path / "sweep")
    assert code == 0
    assert {p.name for p in (tmp_path / "sweep").iterdir()} == {"sweep.md", "sweep.json", "sweep.png"}
    code, _, err = run(capsys, "split", bundle, "-c", "vision", "--sweep", "1,x", "--output", tmp_path / "s2")
    assert code == 2 and "not a list of numbers" in err


def test_serve_bad_input(capsys, tmp_path_factory, tmp_path):
    code, _, err = run(capsys, "serve", tmp_path / "missing")
    assert code == 2 and "does not exist" in err
    split_dir = cached_split(tmp_path_factory, "vision", "block:0")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        code, _, err = run(capsys, "serve", split_dir, "--port", s.getsockname()[1])
    assert code == 2 and "cannot listen" in err and "Traceback" not in err


def test_infer_split_remote_and_fallback(capsys, tmp_path_factory, tmp_path):
    split_dir = cached_split(tmp_path_factory, "vision", "block:0")
    feeds, ref = load_reference(split_dir / "full")[0]
    np.savez(tmp_path / "in.npz", **feeds)
    srv = make_server(split_dir, port=0)
    start_in_thread(srv)
    try:
        code, out, _ = run(capsys, "infer-split", split_dir, tmp_path / "in.npz", "--server", srv.url,
                           "--output", tmp_path / "out.npz", "--json")
    finally:
        srv.shutdown()
        srv.server_close()
    assert code == 0 and json.loads(out)["route"] == "remote"
    assert np.abs(np.load(tmp_path / "out.npz")["image_embeds"] - ref["image_embeds"]).max() < 1e-5
    code, out, _ = run(capsys, "infer-split", split_dir, tmp_path / "in.npz", "--server", "http://127.0.0.1:9",
                       "--timeout", "0.5")
    assert code == 0 and "route: fallback" in out
    code, _, err = run(capsys, "infer-split", split_dir, tmp_path / "in.npz", "--server", "http://127.0.0.1:9",
                       "--no-fallback", "--retries", "0")
    assert code == 1 and "cannot reach" in err
    code, _, err = run(capsys, "infer-split", split_dir, tmp_path / "missing.npz", "--server", "http://x:1")
    assert code == 2 and "does not exist" in err


def test_infer_split_wrong_token_is_an_error_not_a_fallback(capsys, tmp_path_factory, tmp_path):
    split_dir = cached_split(tmp_path_factory, "vision", "block:0")
    feeds, _ = load_reference(split_dir / "full")[0]
    np.savez(tmp_path / "in.npz", **feeds)
    srv = make_server(split_dir, port=0, grpc_port=None, token="right")
    start_in_thread(srv)
    try:
        for token in ("wrong", None):
            args = ["--token", token] if token else []
            code, out, err = run(capsys, "infer-split", split_dir, tmp_path / "in.npz", "--server", srv.url, *args)
            assert code == 2 and "401" in err and "route" not in out
            assert len(err.strip().splitlines()) <= 2 and "Traceback" not in err
    finally:
        srv.shutdown()
