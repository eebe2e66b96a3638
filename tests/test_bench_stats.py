import numpy as np

from mmdeploy.bench import stats


def test_summarize_percentiles_and_std():
    s = stats.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s["n"] == 5 and s["p50_ms"] == 3.0 and s["min_ms"] == 1.0 and s["max_ms"] == 100.0
    assert s["p99_ms"] > s["p90_ms"] > s["p50_ms"]
    assert abs(s["std_ms"] - np.std([1, 2, 3, 4, 100], ddof=1)) < 1e-9


def test_bootstrap_ci_contains_estimate_and_narrows_with_samples():
    rng = np.random.default_rng(0)
    small = rng.lognormal(0, 0.2, 30)
    large = rng.lognormal(0, 0.2, 3000)
    est, lo, hi = stats.bootstrap_ci(small, "p50")
    assert lo <= est <= hi
    _, lo2, hi2 = stats.bootstrap_ci(large, "p50")
    assert (hi2 - lo2) < (hi - lo)


def test_ratio_ci_of_a_doubled_sample_set():
    rng = np.random.default_rng(1)
    a = rng.lognormal(0, 0.1, 200)
    ratio, lo, hi = stats.ratio_ci(2 * a, a, "p50")
    assert abs(ratio - 2) < 1e-9 and lo <= 2 <= hi


def test_mann_whitney_separates_shift_from_noise():
    rng = np.random.default_rng(2)
    a = rng.lognormal(0, 0.2, 200)
    b = rng.lognormal(0, 0.2, 200)
    assert stats.mann_whitney_greater(2 * a, b) < 1e-6
    assert stats.mann_whitney_greater(a, b) > 0.01
