"""Reports of a bench document: JSON (the versioned schema), Markdown, JUnit XML, HTML.

The JSON document is the source of truth (``schema: mmdeploy.bench``, ``schema_version: 1``,
documented in ``docs/bench-json-schema.md``); every other form is rendered from it.  Estimates
are labelled ESTIMATE in every form.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from xml.etree import ElementTree as ET


def _estimate(doc: dict) -> bool:
    return doc.get("kind") == "estimate"


def _target(doc: dict) -> str:
    return (doc.get("target") or {}).get("name") or "local"


def write_json(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    tmp.replace(path)
    return path


def markdown(doc: dict) -> str:
    """A Markdown report for a pull-request comment."""
    m = doc.get("machine") or {}
    est = _estimate(doc)
    title = "ESTIMATE (roofline, not measured)" if est else "Benchmark"
    lines = [f"### mmdeploy {title}: target `{_target(doc)}`", ""]
    remote = doc.get("remote")
    s = doc.get("settings", {})
    if est:  # nothing ran: no machine, no thread count to report
        lines.append(f"Nothing ran: FLOPs and bytes of the graph against each target profile's peak figures, "
                     f"plus its per-inference launch overhead; batch {s.get('batch')}.")
    else:
        where = f"{remote['host']} (ssh)" if remote else m.get("hostname", "?")
        lines.append(f"Machine: {where}, {m.get('cpu_model', '?')}, {m.get('cpu_affinity', '?')}/"
                     f"{m.get('cpu_count', '?')} CPUs, governor {m.get('governor', '?')}, load {m.get('loadavg', '?')}")
        lines.append(f"Settings: batch {s.get('batch')}"
                     + (f", sequence {s['sequence']} tokens" if s.get("sequence") else "")
                     + f", threads {s.get('threads') or 'default'}, warmup "
                     f"{s.get('warmup')}, {'%ss' % s['duration'] if s.get('duration') else '%s iters' % s.get('iters')}"
                     f", {s.get('blocks', 1)} block(s)")
    lines.append("")
    if est:
        lines += ["| artifact | component | target | ESTIMATE p50 ms | GFLOP | weights MB | launch ms | bound |",
                  "|---|---|---|---:|---:|---:|---:|---|"]
        for r in doc["results"]:
            lines.append(f"| {r['artifact']} | {r['component']} | {r.get('board') or _target(doc)} | "
                         f"{r['p50_ms']:.3f} (ESTIMATE) | {r['gflops']:.3f} | {r['weight_mb']:.2f} | "
                         f"{r.get('launch_overhead_ms', 0):.3f} | {r['bound']} |")
        notes = [r["estimate_note"] for r in doc["results"] if r.get("estimate_note")]
        if notes:
            lines += [""] + [f"- {n}" for n in dict.fromkeys(notes)]
    else:
        first = doc["results"][0]["artifact"] if doc["results"] else None
        speedups = speedup_vs_first(doc["results"])
        isolated = all(r.get("peak_rss_scope") == "artifact" for r in doc["results"])
        rss = "peak RSS MB (own process)" if isolated else "peak RSS MB (whole bench process so far)"
        formats = {r["format"] for r in doc["results"] if r["artifact"] == first}
        if len(formats) > 1:  # several runtimes per component: the reference is the first row's format
            first = f"{first} {doc['results'][0]['format']}"
        lines += [f"| artifact | component | format | p50 ms | speed-up vs {first} | p90 ms | p99 ms | "
                  f"mean ± std ms | per s | load ms | first ms | size MB | {rss} |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r, up in zip(doc["results"], speedups):
            lines.append(
                f"| {r['artifact']} | {r['component']} | {r['format']}/{r['precision']} | {r['p50_ms']:.3f} | "
                f"{'–' if up is None else f'{up:.2f}x'} | "
                f"{r['p90_ms']:.3f} | {r['p99_ms']:.3f} | {r['mean_ms']:.3f} ± {_num(r.get('std_ms'), '.3f')} | "
                f"{r['throughput_per_s']:.1f} | {_num(r.get('load_ms'))} | {_num(r.get('first_inference_ms'))} | "
                f"{r['size_mb']:.2f} | {_num(r.get('peak_rss_mb'), '.0f')} |")
        if not isolated:
            lines += ["", "Peak RSS is the bench process's peak so far: it includes the artifacts loaded "
                      "before each row, not that artifact alone."]
        lines += shape_lines(doc["results"])
    lines += device_lines(doc)
    acc = [a for a in doc.get("accuracy", [])]
    if acc:
        lines += ["", "| artifact | metric | value | reference | drop (pts) |", "|---|---|---:|---:|---:|"]
        for a in acc:
            if a.get("value") is None:
                lines.append(f"| {a['artifact']} | – | – | – | {a.get('message', '')} |")
            else:
                ref = "–" if a.get("reference") is None else f"{a['reference'] * 100:.2f} %"
                drop = "–" if a.get("drop_pts") is None else f"{a['drop_pts']:.2f}"
                lines.append(f"| {a['artifact']} | {a['metric']} (n={a['n']}) | {a['value'] * 100:.2f} % | {ref} | {drop} |")
    if doc.get("budgets"):
        ok = sum(c["passed"] for c in doc["budgets"])
        lines += ["", f"**Budgets: {ok}/{len(doc['budgets'])} hold — {'PASS' if doc['passed'] else 'FAIL'}**", "",
                  "| | budget | where | check | result |", "|---|---|---|---|---|"]
        for c in doc["budgets"]:
            lines.append(f"| {'PASS' if c['passed'] else 'FAIL'} | {c['name']} | {c['where']} | {c['check']} | {c['message']} |")
    return "\n".join(lines) + "\n"


def shape_lines(results: list[dict]) -> list[str]:
    """What was timed: each component's input shapes (once per distinct set), and where they came from."""
    seen: dict[tuple, list[str]] = {}
    for r in results:
        if not r.get("shapes"):
            continue
        key = (r["component"], tuple((k, tuple(v)) for k, v in r["shapes"].items()), r.get("input_source"))
        seen.setdefault(key, []).append(r["artifact"])
    if not seen:
        return []
    lines = ["", "Shapes timed:"]
    for (component, shapes, source), artifacts in seen.items():
        text = ", ".join(f"{name} [{', '.join(map(str, dims))}]" for name, dims in shapes)
        lines.append(f"- {component}: {text} (from {source or '?'}; {', '.join(dict.fromkeys(artifacts))})")
    return lines


