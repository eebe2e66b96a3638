"""The Jetson-only parts, on recorded real outputs (tests/data/jetson/README.md names each source):
tegrastats lines, trtexec logs, device-tree model strings, nv_tegra_release, nvpmodel -q; and the
whole `--target jetson` flow over SSH with those recordings replayed by stand-in executables."""

import json
import os
from pathlib import Path

import pytest

from _bench_models import bundle
from _device import device_python, needs_ssh, sshd, user_profile, workdir_empty  # noqa: F401
from mmdeploy.targets import boards
from mmdeploy.targets import device_worker as dw

DATA = Path(__file__).parent / "data" / "jetson"


def _lines(name):
    return (DATA / name).read_text().splitlines()


def test_tegrastats_orin_nano_super_busy_line():
    idle, busy = _lines("tegrastats-orin-nano-super.log")
    s = dw.parse_tegrastats(busy)
    assert s["total_mw"] == 16321  # VDD_IN, the instantaneous value (not the running average)
    assert s["power_mw"] == {"VDD_IN": 16321, "VDD_CPU_GPU_CV": 7104, "VDD_SOC": 3120}
    assert s["gpu_pct"] == 99 and s["gpu_mhz"] == 612 and s["emc_pct"] == 61
    assert s["temps_c"]["tj"] == 58.312 and s["temps_c"]["gpu"] == 58.625
    assert "RAM" not in s["power_mw"] and "SWAP" not in s["power_mw"]
    assert dw.parse_tegrastats(idle)["gpu_pct"] == 0


def test_tegrastats_agx_orin_has_no_input_rail_so_rails_are_summed():
    s = dw.parse_tegrastats(_lines("tegrastats-agx-orin.log")[0])
    assert s["power_mw"] == {"VDD_GPU_SOC": 2412, "VDD_CPU_CV": 1607, "VIN_SYS_5V0": 4707}
    assert s["total_mw"] == 2412 + 1607 + 4707
    assert s["gpu_mhz"] == 0 and s["temps_c"]["tj"] == 52.562


def test_tegrastats_xavier_nx_and_off_sensors():
    s = dw.parse_tegrastats(_lines("tegrastats-xavier-nx.log")[0])
    assert s["total_mw"] == 2763 and s["gpu_mhz"] == 114 and s["temps_c"]["GPU"] == 45.5
    # an Orin's unpowered sensors read -256 C: dropped (line from lesomnus/tegra-exporter's tests)
    off = "CV0@-256C CPU@44.562C GPU@-256C tj@44.343C VDD_GPU_SOC 2340mW/2340mW"
    assert dw.parse_tegrastats(off)["temps_c"] == {"CPU": 44.562, "tj": 44.343}


def test_energy_per_inference_from_power_and_rate():
    busy = dw.parse_tegrastats(_lines("tegrastats-orin-nano-super.log")[1])
    summary = dw.summarize_tegrastats([busy] * 10, per_second=120.699)
    assert summary["power_avg_mw"] == 16321 and summary["power_peak_mw"] == 16321
    assert summary["energy_per_inference_mj"] == pytest.approx(16321 / 120.699)  # mW / (1/s) = mJ
    assert summary["peak_temp_c"] == 58.625 and summary["gpu_util_pct"] == 99 and summary["emc_util_pct"] == 61


def test_trtexec_performance_summary():
    t = dw.parse_trtexec((DATA / "trtexec-run.log").read_text())
    assert t["throughput_qps"] == 120.699 and t["passed"] and t["tensorrt_version"] == "8.5.2"
    assert t["host_latency"] == {"min": 9.11414, "max": 11.7442, "mean": 9.81005, "p50": 9.76404,
                                 "p90": 10.1075, "p95": 10.1624, "p99": 11.4742}
    assert t["gpu_compute"]["p50"] == 8.19409 and t["h2d"]["mean"] == 1.55492 and t["d2h"]["p99"] == 0.0168457
    assert t["host_walltime_s"] == 3.02405 and t["gpu_compute_total_s"] == 3.00752


def test_trtexec_parse_failure_gives_the_informative_line():
    t = dw.parse_trtexec((DATA / "trtexec-parse-failure.log").read_text())
    assert not t["passed"] and t["errors"][0] == "Invalid Node - Pad_13"
    assert dw.trt_version_from_tag("100300") == "10.3.0" and dw.trt_version_from_tag("8601") == "8.6.1"


