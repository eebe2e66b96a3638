"""`mmdeploy bench` bad input as a user sees it: one line, exit 2, no traceback."""

import json

import pytest

from _bench_models import bundle


def one_line_error(proc) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    # a usage error (a value out of range) keeps click's usage line and --help pointer before it
    lines = [ln for ln in err.splitlines() if not ln.startswith(("Usage: ", "Try '"))]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err
    return lines[0]


def test_missing_artifact(cli_subprocess, tmp_path):
    err = one_line_error(cli_subprocess("bench", tmp_path / "nope"))
    assert "does not exist" in err


def test_unknown_target_lists_them(cli, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 1})
    err = one_line_error(cli("bench", b, "--target", "jetson-tx9"))
    assert "unknown target 'jetson-tx9'" in err and "jetson-orin-nano" in err and "cpu" in err
    err = one_line_error(cli("bench", b, "--target", "jetson"))  # the generic target: needs a device
    assert "no host is configured" in err and "--host" in err and "--estimate" in err


def test_remote_target_without_host_names_what_to_configure(cli, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 1})
    err = one_line_error(cli("bench", b, "--target", "rpi5"))
    assert "no host is configured" in err and "--host" in err and "rpi5.yaml" in err


def test_unreachable_host(cli, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 1})
    err = one_line_error(cli("bench", b, "--target", "rpi5", "--host", "nobody@127.0.0.1:1"))
    assert "cannot reach target rpi5 at nobody@127.0.0.1 port 1" in err


@pytest.mark.parametrize("text", ["{not json", json.dumps({"schema": "other"})])
def test_malformed_baseline(cli, tmp_path, text):
    b = bundle(tmp_path / "m", {"vision": 1})
    (tmp_path / "base.json").write_text(text)
    err = one_line_error(cli("bench", b, "--baseline", tmp_path / "base.json"))
    assert "base.json" in err


@pytest.mark.parametrize("args,needle", [(["--iters", "0"], "--iters"), (["--batch", "0"], "--batch"),
                                         (["--duration", "-1"], "--duration"),
                                         (["--components", "audio"], "no component audio")])
def test_bad_settings(cli, tmp_path, args, needle):
    b = bundle(tmp_path / "m", {"vision": 1})
    assert needle in one_line_error(cli("bench", b, *args))


def test_duration_json_and_saved_baseline(cli, tmp_path):
    b = bundle(tmp_path / "m", {"vision": 1})
    proc = cli("bench", b, "--duration", "0.3", "--warmup", "1", "--json", "--save-baseline", tmp_path / "b.json")
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    assert doc["settings"]["duration"] == 0.3 and doc["settings"]["iters"] is None
    assert doc["results"][0]["n"] == len(doc["results"][0]["samples_ms"]) > 1
    assert json.loads((tmp_path / "b.json").read_text())["results"][0]["samples_ms"]
