"""Statistics over folds: mean +- std, and paired comparisons that tell a change from fold noise."""

from __future__ import annotations

import math

import numpy as np

CHANGED, NOISE, UNCHANGED = "changed", "within fold noise", "unchanged"


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def paired_test(base: list[float], new: list[float]) -> float | None:
    """Two-sided paired t-test p-value over folds (None with fewer than two folds)."""
    from scipy.stats import ttest_rel

    if len(base) < 2:
        return None
    deltas = np.subtract(new, base, dtype=np.float64)
    if constant(deltas):  # zero variance (up to rounding): t is 0 (no change) or infinite
        return 1.0 if np.all(deltas == 0) else 0.0
    return float(ttest_rel(new, base).pvalue)


def constant(deltas: np.ndarray) -> bool:
    """Whether every delta is the same up to float rounding (a pure shift, or no change)."""
    return bool(np.ptp(deltas) <= 1e-12 * max(1.0, float(np.abs(deltas).max())))


def paired(base: list[float], new: list[float], level: float = 0.95) -> dict:
    """new - base on the same folds: mean delta, its std, a t confidence interval, the paired p and a verdict.

    "changed" when the interval excludes 0, "within fold noise" when it does not, "unchanged" when
    every fold gives the same value on both sides.
    """
    from scipy.stats import t

    d = np.asarray(new, dtype=np.float64) - np.asarray(base, dtype=np.float64)
    n = len(d)
    mean = float(d.mean()) if n else math.nan
    sd = float(d.std(ddof=1)) if n > 1 else 0.0
    half = float(t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)) if n > 1 else math.nan
    low, high = mean - half, mean + half
    if n and np.all(d == 0):
        verdict = UNCHANGED
    elif n > 1 and (low > 0 or high < 0 or (constant(d) and mean != 0)):
        verdict = CHANGED
    else:
        verdict = NOISE
    return {"delta": mean, "delta_std": sd, "ci_low": low, "ci_high": high, "p_value": paired_test(base, new),
            "n_folds": n, "verdict": verdict}
