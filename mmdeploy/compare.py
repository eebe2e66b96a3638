"""Comparing outputs: a comparator apart from the runners (as in Polygraphy).

``compare_outputs`` measures one case; ``verify_runner`` runs a Runner over stored reference
cases (``reference.npz``: inputs and PyTorch outputs) and aggregates max abs error, max relative
error and the minimum cosine per output, raising :class:`VerificationError` with a per-output
table when an output exceeds the tolerance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmdeploy.errors import VerificationError

DEFAULT_ATOL = 1e-4


def output_metrics(reference: np.ndarray, value: np.ndarray) -> dict[str, float]:
    ref = np.asarray(reference, dtype=np.float64)
    got = np.asarray(value, dtype=np.float64)
    if ref.shape != got.shape:
        return {"max_abs": float("inf"), "max_rel": float("inf"), "cosine": float("nan"),
                "shape_mismatch": f"{list(got.shape)} != {list(ref.shape)}"}
    diff = np.abs(ref - got)
    scale = np.maximum(np.abs(ref), 1e-6)
    # cosine per sample (first axis), the minimum reported; flattened for scalars
    a = ref.reshape(ref.shape[0], -1) if ref.ndim > 1 else ref.reshape(1, -1)
    b = got.reshape(a.shape)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-30), 1.0)
    return {
        "max_abs": float(diff.max()) if diff.size else 0.0,
        "max_rel": float((diff / scale).max()) if diff.size else 0.0,
        "cosine": float(cos.min()) if cos.size else 1.0,
    }


def compare_outputs(reference: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> dict[str, dict]:
    """Metrics per output name present in ``reference``."""
    result = {}
    for name, ref in reference.items():
        if name not in outputs:
            result[name] = {"max_abs": float("inf"), "max_rel": float("inf"), "cosine": float("nan"),
                            "missing": True}
        else:
            result[name] = output_metrics(ref, outputs[name])
    return result


def merge_metrics(per_case: list[dict[str, dict]]) -> dict[str, dict]:
    """Worst case over several cases, per output."""
    merged: dict[str, dict] = {}
    for case in per_case:
        for name, m in case.items():
            cur = merged.setdefault(name, {"max_abs": 0.0, "max_rel": 0.0, "cosine": 1.0})
            cur["max_abs"] = max(cur["max_abs"], m["max_abs"])
            cur["max_rel"] = max(cur["max_rel"], m["max_rel"])
            cur["cosine"] = min(cur["cosine"], m["cosine"]) if not np.isnan(m["cosine"]) else float("nan")
    return merged


def parity_table(metrics: dict[str, dict], atol: float | None = None, title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'output':<28} {'max_abs':>11} {'max_rel':>11} {'cosine':>10}  status")
    for name, m in metrics.items():
        ok = atol is None or m["max_abs"] <= atol
        lines.append(f"{name:<28} {m['max_abs']:>11.3e} {m['max_rel']:>11.3e} {m['cosine']:>10.6f}  "
                     f"{'ok' if ok else 'FAIL'}")
    return "\n".join(lines)


def verify_runner(runner, cases: list[tuple[dict, dict]], atol: float | None = DEFAULT_ATOL,
                  label: str = "", min_cosine: float | None = None) -> dict[str, Any]:
    """Run ``runner`` on each reference case; return a parity record for the manifest.

    Raises VerificationError (naming ``label``, e.g. "openvino/vision") when an output's max abs
    error exceeds ``atol`` or its cosine falls below ``min_cosine``.
    """
    per_case = [compare_outputs(ref_out, runner.run(feeds)) for feeds, ref_out in cases]
    metrics = merge_metrics(per_case)
    failed = [n for n, m in metrics.items()
              if (atol is not None and not m["max_abs"] <= atol)
              or (min_cosine is not None and not m["cosine"] >= min_cosine)]
    record = {
        "cases": len(cases),
        "batch_sizes": sorted({int(next(iter(f.values())).shape[0]) for f, _ in cases if f}),
        "atol": atol,
        "outputs": metrics,
        "passed": not failed,
    }
    if failed:
        limit = f"atol {atol:g}" if atol is not None else f"cosine {min_cosine}"
        raise VerificationError(
            f"{label or runner.name}: output {', '.join(failed)} differs from the PyTorch reference "
            f"beyond {limit}",
            "inspect the table above; loosen --atol only if the error is expected (e.g. fp16)",
            details=parity_table(metrics, atol, title=f"parity of {label or runner.name}"),
        )
    return record