@pytest.mark.parametrize("model,mem_kb,expected", [
    ("NVIDIA Jetson Orin Nano Engineering Reference Developer Kit Super", 7_800_000, "jetson-orin-nano"),
    ("NVIDIA Jetson Orin Nano Developer Kit", 3_700_000, "jetson-orin-nano-4gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 15_700_000, "jetson-orin-nx"),
    ("Jetson AGX Orin", 64_300_000, "jetson-agx-orin"),
    ("NVIDIA Jetson Xavier NX Developer Kit", 7_000_000, "jetson-xavier-nx"),
    ("NVIDIA Jetson Nano Developer Kit", 4_000_000, "jetson-nano"),
    ("Raspberry Pi 5 Model B Rev 1.0", 8_000_000, "rpi5"),
    ("Raspberry Pi 4 Model B Rev 1.2", 4_000_000, "rpi4"),
    ("Compute Module 5 Rev 1.0", 4_000_000, "rpi5"),
])
def test_board_from_device_tree_model(model, mem_kb, expected):
    """Device-tree strings as the boards print them (see tests/data/jetson/README.md; the Pi
    strings from public detection tests)."""
    assert boards.identify({"model": model, "memory_kb": mem_kb})["profile"] == expected


def test_l4t_jetpack_and_nvpmodel():
    line = (DATA / "orin-nano-super" / "etc" / "nv_tegra_release").read_text()
    assert boards.l4t_release(line) == "36.4.4" and boards.jetpack("36.4.4") == "6.1/6.2"
    assert boards.jetpack("35.4.1") == "5.1.2" and boards.jetpack("32.7.1") == "4.6"
    assert boards.nvpmodel_mode("NV Power Mode: MAXN\n0") == "MAXN (0)"
    rec = boards.identify({"model": "x86 box", "memory_kb": 1 << 20}, kind="jetson")
    assert rec["profile"] is None and not rec["matched"] and rec["identity"] == "x86 box"


def test_engine_cache_key_covers_onnx_settings_tensorrt_and_board():
    key = dw.engine_key("ab" * 32, {"precision": "fp16"}, "10.3.0", "jetson-orin-nano")
    assert key.startswith("abababababababab-trt10.3.0-jetson-orin-nano-")
    assert key != dw.engine_key("ab" * 32, {"precision": "int8"}, "10.3.0", "jetson-orin-nano")
    assert key != dw.engine_key("ab" * 32, {"precision": "fp16"}, "8.5.2", "jetson-orin-nano")
    assert key != dw.engine_key("ab" * 32, {"precision": "fp16"}, "10.3.0", "jetson-agx-orin")


def test_generic_targets_estimate_one_row_per_board(tmp_path, capsys):
    from _bench_models import component
    from mmdeploy.cli import main

    c = component(tmp_path / "c", 2)
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(c), "--target", "jetson", "--estimate", "--json"])
    assert exc.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kind"] == "estimate" and [r["board"] for r in doc["results"]] == [
        "jetson-orin-nano", "jetson-orin-nano-4gb", "jetson-orin-nx", "jetson-agx-orin", "jetson-xavier-nx",
        "jetson-nano"]
    assert all(r["label"] == "ESTIMATE" and r["launch_overhead_ms"] > 0 for r in doc["results"])
    assert all(r["p50_ms"] >= r["launch_overhead_ms"] for r in doc["results"])
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(c), "--target", "rpi", "--estimate"])
    out = capsys.readouterr().out
    assert "| rpi5 |" in out and "| rpi4 |" in out and "ESTIMATE" in out
    assert "Machine:" not in out and "threads" not in out  # nothing ran: no local settings shown


def test_generic_target_without_host_says_pass_host(tmp_path, capsys):
    from _bench_models import component
    from mmdeploy.cli import main

    c = component(tmp_path / "c", 1)
    for target in ("jetson", "rpi"):
        with pytest.raises(SystemExit) as exc:
            main(["bench", str(c), "--target", target])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "--host" in err and "--estimate" in err
        assert f"~/.config/mmdeploy/targets/{target}.yaml" in err and "site-packages" not in err


# --------------------------------------------------------------------------- replayed Jetson over SSH


