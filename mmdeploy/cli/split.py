"""`mmdeploy split`, `mmdeploy serve`, `mmdeploy infer-split`: split computing (thin CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mmdeploy.cli._common import console, print_json, print_table, quiet, split_list

DEFAULT_SWEEP = "1,5,20,100,1000"


def _console(stderr: bool = False):
    out = console(stderr=stderr)
    out.soft_wrap = True  # long tensor names stay on one line
    return out


def _plan_inputs(artifact, component, edge, cloud, compress, runs, save_profiles):
    from mmdeploy.split import planner

    return planner.plan_for_component(artifact, component, edge, cloud, compress=compress, runs=runs,
                                      save_profiles=save_profiles)


def _print_plan(result: dict, title: str) -> None:
    from rich.table import Table

    table = Table(title=title)
    for col in ("strategy", "cut", "bytes", "edge ms", "link ms", "cloud ms", "total ms"):
        table.add_column(col, justify="left" if col in ("strategy", "cut") else "right")
    for r in result["rows"]:
        mark = " ◀" if r is result["choice"] else ""
        table.add_row(r["strategy"] + mark, r["at"] or "-", f"{r['bytes']:,}", f"{r['edge_ms']:.2f}",
                      f"{r['link_ms']:.2f}", f"{r['cloud_ms']:.2f}", f"{r['total_ms']:.2f}")
    out = _console()
    print_table(table, out)
    for role in ("edge", "cloud"):
        p = result[role]
        out.print(f"{role}: {p['target']} ({p['kind']})")
    choice = result["choice"]
    out.print(f"choice: {choice['at'] or choice['strategy']} ({choice['total_ms']:.2f} ms)")


def split_command(
    artifact: Path = typer.Argument(..., help="A `mmdeploy convert` output (or one ONNX component directory)."),
    component: Optional[str] = typer.Option(None, "--component", "-c", help="Component to split, e.g. vision."),
    at: Optional[str] = typer.Option(None, "--at", help="block:K, a tensor name (comma-separated for several), "
                                     "cloud (the whole component served remotely) or auto (the planner's best cut)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Split directory to write (or the sweep report)."),
    compress: str = typer.Option("none", "--compress", help="Compress the cut tensors: none, fp16 or int8."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name for serve/Triton (default COMPONENT_cloud)."),
    plan: bool = typer.Option(False, "--plan", help="Only print the planner's table and choice."),
    list_blocks: bool = typer.Option(False, "--list", help="List the valid cuts (blocks) and what crosses them."),
    bandwidth: str = typer.Option("20Mbps", "--bandwidth", help="Link bandwidth, e.g. 20Mbps."),
    rtt: str = typer.Option("20ms", "--rtt", help="Round-trip time, e.g. 20ms."),
    edge: str = typer.Option("cpu-1t", "--edge", help="Edge target: cpu-Nt (measured here), a profile .json, "
                             "or a target profile (cpu; rpi5, jetson-orin-nano... are estimated)."),
    cloud: str = typer.Option("cpu-2t", "--cloud", help="Cloud target (same forms as --edge)."),
    runs: int = typer.Option(10, "--runs", help="Timed runs per segment when profiling."),
    save_profiles: Optional[Path] = typer.Option(None, "--save-profiles", help="Write edge.json/cloud.json here."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help=f"Bandwidths in Mbps ('{DEFAULT_SWEEP}'): write "
                                        "sweep.md/.json/.png into --output."),
    processor: Optional[Path] = typer.Option(None, "--processor", metavar="DIR",
                                             help="Tokenizer / image processor / feature extractor from this "
                                             "folder (for the task check of a bundle converted without them)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Cut one component into edge and cloud halves (plus a Triton repository for the cloud half)."""
    from mmdeploy.errors import InputError
    from mmdeploy.split import planner

    if list_blocks:
        _list(artifact, component, json_out)
        return
    if sweep is not None:
        if output is None:
            raise InputError("--sweep needs --output DIR for its table and plot", "add --output sweep-report")
        try:
            bandwidths = [float(b) for b in split_list(sweep or DEFAULT_SWEEP)]
        except ValueError:
            raise InputError(f"--sweep {sweep!r} is not a list of numbers", f"e.g. --sweep {DEFAULT_SWEEP}") from None
        _sweep(artifact, component, edge, cloud, compress, runs, save_profiles, bandwidths,
               planner.parse_ms(rtt), output, json_out)
        return
    bw, rtt_ms = planner.parse_bandwidth(bandwidth), planner.parse_ms(rtt)
    chosen = None
    if plan or (at or "").strip() == "auto":
        inputs = _plan_inputs(artifact, component, edge, cloud, compress, runs, save_profiles)
        chosen = planner.plan(inputs["edge"], inputs["cloud"], inputs["cut_bytes"], inputs["input_bytes"],
                              inputs["output_bytes"], bw, rtt_ms)
        chosen["edge"], chosen["cloud"] = inputs["edge"].model_dump(), inputs["cloud"].model_dump()
        if plan:
            if json_out:
                print_json(chosen)
            else:
                _print_plan(chosen, f"split plan: {inputs['component']} at {bandwidth}, rtt {rtt}")
            return
        at = chosen["best_split"]["at"]
        if not json_out:
            _print_plan(chosen, f"split plan: {inputs['component']} at {bandwidth}, rtt {rtt}")
            if chosen["choice"]["strategy"] != "split":
                _console(stderr=True).print(f"note: {chosen['choice']['strategy']} would be faster "
                                           f"({chosen['choice']['total_ms']:.1f} ms); splitting at the best cut {at}")
    if not at:
        raise InputError("--at is required", "pass --at block:K, a tensor name or auto (see --list)")
    if output is None:
        raise InputError("--output is required", "pass --output DIR for the split directory")
    from mmdeploy.split.build import split_component

    with quiet(output, json_out=True):
        manifest = split_component(artifact, output, component=component, at=at, compress=compress, name=name,
                                   processor=processor,
                                   plan=chosen and {k: chosen[k] for k in ("bandwidth_mbps", "rtt_ms", "choice",
                                                                           "best_split", "estimated")})
    meta = manifest.metadata
    if json_out:
        print_json({"output": str(output), "metadata": meta, "parity": manifest.parity})
        return
    out = _console()
    cut = meta["cut"]
    out.print(f"split {meta['component']} at {at}: {len(cut['crossing'])} tensor(s) cross, "
              f"{meta['bytes_per_inference']:,} bytes per inference"
              + (f" ({meta['compression']}, {meta['bytes_uncompressed']:,} uncompressed)"
                 if meta["compression"] != "none" else ""))
    for c in cut["crossing"]:
        out.print(f"  {c['name']:<10} {c['dtype']:<8} {c['shape']}  ← {c['tensor']} ({c['source']})")
    for label in ("vs_unsplit", "vs_reference"):
        for oname, m in manifest.parity.get(label, {}).get("outputs", {}).items():
            out.print(f"  {label}: {oname} max_abs {m['max_abs']:.3e} cosine {m['cosine']:.6f}")
    task = manifest.parity.get("task")
    if task and "skipped" not in task:
        out.print(f"  task {task['metric']} on {task['n']} samples: split {task['split']:.1%}, "
                  f"unsplit {task['unsplit']:.1%}, agreement {task['agreement']:.1%}")
    elif task:
        out.print(f"  task metric skipped: {task['skipped']}")
    out.print(f"wrote {output} (edge/, cloud/, full/, triton/{meta['model_name']}/, kserve-triton.yaml, "
              "kserve-mmdeploy.yaml, Dockerfile)")


