"""Latency / size / accuracy budgets and the statistical gate.

Budgets file (YAML, ``version: 1``; documented in ``docs/budgets.md``)::

    version: 1
    defaults: {confidence: 0.95, alpha: 0.05}
    baseline: {statistic: p50, max_ratio: 1.2}       # used with --baseline FILE
    budgets:
      - artifact: "*"          # globs on the ARTIFACT label, model name, component, target
        component: vision
        target: jetson-orin-nano
        max_p50_ms: 12         # absolute limits, for dedicated hardware
        max_p99_ms: 20
        max_size_mb: 100
        max_energy_mj: 40      # energy per inference (tegrastats, Jetson)
        max_temp_c: 90         # peak temperature during the timed runs
        max_accuracy_drop_pts: 1.0
      - artifact: int8         # relative limits, for noisy shared runners
        component: vision
        relative:
          - {to: fp32, statistic: p50, max_ratio: 0.85}

How a limit is judged (see :mod:`mmdeploy.bench.stats`): an absolute latency limit fails when
the lower end of the bootstrap CI of the statistic exceeds it; a relative limit fails when a
one-sided Mann-Whitney U test says the candidate's samples are greater than ``max_ratio`` x the
reference's *and* the ratio of the statistics is above ``max_ratio``.  Size, load time and
accuracy drop are single numbers and compared directly.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmdeploy.errors import InputError

LATENCY_LIMITS = {"max_p50_ms": "p50", "max_p90_ms": "p90", "max_p99_ms": "p99", "max_mean_ms": "mean"}
SCALAR_LIMITS = {"max_size_mb": "size_mb", "max_load_ms": "load_ms",
                 "max_first_inference_ms": "first_inference_ms", "max_peak_rss_mb": "peak_rss_mb",
                 # device runs (tegrastats on a Jetson): energy per inference and peak temperature
                 "max_energy_mj": "energy_per_inference_mj", "max_temp_c": "peak_temp_c"}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RelativeLimit(Strict):
    to: str  # ARTIFACT label glob of the reference (same component and target)
    component: str | None = None  # defaults to the candidate's component
    statistic: str = "p50"
    max_ratio: float = Field(gt=0)

    @field_validator("statistic")
    @classmethod
    def _stat(cls, v):
        if v not in ("p50", "p90", "p99", "mean"):
            raise ValueError("statistic must be p50, p90, p99 or mean")
        return v


class BudgetRule(Strict):
    name: str | None = None
    artifact: str = "*"
    model: str = "*"
    component: str = "*"
    target: str = "*"
    max_p50_ms: float | None = Field(None, gt=0)
    max_p90_ms: float | None = Field(None, gt=0)
    max_p99_ms: float | None = Field(None, gt=0)
    max_mean_ms: float | None = Field(None, gt=0)
    max_size_mb: float | None = Field(None, gt=0)
    max_load_ms: float | None = Field(None, gt=0)
    max_first_inference_ms: float | None = Field(None, gt=0)
    max_peak_rss_mb: float | None = Field(None, gt=0)
    max_energy_mj: float | None = Field(None, gt=0)
    max_temp_c: float | None = Field(None, gt=0)
    max_accuracy_drop_pts: float | None = None
    relative: list[RelativeLimit] = Field(default_factory=list)
    # CPU classes / features the rule holds on (``[vnni]``, ``[no-vnni]``, ``[amx]``, ``[no-avx512]``):
    # a latency budget states what is physically true where it runs (mmdeploy.cpu.cpu_tags)
    cpu: list[str] = Field(default_factory=list)

    def applies_on(self, tags: set[str]) -> bool:
        return all(t in tags for t in self.cpu)

    @field_validator("relative", mode="before")
    @classmethod
    def _one_or_many(cls, v):
        return [v] if isinstance(v, dict) else v

    def matches(self, result: dict, target: str) -> bool:
        return (fnmatch.fnmatchcase(result["artifact"], self.artifact)
                and fnmatch.fnmatchcase(str(result.get("model")), self.model)
                and fnmatch.fnmatchcase(result["component"], self.component)
                and fnmatch.fnmatchcase(target, self.target))


class GateDefaults(Strict):
    confidence: float = Field(0.95, gt=0.5, lt=1)
    alpha: float = Field(0.05, gt=0, lt=0.5)


class BaselineLimit(Strict):
    statistic: str = "p50"
    max_ratio: float = Field(1.2, gt=0)


class BudgetFile(Strict):
    version: int = 1
    defaults: GateDefaults = Field(default_factory=GateDefaults)
    baseline: BaselineLimit = Field(default_factory=BaselineLimit)
    budgets: list[BudgetRule] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _version(cls, v):
        if v != 1:
            raise ValueError("only version 1 is supported")
        return v


def load_budgets(path: str | Path) -> BudgetFile:
    from mmdeploy.config import load_yaml, validate

    doc = load_yaml(path, "budgets file")
    if not isinstance(doc.data, dict):
        raise InputError(f"{doc.where()}: a budgets file is a mapping with a 'budgets:' list",
                         "see docs/budgets.md")
    return validate(BudgetFile, doc, "budgets file")


def load_baseline(path: str | Path) -> dict:
    import json

    path = Path(path)
    if not path.is_file():
        raise InputError(f"baseline {path} does not exist", "write one with --save-baseline FILE")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"baseline {path} is not JSON ({exc.__class__.__name__})",
                         "write one with --save-baseline FILE") from None
    if not isinstance(data, dict) or data.get("schema") != "mmdeploy.bench" or "results" not in data:
        raise InputError(f"baseline {path} is not an mmdeploy bench document", "write one with --save-baseline FILE")
    if data.get("kind") == "estimate":
        raise InputError(f"baseline {path} holds ESTIMATES, not measurements", "save a measured run")
    return data


# --------------------------------------------------------------------------- evaluation


def _same(a: dict, b: dict, key: str) -> bool:
    """Equal, or unknown on either side (a baseline written before the key existed)."""
    return a.get(key) is None or b.get(key) is None or a[key] == b[key]


def match_baseline(r: dict, base: list[dict]) -> dict | None:
    """The baseline result measuring the same thing as ``r``: the same component, format (the
    runtime) and precision, of the same bundle -- its source checkpoint's sha256, else its ARTIFACT
    label, else (one candidate only) its model name.  Never the list position or the path."""
    same = [b for b in base if b.get("component") == r["component"]
            and all(_same(b, r, k) for k in ("format", "precision", "artifact_name"))]
    sha = r.get("source_sha256")
    tiers = [
        [b for b in same if sha and b.get("source_sha256") == sha and b.get("artifact") == r["artifact"]],
        [b for b in same if sha and b.get("source_sha256") == sha],
        [b for b in same if b.get("artifact") == r["artifact"]
         and not (sha and b.get("source_sha256") and b["source_sha256"] != sha)],
    ]
    for tier in tiers:
        if tier:
            return tier[0]
    by_model = [b for b in same if b.get("model") == r.get("model")
                and not (sha and b.get("source_sha256") and b["source_sha256"] != sha)]
    return by_model[0] if len(by_model) == 1 else None


def evaluate(doc: dict, budgets: BudgetFile | None = None, baseline: dict | None = None) -> list[dict]:
    """Check every matching budget against the bench document; returns check records.

    A result with no counterpart in ``baseline`` is not a check: it is added to
    ``doc["warnings"]`` (a new component or backend has nothing to regress from)."""
    budgets = budgets or BudgetFile()
    conf, alpha = budgets.defaults.confidence, budgets.defaults.alpha
    target = (doc.get("target") or {}).get("name") or "local"
    results = doc["results"]
    machine = doc.get("machine") or {}
    if "cpu_tags" in machine:
        tags = set(machine["cpu_tags"])
    elif machine:  # a device that did not report its CPU class: CPU-scoped rules cannot be judged
        tags = set()
    else:  # a document without a machine record was measured here
        from mmdeploy.cpu import cpu_tags

        tags = cpu_tags()
    checks: list[dict] = []
    accuracy_done: set[tuple[int, str]] = set()
    for i, rule in enumerate(budgets.budgets):
        rule_name = rule.name or f"budget[{i}]"
        if not rule.applies_on(tags):  # another CPU class's budget: listed, not checked
            doc.setdefault("notes", []).append(f"{rule_name}: for CPUs with {', '.join(rule.cpu)}; this one is "
                                               f"{machine.get('cpu_class') or ', '.join(sorted(tags))}: not checked")
            continue
        matched = [r for r in results if rule.matches(r, target)]
        for r in matched:
            where = f"{r['artifact']}/{r['component']}@{target}"
            for key, stat in LATENCY_LIMITS.items():
                limit = getattr(rule, key)
                if limit is not None:
                    checks.append(_absolute(rule_name, where, r, stat, limit, conf))
            for key, field in SCALAR_LIMITS.items():
                limit = getattr(rule, key)
                if limit is not None:
                    value = r.get(field)
                    why = "" if value is not None or key not in ("max_energy_mj", "max_temp_c") else \
                        " (not measured: needs tegrastats on the device)"
                    checks.append(_record(rule_name, where, r, key, limit, value,
                                          value is not None and value <= limit, "direct",
                                          f"{field} {_fmt(value)} vs limit {limit:g}{why}"))
            if rule.max_accuracy_drop_pts is not None and (i, r["artifact"]) not in accuracy_done:
                accuracy_done.add((i, r["artifact"]))  # a bundle-level metric: once per artifact
                checks.append(_accuracy(rule_name, f"{r['artifact']}@{target}", r, rule.max_accuracy_drop_pts, doc))
            for rel in rule.relative:
                comp = rel.component or r["component"]
                refs = [x for x in results if x is not r and x["component"] == comp
                        and fnmatch.fnmatchcase(x["artifact"], rel.to)]
                if not refs:
                    checks.append(_record(rule_name, where, r, f"{rel.statistic}_ratio_to_{rel.to}",
                                          rel.max_ratio, None, False, "mann-whitney-u",
                                          f"no reference artifact {rel.to!r}/{comp} in this run"))
                    continue
                checks.append(_relative(rule_name, where, r, refs[0], rel.statistic, rel.max_ratio,
                                        conf, alpha, kind="relative"))
        if not matched and fnmatch.fnmatchcase(target, rule.target):  # rules of other targets don't apply
            checks.append({"name": rule_name, "where": f"{rule.artifact}/{rule.component}@{rule.target}",
                           "check": "match", "passed": False, "method": "match",
                           "limit": None, "measured": None,
                           "message": f"no result matches (artifact {rule.artifact!r}, model {rule.model!r}, "
                                      f"component {rule.component!r}, target {rule.target!r} vs {target!r})"})
    if baseline is not None:
        stat, limit = budgets.baseline.statistic, budgets.baseline.max_ratio
        base = baseline["results"]
        for r in results:
            ref = match_baseline(r, base)
            where = f"{r['artifact']}/{r['component']}@{target}"
            if ref is None:
                what = "/".join(str(x) for x in (r.get("format"), r.get("precision")) if x)
                warning = (f"{where} ({what}): no counterpart in the baseline (same component, format, precision "
                           "and bundle); not compared")
                doc.setdefault("warnings", [])
                if warning not in doc["warnings"]:
                    doc["warnings"].append(warning)
                continue
            checks.append(_relative("baseline", where, r, ref, stat, limit, conf, alpha, kind="baseline"))
    return checks


def quick_rules(**limits: float | None) -> BudgetFile:
    """A budgets file from command-line limits (``max_p50_ms=...``) applying to every result."""
    given = {k: v for k, v in limits.items() if v is not None}
    return BudgetFile(budgets=[BudgetRule(name="command line", **given)] if given else [])


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _record(name, where, r, check, limit, measured, passed, method, message, **extra) -> dict:
    return {"name": name, "where": where, "artifact": r["artifact"], "component": r["component"],
            "check": check, "limit": limit, "measured": measured, "passed": bool(passed),
            "method": method, "message": message, **extra}


def _absolute(name, where, r, stat, limit, conf) -> dict:
    from mmdeploy.bench.stats import bootstrap_ci

    if not r.get("samples_ms"):  # a device tool's summary (trtexec without per-run times)
        value = r.get(f"{stat}_ms")
        return _record(name, where, r, f"max_{stat}_ms", limit, value, value is not None and value <= limit,
                       "direct", f"{stat} {_fmt(value)} ms ({r.get('latency_source', 'no samples')}) vs limit {limit:g} ms")

    est, lo, hi = bootstrap_ci(r["samples_ms"], stat, conf)
    passed = lo <= limit
    verdict = "within" if est <= limit else ("not shown above" if passed else "above")
    return _record(name, where, r, f"max_{stat}_ms", limit, est, passed, "bootstrap-ci",
                   f"{stat} {est:.3f} ms ({conf:.0%} CI {lo:.3f}-{hi:.3f}) {verdict} limit {limit:g} ms",
                   ci=[lo, hi])


def _relative(name, where, r, ref, stat, limit, conf, alpha, kind) -> dict:
    import numpy as np

    from mmdeploy.bench.stats import mann_whitney_greater, ratio_ci

    cand, base = r["samples_ms"], ref["samples_ms"]
    ratio, lo, hi = ratio_ci(cand, base, stat, conf)
    p = mann_whitney_greater(cand, np.asarray(base) * limit)
    significant = p < alpha
    passed = not (significant and ratio > limit)
    label = "baseline" if kind == "baseline" else ref["artifact"]
    verdict = "PASS" if passed else "FAIL"
    return _record(name, where, r, f"{stat}_ratio_to_{label}", limit, ratio, passed, "mann-whitney-u",
                   f"{stat} ratio {ratio:.3f} ({conf:.0%} CI {lo:.3f}-{hi:.3f}) vs max {limit:g}; "
                   f"Mann-Whitney p={p:.3g} (alpha {alpha:g}) -> {verdict}",
                   ci=[lo, hi], p_value=p, reference=f"{label}/{ref['component']}")


def _accuracy(name, where, r, limit, doc) -> dict:
    acc = next((a for a in doc.get("accuracy", []) if a.get("artifact") == r["artifact"]), None)
    if acc is None or acc.get("drop_pts") is None:
        why = "accuracy not measured (pass --accuracy)" if acc is None else acc.get("message", "no reference value")
        return _record(name, where, r, "max_accuracy_drop_pts", limit, None, False, "direct", why)
    drop = acc["drop_pts"]
    return _record(name, where, r, "max_accuracy_drop_pts", limit, drop, drop <= limit, "direct",
                   f"{acc['metric']} {acc['value'] * 100:.2f} % vs reference {acc['reference'] * 100:.2f} %: "
                   f"drop {drop:.2f} pts vs limit {limit:g}")