def _jetson_cfg(sshd, tmp_path, **env):
    env = {"PATH": f"{DATA / 'bin'}:/usr/bin:/bin", "MMDEPLOY_DEVICE_ROOT": str(DATA / "orin-nano-super"),
           "HOME": str(tmp_path / "device-home"), **env}
    return user_profile(sshd, tmp_path / "cfg", "jetson", env=env)


@needs_ssh[0]
@needs_ssh[1]
def test_jetson_over_ssh_with_recorded_trtexec_and_tegrastats(sshd, tmp_path, capsys):
    """`--target jetson`: the Orin Nano Super is detected from its device tree, the engine is
    built on the device (trtexec, as TensorRT's Python API is absent there) and cached, timed by
    trtexec, tegrastats sampled: the results carry what trtexec and jtop report."""
    from mmdeploy.cli import main

    b = bundle(tmp_path / "m", {"vision": 1})
    targets = _jetson_cfg(sshd, tmp_path)
    args = ["bench", str(b), "--target", "jetson", "--targets-dir", str(targets), "--host",
            f"{sshd['user']}@127.0.0.1", "--iters", "50", "--max-energy-mj", "100", "--max-temp-c", "90", "--json"]
    with pytest.raises(SystemExit) as exc:
        main(args)
    captured = capsys.readouterr()
    assert exc.value.code == 1, captured.err  # energy 135 mJ > 100 mJ: the budget fails
    doc = json.loads(captured.out)
    board = doc["device"]["board"]
    assert board["profile"] == "jetson-orin-nano" and board["l4t"] == "36.4.4"
    assert board["nvpmodel"] == "MAXN_SUPER (2)" and board["jetson_clocks"] is False
    assert doc["target"]["name"] == "jetson-orin-nano"
    r = doc["results"][0]
    assert r["format"] == "tensorrt" and r["runner"] == "tensorrt 8.5.2"
    assert r["p50_ms"] == 9.76404 and r["gpu_compute_p50_ms"] == 8.19409 and r["h2d_mean_ms"] == 1.55492
    assert r["throughput_per_s"] == 120.699 and r["latency_source"] == "trtexec summary"
    assert r["power_avg_mw"] == pytest.approx(16321, rel=0.1) and r["peak_temp_c"] == 58.625
    assert r["energy_per_inference_mj"] == pytest.approx(r["power_avg_mw"] / 120.699)
    assert r["gpu_util_pct"] > 50 and r["emc_util_pct"] > 10
    assert r["engine"]["cached"] is False and "-trt8.5.2-jetson-orin-nano-" in r["engine"]["engine"]
    checks = {c["check"]: c["passed"] for c in doc["budgets"]}
    assert checks == {"max_energy_mj": False, "max_temp_c": True}
    assert any("jetson_clocks" in w for w in doc["warnings"])
    assert "warning: " in captured.err and "jetson_clocks" in captured.err
    assert workdir_empty(sshd)
    # second run: the engine comes from the device's cache
    with pytest.raises(SystemExit):
        main(args)
    again = json.loads(capsys.readouterr().out)
    assert again["results"][0]["engine"]["cached"] is True
    from mmdeploy.bench.report import markdown

    table = markdown(doc)
    assert "| GPU compute p50 ms |" in table and "not locked" in table and "MAXN_SUPER (2)" in table


@needs_ssh[0]
@needs_ssh[1]
def test_tensorrt_parse_failure_on_the_device(sshd, tmp_path, capsys):
    from mmdeploy.cli import main

    b = bundle(tmp_path / "m", {"vision": 1})
    targets = _jetson_cfg(sshd, tmp_path, TRTEXEC_REPLAY_FAIL="1")
    with pytest.raises(SystemExit) as exc:
        main(["bench", str(b), "--target", "jetson", "--targets-dir", str(targets), "--host",
              f"{sshd['user']}@127.0.0.1", "--iters", "5"])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "127.0.0.1" in err and "Invalid Node - Pad_13" in err
    assert "TensorRT 8.5.2 (trtexec) cannot build" in err and workdir_empty(sshd)
    assert not list((tmp_path / "device-home").rglob("*.plan"))  # no half-built engine cached
    assert os.environ.get("TRTEXEC_REPLAY_FAIL") is None
