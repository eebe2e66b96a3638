"""Serving throughput and tail latency: `mmdeploy serve` (KServe's model server) over REST and gRPC,
against the hand-written standard-library server it replaced, at 1 / 8 / 32 concurrent clients.

Model: the cloud half of a CLIP ViT-B/32-shaped image tower (``--layers`` blocks, random weights:
fine for latency) split after block 0, so every request carries the real cut tensor
(1 x 50 x 768 fp32 = 153,600 bytes at 224 px) and runs the rest of the tower.

All three servers run in their own processes on loopback, each with the same ONNX Runtime threads
(``--threads``) and 4 model slots; the clients are Triton's official ``tritonclient`` (HTTP with
the binary-data extension for REST and for the old server, gRPC for gRPC), one client per thread,
in a separate process.  The old server is taken from git history (``--old-rev``, by default the
parent of the commit that deleted ``mmdeploy/split/protocol.py``) into a temporary package.
Each (server, concurrency) pair sends ``--requests`` after ``--warmup``; targets alternate within
each concurrency level so load drift hits all of them alike.

    python benchmarks/serve_throughput.py --out benchmarks/results/serve_throughput
    python benchmarks/serve_throughput.py --requests 100 --concurrency 1,8   # quick

Timings on a shared CPU are noisy: compare the ratios within one run; the CPU model, flags and
load are recorded with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_split(work: Path, layers: int, image_size: int) -> Path:
    sys.path.insert(0, str(Path(__file__).parent))
    from split_planner import build_component

    from mmdeploy.split.build import split_component

    out = work / f"split-b32-l{layers}-{image_size}"
    if not (out / "manifest.json").is_file():
        split_component(build_component(work, layers, image_size), out, at="block:0")
    return out


def old_server_package(rev: str | None, into: Path) -> tuple[Path, str]:
    """The pre-KServe server.py + protocol.py from git history, as package ``oldserve``."""
    if rev is None:
        deleted = subprocess.run(["git", "rev-list", "-n", "1", "HEAD", "--", "mmdeploy/split/protocol.py"],
                                 cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        rev = f"{deleted}^"
    pkg = into / "oldserve"
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text("")
    for name in ("server", "protocol"):
        text = subprocess.run(["git", "show", f"{rev}:mmdeploy/split/{name}.py"], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout
        (pkg / f"{name}.py").write_text(text.replace("mmdeploy.split.protocol", "oldserve.protocol"))
    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT, capture_output=True, text=True).stdout
    return into, commit.strip()


def start(cmd: list[str], env: dict, pattern: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    line = proc.stdout.readline()
    if not re.search(pattern, line):
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r} {proc.stderr.read()[-2000:]}")
    return proc, line


# ------------------------------------------------------------------------------- client process
def client_main(kind: str, address: str, split_dir: str, concurrency: int, requests: int, warmup: int) -> dict:
    from mmdeploy.artifact import load_reference

    feeds, _ = load_reference(Path(split_dir) / "cloud")[0]
    cut = np.ascontiguousarray(feeds["cut_0"])
    name = json.loads((Path(split_dir) / "manifest.json").read_text())["metadata"]["model_name"]
    if kind == "grpc":
        import tritonclient.grpc as tc
    else:
        import tritonclient.http as tc

    def make():
        return tc.InferenceServerClient(address) if kind == "grpc" else \
            tc.InferenceServerClient(address, network_timeout=60, connection_timeout=60)

    def once(client):
        t = tc.InferInput("cut_0", list(cut.shape), "FP32")
        t.set_data_from_numpy(cut)
        outputs = [tc.InferRequestedOutput("image_embeds")] if kind == "grpc" else \
            [tc.InferRequestedOutput("image_embeds", binary_data=True)]
        return client.infer(name, [t], outputs=outputs).as_numpy("image_embeds")

    per = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(concurrency + 1)

    def worker(n):
        client = make()
        for _ in range(max(1, warmup // concurrency)):
            once(client)
        barrier.wait()
        mine = []
        for _ in range(n):
            t0 = time.perf_counter()
            try:
                once(client)
            except Exception:  # noqa: BLE001 - counted
                with lock:
                    errors[0] += 1
                continue
            mine.append((time.perf_counter() - t0) * 1e3)
        with lock:
            latencies.extend(mine)
        client.close()

    threads = [threading.Thread(target=worker, args=(n,)) for n in per]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join(600)
    wall = time.perf_counter() - t0
    arr = np.asarray(latencies)
    return {"kind": kind, "concurrency": concurrency, "requests": requests, "answered": len(latencies),
            "errors": errors[0], "seconds": wall, "throughput_rps": len(latencies) / wall,
            "p50_ms": float(np.percentile(arr, 50)), "p99_ms": float(np.percentile(arr, 99))}


# ------------------------------------------------------------------------------- driver
def machine() -> dict:
    flags = ""
    model = "unknown"
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = re.search(r"Model name:\s*(.*)", text).group(1).strip()
        flags = re.search(r"Flags:\s*(.*)", text).group(1)
    except (OSError, AttributeError):
        pass
    wanted = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8") if f in flags.split()]
    return {"cpu": model, "flags": wanted, "cores": os.cpu_count(),
            "load": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--concurrency", default="1,8,32")
    ap.add_argument("--requests", type=int, default=400)
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads per server")
    ap.add_argument("--old-rev", default=None)
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mmdeploy-serve-bench")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--client", nargs=4, metavar=("KIND", "ADDRESS", "SPLIT", "CONCURRENCY"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        kind, address, split_dir, conc = args.client
        print(json.dumps(client_main(kind, address, split_dir, int(conc), args.requests, args.warmup)))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    split_dir = build_split(args.work, args.layers, args.image_size)
    old_root, old_commit = old_server_package(args.old_rev, args.work / "old")
    env = dict(os.environ, PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    port, grpc_port, old_port = _free_port(), _free_port(), _free_port()
    servers = []
    try:
        new, _ = start([sys.executable, "-m", "mmdeploy", "serve", str(split_dir), "--port", str(port),
                        "--grpc-port", str(grpc_port), "--threads", str(args.threads), "--concurrency", "4"],
                       env, r"serving")
        servers.append(new)
        old_env = dict(env, PYTHONPATH=os.pathsep.join([str(old_root), env["PYTHONPATH"]]))
        old, _ = start([sys.executable, "-c",
                        "import sys; from oldserve.server import make_server; "
                        f"s = make_server({str(split_dir)!r}, port={old_port}, max_concurrency=4, "
                        f"threads={args.threads}); print('serving', flush=True); s.serve_forever()"],
                       old_env, r"serving")
        servers.append(old)
        targets = {"REST (kserve)": ("http", f"127.0.0.1:{port}"), "gRPC (kserve)": ("grpc", f"127.0.0.1:{grpc_port}"),
                   "old http.server": ("http", f"127.0.0.1:{old_port}")}
        rows = []
        for conc in [int(c) for c in args.concurrency.split(",")]:
            for label, (kind, address) in targets.items():
                cmd = [sys.executable, __file__, "--client", kind, address, str(split_dir), str(conc),
                       "--requests", str(args.requests), "--warmup", str(args.warmup)]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
                if proc.returncode != 0:
                    raise RuntimeError(proc.stderr[-2000:])
                row = {"server": label, **json.loads(proc.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(f"{label:<16} c={conc:<3} {row['throughput_rps']:8.1f} req/s  p50 {row['p50_ms']:7.2f} ms  "
                      f"p99 {row['p99_ms']:7.2f} ms  errors {row['errors']}", flush=True)
    finally:
        for proc in servers:
            proc.terminate()
        for proc in servers:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    doc = {"machine": machine(), "old_server_rev": old_commit, "model": split_dir.name,
           "bytes_per_request": int(json.loads((split_dir / "manifest.json").read_text())["metadata"]
                                    ["bytes_per_inference"]),
           "settings": {k: v for k, v in vars(args).items() if k in ("layers", "image_size", "requests", "warmup",
                                                                      "threads", "concurrency")}, "rows": rows}
    table = ["| server | clients | req/s | p50 ms | p99 ms | errors |", "|---|---:|---:|---:|---:|---:|"]
    table += [f"| {r['server']} | {r['concurrency']} | {r['throughput_rps']:.1f} | {r['p50_ms']:.2f} | "
              f"{r['p99_ms']:.2f} | {r['errors']} |" for r in rows]
    print("\n".join(table))
    print(json.dumps(doc["machine"]))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "serve_throughput.json").write_text(json.dumps(doc, indent=2))
        (args.out / "serve_throughput.md").write_text("\n".join(table) + "\n\n" + json.dumps(doc["machine"]) + "\n")


if __name__ == "__main__":
    main()
