"""Statistics over latency samples: summaries, bootstrap confidence intervals, Mann-Whitney U.

Latency samples on a shared machine are skewed with a heavy right tail (a neighbour's job,
a page fault, a frequency change), so the gate uses rank- and resampling-based methods that
assume no distribution:

* an **absolute** limit (``p50 <= 30 ms``) fails only when the lower end of the bootstrap
  confidence interval of the statistic is above the limit (the run *shows* it is too slow);
* a **relative** limit (``p50(int8) <= 0.8 x p50(fp32)``) fails only when a one-sided
  Mann-Whitney U test finds the candidate's samples stochastically greater than the reference
  samples scaled by the ratio, *and* the bootstrap point estimate of the ratio of medians is
  above the limit.  Mann-Whitney compares whole sample sets by ranks, so a few outliers in
  either set cannot decide the result, unlike a comparison of two means or two p99 numbers.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

STATISTICS = ("p50", "p90", "p99", "mean")


def statistic(samples: Sequence[float], name: str) -> float:
    a = np.asarray(samples, dtype=np.float64)
    if name == "mean":
        return float(a.mean())
    if name.startswith("p"):
        return float(np.percentile(a, float(name[1:])))
    raise ValueError(f"unknown statistic {name!r}")


def summarize(samples_ms: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/mean/std/min/max in ms and throughput (runs per second) of timed runs."""
    a = np.asarray(samples_ms, dtype=np.float64)
    if a.size == 0:
        return {}
    return {
        "n": int(a.size),
        "p50_ms": float(np.percentile(a, 50)),
        "p90_ms": float(np.percentile(a, 90)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
        "std_ms": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "min_ms": float(a.min()),
        "max_ms": float(a.max()),
    }


def bootstrap_ci(samples: Sequence[float], name: str = "p50", confidence: float = 0.95,
                 resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high): percentile bootstrap confidence interval of one statistic."""
    a = np.asarray(samples, dtype=np.float64)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.size, size=(resamples, a.size))
    boot = _stat_rows(a[idx], name)
    tail = (1.0 - confidence) / 2 * 100
    return statistic(a, name), float(np.percentile(boot, tail)), float(np.percentile(boot, 100 - tail))


def ratio_ci(candidate: Sequence[float], reference: Sequence[float], name: str = "p50",
             confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """(estimate, low, high) of statistic(candidate) / statistic(reference), bootstrapped."""
    c = np.asarray(candidate, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    rng = np.random.default_rng(seed)
    bc = _stat_rows(c[rng.integers(0, c.size, size=(resamples, c.size))], name)
    br = _stat_rows(r[rng.integers(0, r.size, size=(resamples, r.size))], name)
    boot = bc / br
    tail = (1.0 - confidence) / 2 * 100
    return (statistic(c, name) / statistic(r, name), float(np.percentile(boot, tail)),
            float(np.percentile(boot, 100 - tail)))


def mann_whitney_greater(candidate: Sequence[float], reference: Sequence[float]) -> float:
    """One-sided p-value of 'candidate is stochastically greater than reference'."""
    try:
        from scipy.stats import mannwhitneyu
    except ImportError:
        from mmdeploy.errors import BackendUnavailable

        raise BackendUnavailable("relative budgets use scipy's Mann-Whitney U test, and scipy is not installed",
                                 'pip install "mmdeploy[stats]"') from None

    c = np.asarray(candidate, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    if c.size < 2 or r.size < 2:
        return math.nan
    return float(mannwhitneyu(c, r, alternative="greater").pvalue)


def _stat_rows(rows: np.ndarray, name: str) -> np.ndarray:
    if name == "mean":
        return rows.mean(axis=1)
    return np.percentile(rows, float(name[1:]), axis=1)
