"""Paired comparisons over folds: deltas, t intervals, p-values and verdicts with known answers."""

import numpy as np
import pytest
from scipy.stats import t, ttest_rel

from hue import stats


def test_paired_delta_ci_and_p_match_scipy():
    base, new = [0.50, 0.60, 0.55, 0.52, 0.58], [0.56, 0.63, 0.61, 0.55, 0.60]
    r = stats.paired(base, new)
    d = np.subtract(new, base)
    half = t.ppf(0.975, 4) * d.std(ddof=1) / np.sqrt(5)
    assert r["delta"] == pytest.approx(d.mean()) and r["delta_std"] == pytest.approx(d.std(ddof=1))
    assert (r["ci_low"], r["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))
    assert r["p_value"] == pytest.approx(ttest_rel(new, base).pvalue) and r["n_folds"] == 5
    assert r["verdict"] == stats.CHANGED  # every fold improved: the interval excludes 0


def test_a_small_change_inside_fold_noise_is_called_noise():
    r = stats.paired([0.50, 0.60, 0.55, 0.52, 0.58], [0.51, 0.58, 0.57, 0.50, 0.60])
    assert r["ci_low"] < 0 < r["ci_high"] and r["verdict"] == stats.NOISE


def test_identical_folds_are_unchanged_and_a_constant_shift_is_a_change():
    assert stats.paired([0.5, 0.6], [0.5, 0.6])["verdict"] == stats.UNCHANGED
    shifted = stats.paired([0.5, 0.25, 0.75], [0.625, 0.375, 0.875])  # exact binary fractions: +0.125 each
    assert shifted["verdict"] == stats.CHANGED and shifted["p_value"] == 0.0


def test_one_fold_has_no_interval():
    r = stats.paired([0.5], [0.6])
    assert r["verdict"] == stats.NOISE and r["p_value"] is None and np.isnan(r["ci_low"])


def test_paired_test_edge_cases():
    assert stats.paired_test([0.5], [0.6]) is None
    assert stats.paired_test([0.5, 0.6], [0.5, 0.6]) == 1.0
    assert stats.paired_test([0.5, 0.6], [0.6, 0.7]) == 0.0