def _list(artifact, component, json_out):
    import onnx

    from mmdeploy.split import partition

    comp_dir, comp = partition.load_component(artifact, component)
    graph = partition.Graph(onnx.load(str(comp_dir / comp.metadata.get("model_file", "model.onnx")),
                                      load_external_data=False))
    rows = []
    for b in partition.blocks(graph):
        cut = partition.analyse_cut(graph, [b.tensor])
        rows.append({"at": f"block:{b.index}", "scope": b.scope, "tensor": b.tensor, "crossing": cut.crossing,
                     "shapes": [graph.spec(t)["shape"] for t in cut.crossing]})
    if json_out:
        print_json(rows)
        return
    out = _console()
    for r in rows:
        out.print(f"{r['at']:<10} {r['tensor']}  crossing: " + ", ".join(
            f"{t} {s}" for t, s in zip(r["crossing"], r["shapes"])))


def _sweep(artifact, component, edge, cloud, compress, runs, save_profiles, bandwidths, rtt_ms, output, json_out):
    import json

    from mmdeploy.artifact import atomic_output, check_output
    from mmdeploy.split import planner

    check_output(output)  # before the profiling
    inputs = _plan_inputs(artifact, component, edge, cloud, compress, runs, save_profiles)
    rows = planner.sweep(inputs["edge"], inputs["cloud"], inputs["cut_bytes"], inputs["input_bytes"],
                         inputs["output_bytes"], bandwidths, rtt_ms)
    labels = {r: f"{inputs[r].target} ({inputs[r].kind})" for r in ("edge", "cloud")}
    title = f"{inputs['component']}: edge {labels['edge']}, cloud {labels['cloud']}, rtt {rtt_ms:g} ms"
    with atomic_output(output) as tmp:
        (tmp / "sweep.md").write_text(planner.sweep_markdown(rows, title))
        (tmp / "sweep.json").write_text(json.dumps({"title": title, "rows": rows,
                                                    "edge": inputs["edge"].model_dump(),
                                                    "cloud": inputs["cloud"].model_dump()}, indent=2))
        planner.sweep_plot(rows, tmp / "sweep.png", title)
    if json_out:
        print_json({"output": str(output), "rows": rows})
    else:
        print(planner.sweep_markdown(rows, title))
        print(f"wrote {output}/sweep.md, sweep.json, sweep.png")