def speedup_vs_first(results: list[dict]) -> list[float | None]:
    """p50 speed-up of each row against the first artifact's same component (None without one);
    where the first artifact has several formats of a component (``--target cpu``), its first row."""
    if not results:
        return []
    first = results[0]["artifact"]
    base: dict[str, float] = {}
    for r in results:
        if r["artifact"] == first:
            base.setdefault(r["component"], r["p50_ms"])
    return [base[r["component"]] / r["p50_ms"] if r["component"] in base and r["p50_ms"] > 0 else None
            for r in results]


def _num(value, fmt: str = ".1f") -> str:
    return "–" if value is None else format(value, fmt)


def device_lines(doc: dict) -> list[str]:
    """Remote devices: a row per board and component with what trtexec / tegrastats add."""
    rows = [r for r in doc.get("results", []) if r.get("host")]
    if not rows or _estimate(doc):
        return []
    devices = doc.get("devices") or ([doc["device"]] if doc.get("device") else [])
    boards = {d["host"]: d.get("board") or {} for d in devices}
    lines = ["", "| host | board | artifact/component | runtime | p50 ms | GPU compute p50 ms | H2D/D2H ms | "
             "per s | power avg/peak mW | mJ/inference | peak °C | GPU % | EMC % | clocks | nvpmodel |",
             "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        b = boards.get(r["host"], {})
        clocks = {True: "locked", False: "not locked", None: "–"}[b.get("jetson_clocks")]
        h2d = "–" if r.get("h2d_mean_ms") is None else f"{r['h2d_mean_ms']:.3f}/{_num(r.get('d2h_mean_ms'), '.3f')}"
        power = "–" if r.get("power_avg_mw") is None else f"{r['power_avg_mw']:.0f}/{_num(r.get('power_peak_mw'), '.0f')}"
        lines.append(f"| {r['host']} | {r.get('board') or '?'} | {r['artifact']}/{r['component']} | {r['runner']} | "
                     f"{r['p50_ms']:.3f} | {_num(r.get('gpu_compute_p50_ms'), '.3f')} | {h2d} | "
                     f"{r['throughput_per_s']:.1f} | {power} | {_num(r.get('energy_per_inference_mj'), '.2f')} | "
                     f"{_num(r.get('peak_temp_c'))} | {_num(r.get('gpu_util_pct'), '.0f')} | "
                     f"{_num(r.get('emc_util_pct'), '.0f')} | {clocks} | {b.get('nvpmodel') or '–'} |")
    for d in devices:
        b = d.get("board") or {}
        lines.append(f"\nDevice {d['host']}: {b.get('model') or b.get('identity') or '?'}"
                     + (f", L4T {b['l4t']} (JetPack {b.get('jetpack') or '?'})" if b.get("l4t") else "")
                     + f", {b.get('os') or '?'}, {b.get('memory_gb') or '?'} GB; profile {b.get('applied') or b.get('profile')}")
    lines += [f"\n**warning:** {w}" for w in doc.get("warnings") or []]
    return lines


def junit(doc: dict) -> str:
    """JUnit XML: one testcase per budget check, ``<failure>`` with budget vs measured."""
    checks = doc.get("budgets", [])
    suite = ET.Element("testsuite", name=f"mmdeploy-bench.{_target(doc)}", tests=str(len(checks)),
                       failures=str(sum(not c["passed"] for c in checks)), errors="0",
                       timestamp=str(doc.get("created", "")))
    props = ET.SubElement(suite, "properties")
    for key in ("hostname", "cpu_model", "cpu_count", "governor"):
        ET.SubElement(props, "property", name=key, value=str((doc.get("machine") or {}).get(key, "")))
    for c in checks:
        case = ET.SubElement(suite, "testcase", classname=f"budgets.{c['name']}", name=f"{c['where']}:{c['check']}")
        if not c["passed"]:
            fail = ET.SubElement(case, "failure", message=c["message"], type="BudgetExceeded")
            fail.text = f"budget {c['check']} limit {c['limit']} measured {c['measured']} ({c['method']})"
        else:
            ET.SubElement(case, "system-out").text = c["message"]
    return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def write_junit(doc: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(junit(doc))
    return path


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def plots(doc: dict) -> list[tuple[str, str]]:
    """(title, base64 PNG) pairs: latency distributions; accuracy vs latency when measured."""
    try:
        import matplotlib
    except ImportError:
        from mmdeploy.errors import BackendUnavailable

        raise BackendUnavailable("the HTML report draws its plots with matplotlib, which is not installed",
                                 'pip install "mmdeploy[report]"') from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    results = doc["results"]
    if _estimate(doc):
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * len(results)))
        ax.barh([f"{r['artifact']}/{r['component']}" for r in results], [r["p50_ms"] for r in results],
                color="#bbbbbb", hatch="//")
        ax.set_xlabel("ESTIMATED latency, ms (roofline)")
        ax.set_title("ESTIMATE - not measured")
        out.append(("ESTIMATE: roofline latency", _png(fig)))
        plt.close(fig)
        return out
    fig, ax = plt.subplots(figsize=(8, 0.8 + 0.6 * len(results)))
    try:
        ax.violinplot([r["samples_ms"] for r in results], orientation="horizontal", showmedians=True)
    except TypeError:  # matplotlib < 3.10
        ax.violinplot([r["samples_ms"] for r in results], vert=False, showmedians=True)
    ax.set_yticks(range(1, len(results) + 1), [f"{r['artifact']}/{r['component']}" for r in results])
    ax.set_xlabel("latency per run, ms")
    ax.set_title(f"latency distributions on {_target(doc)} (batch {doc['settings'].get('batch')})")
    out.append(("Latency distributions", _png(fig)))
    plt.close(fig)
    acc = {a["artifact"]: a for a in doc.get("accuracy", []) if a.get("value") is not None}
    if acc:
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, a in acc.items():
            total = sum(r["p50_ms"] for r in results if r["artifact"] == label)
            ax.scatter([total], [a["value"] * 100])
            ax.annotate(label, (total, a["value"] * 100), textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel("p50 latency, ms (sum over benched components)")
        ax.set_ylabel(f"{next(iter(acc.values()))['metric']}, %")
        ax.set_title("accuracy vs latency")
        out.append(("Accuracy vs latency", _png(fig)))
        plt.close(fig)
    return out


def html_page(doc: dict) -> str:
    import re

    md = markdown(doc)
    body = []
    for block in md.split("\n\n"):
        rows = [r for r in block.splitlines() if r.startswith("|")]
        if rows and len(rows) == len(block.splitlines()):
            table = ["<table>"]
            for i, row in enumerate(rows):
                if i == 1:
                    continue
                cells = [html.escape(c.strip()) for c in row.strip("|").split("|")]
                tag = "th" if i == 0 else "td"
                table.append("<tr>" + "".join(f"<{tag}{_verdict_class(c, tag)}>{c}</{tag}>" for c in cells) + "</tr>")
            body.append("\n".join(table + ["</table>"]))
        else:
            text = html.escape(block)
            text = re.sub(r"^### (.*)$", r"<h2>\1</h2>", text, flags=re.M)
            text = re.sub(r"\*\*(.*?)\*\*", r"<b>\1</b>", text)
            text = re.sub(r"`([^`]*)`", r"<code>\1</code>", text)
            text = re.sub(r"\b(PASS|FAIL)\b", lambda m: f"<span class='{m[1].lower()}'>{m[1]}</span>", text)
            body.append(f"<p>{text}</p>".replace("\n", "<br>"))
    for title, png in plots(doc):
        body.append(f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,{png}'>")
    title = "mmdeploy ESTIMATE" if _estimate(doc) else "mmdeploy benchmark"
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#eee}"
             ".pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
            f"</head><body>{''.join(body)}</body></html>\n")


def _verdict_class(cell: str, tag: str) -> str:
    return f" class='{cell.lower()}'" if tag == "td" and cell in ("PASS", "FAIL") else ""


def write_report(doc: dict, directory: str | Path) -> Path:
    """``DIR/report.md``, ``DIR/report.html``, ``DIR/results.json`` (and ``junit.xml`` with budgets).

    Written with Ctrl-C / SIGTERM held: a report is there whole or not at all."""
    from mmdeploy.artifact import signals_deferred

    directory = Path(directory)
    pages = {"report.md": markdown(doc), "report.html": html_page(doc)}
    with signals_deferred():
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in pages.items():
            (directory / name).write_text(text)
        write_json(doc, directory / "results.json")
        if doc.get("budgets"):
            write_junit(doc, directory / "junit.xml")
    return directory
