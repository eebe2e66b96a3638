"""Task accuracy of benched bundles, through the family adapter (never a backend directly).

For each ARTIFACT that is (or lives in) a model bundle, the adapter's ``evaluate`` runs the
task (e.g. zero-shot top-1) on Runners for its ``task_components()``.  The reference is the
PyTorch value recorded by ``convert`` in the bundle metadata (``task.reference`` /
``task.value``) if present, else the fp32 bundle measured in the same run.  A family without a
task gives a record saying so instead of failing the run.
"""

from __future__ import annotations

from pathlib import Path

from mmdeploy.errors import MMDeployError


def _reference_value(bundle_manifest, component_manifests) -> float | None:
    """The PyTorch task value recorded by convert (bundle parity) or compile (component parity)."""
    candidates = [bundle_manifest.parity.get("task"), bundle_manifest.metadata.get("task")]
    candidates += [m.parity.get("task") for m in component_manifests]
    for task in candidates:
        if not isinstance(task, dict):
            continue
        for key in ("reference_value", "pytorch_value", "reference"):
            value = task.get(key)
            if isinstance(value, (int, float)):
                return float(value)
            if isinstance(value, dict) and isinstance(value.get("value"), (int, float)):
                return float(value["value"])
    return None


def measure(items, load_runner_for, limit: int | None = None, scorer=None) -> list[dict]:
    """One record per ARTIFACT label: metric, value, n, reference, drop_pts (or a message).

    ``items`` are harness Items; ``load_runner_for(item)`` returns a Runner for an item (loaded
    the way the harness loads it, for the same target).  ``scorer(adapter, runners)`` (from
    ``--eval``: the user's set) replaces the adapter's built-in task; its reference is then the
    fp32 artifact of the same run.
    """
    from mmdeploy.artifact import read_manifest
    from mmdeploy.models import adapter_for_bundle

    records: list[dict] = []
    by_label: dict[str, list] = {}
    for item in items:
        by_label.setdefault(item.artifact, []).append(item)
    for label, group in by_label.items():
        bundle = group[0].bundle
        base = {"artifact": label, "metric": None, "value": None, "n": 0, "reference": None,
                "drop_pts": None, "precision": group[0].manifest.precision}
        if bundle is None:
            records.append({**base, "message": "not part of a model bundle: no task to evaluate"})
            continue
        try:
            adapter = adapter_for_bundle(bundle)
        except MMDeployError as exc:
            records.append({**base, "message": f"no adapter: {exc.one_line()}"})
            continue
        needed = tuple(adapter.task_components()) if adapter is not None else ()
        if scorer is not None and adapter is not None and hasattr(scorer, "components"):
            try:  # the --eval set says what it runs (a text set: the text encoder alone)
                needed = tuple(scorer.components(adapter, {r.component for r in read_manifest(bundle).artifacts}))
            except MMDeployError:
                needed = ()
        if not needed:
            family = read_manifest(bundle).family
            records.append({**base, "message": f"family {family!r} has no task metric"})
            continue
        comps: dict = {}
        for it in group:  # several formats of a component (--target cpu): the first, as in the table
            comps.setdefault(it.component, it)
        bundle_manifest = read_manifest(bundle)
        runners = {}
        for name in needed:
            if name in comps:
                runners[name] = load_runner_for(comps[name])
            else:  # evaluate needs a component that was not benched: load it from the bundle
                ref = next((r for r in bundle_manifest.artifacts if r.component == name), None)
                if ref is None:
                    break
                runners[name] = load_runner_for(None, Path(bundle) / ref.path)
        if len(runners) != len(needed):
            records.append({**base, "message": f"bundle lacks task components {', '.join(needed)}"})
            continue
        if scorer is not None:
            score = scorer(adapter, runners)
            records.append({**base, "metric": score["name"], "value": score["value"], "n": score["n"],
                            "ci95": score["ci95"], "reference": None, "predictions": score["predictions"],
                            "reference_source": None})
            continue
        result = adapter.evaluate(runners, limit=limit)
        if result is None:
            records.append({**base, "message": "the adapter returned no task result"})
            continue
        reference = _reference_value(bundle_manifest, [it.manifest for it in group])
        records.append({**base, "metric": result.name, "value": float(result.value), "n": result.n,
                        "reference": reference, "predictions": list(result.predictions),
                        "reference_source": "pytorch" if reference is not None else None})
    # no PyTorch value in the bundle: compare with an fp32 bundle measured in the same run
    fp32 = next((r for r in records if r["value"] is not None and r["precision"] == "fp32"), None)
    for r in records:
        if r["value"] is None:
            continue
        if r["reference"] is None and fp32 is not None:
            r["reference"], r["reference_source"] = fp32["value"], f"artifact {fp32['artifact']}"
        if r["reference"] is not None:
            r["drop_pts"] = (r["reference"] - r["value"]) * 100
        else:
            r["message"] = "no reference value (no PyTorch value in the bundle, no fp32 artifact in this run)"
    return records