def serve_command(
    artifacts: list[Path] = typer.Argument(..., metavar="PATH...", help="Directories written by `mmdeploy split` "
                                           "and/or ONNX component artifacts (e.g. BUNDLE/text_decoder), each "
                                           "served as one model."),
    port: int = typer.Option(8000, "--port", metavar="PORT", help="REST port (0 picks a free one)."),
    grpc_port: int = typer.Option(8001, "--grpc-port", metavar="PORT", help="gRPC port (0 picks a free one; "
                                  "-1 turns gRPC off)."),
    host: str = typer.Option("127.0.0.1", "--host", metavar="HOST",
                             help="Address to bind (127.0.0.1 unless you mean it)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="MMDEPLOY_SERVE_TOKEN", metavar="TOKEN",
                                        help="Require 'Authorization: Bearer TOKEN' (or MMDEPLOY_SERVE_TOKEN)."),
    max_request_mb: float = typer.Option(64.0, "--max-request-mb", metavar="MB",
                                         help="Largest request body accepted (after inflating gzip/deflate)."),
    concurrency: int = typer.Option(4, "--concurrency", metavar="N", help="Requests running one model at once."),
    workers: int = typer.Option(1, "--workers", metavar="N", help="REST worker processes (uvicorn)."),
    threads: Optional[int] = typer.Option(None, "--threads", metavar="N", help="ONNX Runtime intra-op threads."),
    export: Optional[Path] = typer.Option(None, "--export", metavar="DIR", help="Write deployment files "
                                          "(Triton repository, KServe InferenceService manifests, Dockerfile) "
                                          "for these artifacts into DIR, and exit."),
    verbose: bool = typer.Option(False, "--verbose", help="Log every request."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output (with --export)."),
):
    """Serve models over the Open Inference Protocol (KServe's model server: REST and gRPC)."""
    import sys

    if export is not None:
        from mmdeploy.split.server import export_deployment

        written = export_deployment(artifacts, export)
        if json_out:
            print_json(written)
        else:
            _console().print(f"wrote {export}: " + ", ".join(written["files"]))
        return
    from mmdeploy.split.server import make_server

    server = make_server(artifacts, host=host, port=port, grpc_port=None if grpc_port < 0 else grpc_port,
                         token=token, max_request_bytes=int(max_request_mb * (1 << 20)),
                         max_concurrency=concurrency, threads=threads, verbose=verbose, workers=workers)
    if host not in ("127.0.0.1", "localhost", "::1") and not server.token:
        print(f"warning: listening on {host} without a token: anyone who can reach it can run the model "
              "(pass --token or set MMDEPLOY_SERVE_TOKEN)", file=sys.stderr)
    names = ", ".join(a.name for a in server.artifacts)
    server.serve_forever(on_start=lambda: print(
        f"serving {names} at {server.url}/v2/models/<name>" + (f" and gRPC {server.grpc_url}" if server.grpc_url
                                                               else "")
        + (" (bearer token required)" if server.token else ""), flush=True))
    print("stopped", file=sys.stderr)


def infer_split_command(
    split_dir: Path = typer.Argument(..., help="A directory written by `mmdeploy split`, or one ONNX "
                                     "component artifact (e.g. BUNDLE/text_decoder) served whole."),
    input_file: Path = typer.Argument(..., metavar="INPUT", help="Inputs: .npz (named), .npy (the single "
                                      "input), or an image (preprocessed here with the bundle's processor)."),
    server: str = typer.Option(..., "--server", help="Server URL, e.g. http://127.0.0.1:8000 (with --grpc: "
                               "127.0.0.1:8001)."),
    grpc: bool = typer.Option(False, "--grpc", help="Talk gRPC instead of HTTP."),
    token: Optional[str] = typer.Option(None, "--token", envvar="MMDEPLOY_SERVE_TOKEN", help="Bearer token."),
    timeout: float = typer.Option(2.0, "--timeout", help="Per-request timeout (s)."),
    retries: int = typer.Option(1, "--retries", help="Retries before falling back."),
    no_fallback: bool = typer.Option(False, "--no-fallback", help="Fail instead of running the whole model locally."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Write the outputs to this .npz file."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
):
    """Run the edge half here and the cloud half on the server (falling back to local)."""
    import numpy as np

    from mmdeploy.backends.base import check_feeds
    from mmdeploy.errors import InputError
    from mmdeploy.split.hybrid import HybridRunner

    runner = HybridRunner(split_dir, server, token=token, timeout=timeout, retries=retries,
                          fallback=not no_fallback, grpc=grpc)
    feeds = _image_feeds(input_file, runner) if input_file.suffix.lower() in _image_suffixes() else \
        _read_inputs(input_file, runner.input_names)
    missing = [n for n in runner.input_names if n not in feeds]
    if missing:
        raise InputError(f"{input_file} lacks input {missing[0]!r}", "inputs: " + ", ".join(runner.input_names))
    try:
        check_feeds(runner.manifest.inputs, feeds, runner.limits)
    except InputError as exc:
        raise InputError(f"{input_file}: {exc.message}", exc.hint) from None
    outputs, route = runner.run_with_route(feeds)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        np.savez(output, **outputs)
    metrics = runner.metrics()
    if json_out:
        print_json({"route": route, "metrics": metrics,
                    "outputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in outputs.items()}})
        return
    out = _console()
    for k, v in outputs.items():
        out.print(f"{k}: shape {list(v.shape)} {v.dtype}  first values {np.round(v.reshape(-1)[:4], 5).tolist()}")
    lat = metrics["latency"]
    parts = ", ".join(f"{p} {lat[p]['mean_ms']:.2f} ms" for p in ("edge", "remote", "fallback") if p in lat)
    out.print(f"route: {route} ({parts})" + (f"; cloud error: {metrics['last_error']}" if route == "fallback" else ""))


def _image_suffixes() -> set[str]:
    from mmdeploy.data.media import IMAGE_SUFFIXES

    return IMAGE_SUFFIXES


def _image_feeds(path: Path, runner) -> dict:
    """An image file preprocessed here, on the edge, with the processor of the bundle the split
    was cut from (its preprocess files), as the image tower expects it."""
    from mmdeploy.artifact import bundle_dir
    from mmdeploy.data.media import decode_image
    from mmdeploy.errors import InputError
    from mmdeploy.models import adapter_for_bundle

    if not path.is_file():
        raise InputError(f"{path} does not exist", "pass an image, an .npz of named inputs or an .npy")
    origin = (runner.manifest.parent or {}).get("path")
    bundle = bundle_dir(origin) if origin and Path(origin).exists() else None
    adapter = adapter_for_bundle(bundle) if bundle else None
    preprocess = getattr(adapter, "image_feeds", None) or getattr(adapter, "pixel_values", None)
    if preprocess is None:
        raise InputError(f"{path} is an image, but the bundle {runner.dir} was split from "
                         f"({origin or 'unknown'}) is not here to preprocess it",
                         "pass the preprocessed inputs as an .npz instead")
    return preprocess([decode_image(path)])


def _read_inputs(path: Path, names: list[str]):
    import numpy as np

    from mmdeploy.errors import InputError

    if not path.is_file():
        raise InputError(f"{path} does not exist", "pass an .npz of named inputs or an .npy")
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        if path.suffix == ".npy":
            if len(names) != 1:
                raise InputError(f"the model takes {len(names)} inputs ({', '.join(names)})",
                                 "pass them by name in an .npz")
            return {names[0]: np.load(path, allow_pickle=False)}
    except (ValueError, OSError) as exc:
        raise InputError(f"cannot read {path} ({exc.__class__.__name__})", "pass a numpy .npz/.npy file") from None
    raise InputError(f"{path}: unsupported input file type",
                     "pass an .npz of named inputs or an .npy (preprocess images first)")


def register(app: typer.Typer) -> None:
    app.command("split")(split_command)
    app.command("serve")(serve_command)
    app.command("infer-split")(infer_split_command)
