"""`mmdeploy bench ARTIFACT... --target NAME`: latency, size, accuracy, budgets."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command("bench", no_args_is_help=True)(bench)


def bench(
    artifacts: Optional[List[Path]] = typer.Argument(
        None, help="convert/quantize output directories (every component is benched) or component directories"),
    target: str = typer.Option("cpu", "--target", "-t", help="target profile name (see --list-targets)"),
    targets_dir: Optional[List[Path]] = typer.Option(None, "--targets-dir", help="extra folder of target *.yaml profiles"),
    host: Optional[str] = typer.Option(None, "--host", help="user@address[:port] of a remote device (overrides the profile); a,b,c: each, in parallel"),
    device_python: Optional[str] = typer.Option(None, "--device-python", help="the device's python3 (with numpy and the runtime)"),
    identity: Optional[Path] = typer.Option(None, "--identity", help="SSH private key for the device (overrides identity_file)"),
    components: Optional[str] = typer.Option(None, "--components", help="comma-separated components to bench"),
    warmup: int = typer.Option(10, "--warmup", min=0, help="untimed runs before timing"),
    iters: int = typer.Option(100, "--iters", min=1, help="timed runs per component"),
    duration: Optional[float] = typer.Option(None, "--duration", help="seconds of timed runs per component (instead of --iters)"),
    batch: int = typer.Option(1, "--batch", min=1, help="batch size of the inputs (axis 0 of every input)"),
    sequence: Optional[int] = typer.Option(None, "--sequence", min=1, help="tokens per text input (axis 1 of "
                                           "input_ids / attention_mask; default: the reference input's length); "
                                           "the report states the shapes timed"),
    threads: Optional[int] = typer.Option(None, "--threads", help="runtime threads (default: the profile's)"),
    blocks: int = typer.Option(1, "--blocks", min=1, help="split timed runs into N blocks interleaved across artifacts"),
    accuracy: bool = typer.Option(False, "--accuracy", help="also measure the family's task metric"),
    accuracy_limit: Optional[int] = typer.Option(None, "--accuracy-limit", help="evaluate at most N samples"),
    eval_data: Optional[str] = typer.Option(None, "--eval", help="with --accuracy: your evaluation set "
                                            "(ImageFolder, image,caption pairs, builtin:NAME) instead of the built-in one"),
    estimate: bool = typer.Option(False, "--estimate", help="roofline ESTIMATE from FLOPs/bytes instead of running"),
    max_p50_ms: Optional[float] = typer.Option(None, "--max-p50-ms", help="budget: median latency in ms"),
    max_p90_ms: Optional[float] = typer.Option(None, "--max-p90-ms", help="budget: p90 latency in ms"),
    max_p99_ms: Optional[float] = typer.Option(None, "--max-p99-ms", help="budget: p99 latency in ms"),
    max_mean_ms: Optional[float] = typer.Option(None, "--max-mean-ms", help="budget: mean latency in ms"),
    max_size_mb: Optional[float] = typer.Option(None, "--max-size-mb", help="budget: model size in MB"),
    max_load_ms: Optional[float] = typer.Option(None, "--max-load-ms", help="budget: load time in ms"),
    max_energy_mj: Optional[float] = typer.Option(None, "--max-energy-mj", help="energy per inference (Jetson, tegrastats)"),
    max_temp_c: Optional[float] = typer.Option(None, "--max-temp-c", help="peak temperature during the run (Jetson)"),
    max_accuracy_drop: Optional[float] = typer.Option(None, "--max-accuracy-drop", help="points vs the reference"),
    budget: Optional[Path] = typer.Option(None, "--budget", help="YAML budgets file (docs/budgets.md)"),
    baseline: Optional[Path] = typer.Option(None, "--baseline", help="compare with a stored bench JSON"),
    save_baseline: Optional[Path] = typer.Option(None, "--save-baseline", help="write this run's JSON as a baseline"),
    junit: Optional[Path] = typer.Option(None, "--junit", help="write JUnit XML (one testcase per budget)"),
    report: Optional[Path] = typer.Option(None, "--report", "--output", help="write report.md, report.html, results.json (+ junit.xml) here"),
    json_out: bool = typer.Option(False, "--json", help="print the JSON document (schema mmdeploy.bench v1)"),
    list_targets: bool = typer.Option(False, "--list-targets", help="list target profiles and exit"),
    force: bool = typer.Option(False, "--force", help="bench artifacts whose files changed since written"),
):
    """Benchmark artifacts on a target; exit 0 when all budgets hold, 1 when one fails, 2 on bad input."""
    from mmdeploy.cli._common import console, print_json, quiet, split_list
    from mmdeploy.errors import BudgetExceeded, InputError

    from mmdeploy import targets as tg

    if list_targets:
        profiles = tg.list_targets(targets_dir)
        if json_out:
            print_json({n: p.model_dump() for n, p in profiles.items()})
        else:
            for name, p in sorted(profiles.items()):
                where = f"ssh {p.host or '<host not set>'}" if p.remote else "local"
                typer.echo(f"{name:<18} {p.backend:<12} {p.precision:<5} {where:<24} {p.description}")
        return
    if not artifacts:
        raise InputError("no artifact given", "pass a directory written by `mmdeploy convert` or `quantize`")

    from mmdeploy.bench import BenchSettings, bench as run_bench, gate
    from mmdeploy.bench import budgets as bd
    from mmdeploy.bench import report as rp

    from mmdeploy.artifact import ensure_unmodified

    for path in artifacts:
        ensure_unmodified(path, force, log=lambda msg: typer.echo(msg, err=True))
    profile = tg.get_target(target, targets_dir, host=host, python=device_python, identity=identity)
    settings = BenchSettings(warmup=warmup, iters=None if duration else iters, duration=duration, batch=batch,
                             sequence=sequence,
                             threads=threads, blocks=blocks, accuracy=accuracy, accuracy_limit=accuracy_limit,
                             eval_data=eval_data)
    if eval_data and not accuracy:
        raise InputError("--eval needs --accuracy", "add --accuracy")
    scorer = None
    if eval_data:
        from mmdeploy.stages.eval import scorer as make_scorer

        scorer = make_scorer(eval_data, limit=accuracy_limit)
    budgets = bd.load_budgets(budget) if budget else bd.BudgetFile()
    quick = bd.quick_rules(max_p50_ms=max_p50_ms, max_p90_ms=max_p90_ms, max_p99_ms=max_p99_ms,
                           max_mean_ms=max_mean_ms, max_size_mb=max_size_mb, max_load_ms=max_load_ms,
                           max_energy_mj=max_energy_mj, max_temp_c=max_temp_c,
                           max_accuracy_drop_pts=max_accuracy_drop)
    budgets.budgets += quick.budgets
    if any(r.max_accuracy_drop_pts is not None for r in budgets.budgets) and not accuracy:
        raise InputError("an accuracy budget needs --accuracy", "add --accuracy")
    base = bd.load_baseline(baseline) if baseline else None

    with quiet(report, json_out=True):  # runtimes' notices go to the log
        progress_cb, progress_ctx = None, None
        if console(stderr=True).is_terminal and not estimate:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

            progress_ctx = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                    console=console(stderr=True), transient=True)
            tasks: dict[str, int] = {}

            def progress_cb(label: str, n: int, total: int) -> None:
                if label not in tasks:
                    tasks[label] = progress_ctx.add_task(label, total=total or None)
                progress_ctx.advance(tasks[label], n)

        if progress_ctx:
            with progress_ctx:
                doc = run_bench(artifacts, settings, profile, components=split_list(components),
                                estimate=estimate, progress=progress_cb, scorer=scorer)
        else:
            doc = run_bench(artifacts, settings, profile, components=split_list(components), estimate=estimate,
                            scorer=scorer)
    checks = gate(doc, budgets, base)

    if save_baseline:
        rp.write_json(doc, save_baseline)
    if junit:
        rp.write_junit(doc, junit)
    if report:
        rp.write_report(doc, report)
    failed = [c for c in checks if not c["passed"]]
    error = None
    if failed:
        first = failed[0]
        error = BudgetExceeded(f"{len(failed)} of {len(checks)} budget(s) failed; first: {first['where']} "
                               f"{first['check']}: {first['message']}",
                               "see the budgets table" + (f" and {junit}" if junit else ""))
    if json_out:  # one JSON object on stdout: a failed gate is the document's "error", not a second object
        if error is not None:
            doc["error"] = {"type": "BudgetExceeded", "message": error.message, "hint": error.hint,
                            "exit_code": error.exit_code}
        print_json(doc)
    else:
        typer.echo(rp.markdown(doc))
    for warning in doc.get("warnings") or []:
        typer.echo(f"warning: {warning}", err=True)
    if error is not None:
        if json_out:
            typer.echo(f"error: {error.one_line()}", err=True)
            raise typer.Exit(error.exit_code)
        raise error
