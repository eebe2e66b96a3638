"""The edge side over gRPC, run as its own process by test_split_grpc.py: tritonclient.grpc and
KServe's gRPC server both register protobuf package ``inference`` and cannot share a process.

    python _grpc_edge.py api  URL TOKEN SPLIT_DIR     -> one JSON object of observations
    python _grpc_edge.py load URL TOKEN SPLIT_DIR N THREADS [--fallback]
                                                      -> "progress K" lines, then a JSON summary
"""

from __future__ import annotations

import json
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def api(url, token, split_dir):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    from mmdeploy.artifact import load_reference

    feeds, outputs = load_reference(f"{split_dir}/cloud")[0]
    cut, want = feeds["cut_0"], outputs["image_embeds"]
    c = grpcclient.InferenceServerClient(url)
    auth = {"authorization": f"Bearer {token}"}
    seen = {"live": c.is_server_live(), "ready": c.is_server_ready(),
            "model_ready": c.is_model_ready("vision_cloud", headers=auth),
            "metadata": c.get_model_metadata("vision_cloud", headers=auth, as_json=True)}

    def infer(data, headers=auth, model="vision_cloud", dtype="FP32", compression=None):
        t = grpcclient.InferInput("cut_0", list(data.shape), dtype)
        t.set_data_from_numpy(data)
        try:
            r = c.infer(model, [t], headers=headers, compression_algorithm=compression, client_timeout=30)
        except InferenceServerException as exc:
            return {"status": str(exc.status()), "message": exc.message()}
        return {"status": "OK", "max_error": float(np.abs(r.as_numpy("image_embeds") - want).max())}

    seen["infer"] = infer(cut)
    seen["infer_gzip"] = infer(cut, compression="gzip")
    seen["wrong_token"] = infer(cut, headers={"authorization": "Bearer wrong"})
    seen["no_token"] = infer(cut, headers=None)
    seen["wrong_dtype"] = infer(cut.astype(np.float64), dtype="FP64")
    seen["wrong_shape"] = infer(np.zeros((1, 17, 31), np.float32))
    seen["unknown_model"] = infer(cut, model="nope")
    seen["over_limit"] = infer(np.zeros((1024, 17, 32), np.float32))  # 2.2 MB > the 1 MiB limit
    try:
        c.get_model_metadata("vision_cloud", headers={"authorization": "Bearer wrong"})
        seen["metadata_wrong_token"] = "OK"
    except InferenceServerException as exc:
        seen["metadata_wrong_token"] = str(exc.status())
    seen["infer_after"] = infer(cut)
    print(json.dumps(seen))


def load(url, token, split_dir, n, threads, fallback):
    import threading

    from mmdeploy.artifact import load_reference
    from mmdeploy.split.hybrid import HybridRunner

    cases = load_reference(f"{split_dir}/full")
    runner = HybridRunner(split_dir, url, token=token or None, timeout=5, retries=1, cooldown=0.2,
                          fallback=fallback, grpc=True)
    lock, done, errors = threading.Lock(), [0], []

    def one(i):
        feeds, ref = cases[i % len(cases)]
        out, route = runner.run_with_route(feeds)
        if np.abs(out["image_embeds"] - ref["image_embeds"]).max() >= 1e-5:
            errors.append(i)
        with lock:
            done[0] += 1
            if done[0] % 50 == 0:
                print(f"progress {done[0]}", flush=True)
        return route

    with ThreadPoolExecutor(threads) as pool:
        routes = list(pool.map(one, range(n)))
    print(json.dumps({"routes": {r: routes.count(r) for r in set(routes)}, "wrong": len(errors),
                      "metrics": {k: v for k, v in runner.metrics().items() if k != "latency"}}), flush=True)


if __name__ == "__main__":
    mode, url, token, split_dir = sys.argv[1:5]
    if mode == "api":
        api(url, token, split_dir)
    else:
        load(url, token, split_dir, int(sys.argv[5]), int(sys.argv[6]), "--fallback" in sys.argv)
