"""Circular statistics against independent values: scipy and R CircStats' r.test."""

import numpy as np
import pytest
from scipy import stats

from hue import circular


def test_against_r_circstats_rayleigh():
    data = np.radians([190.18, 175.48, 155.95, 217.83, 156.36])
    assert circular.rayleigh_test(data) == pytest.approx(0.00640418, abs=1e-6)
    assert circular.resultant_length(data) == pytest.approx(0.9202565, abs=1e-6)
    assert circular.rayleigh_test(np.radians([130, 90, 0, 145])) == pytest.approx(0.2563487733797317, rel=1e-9)


def test_mean_and_variance_match_scipy():
    rng = np.random.default_rng(0)
    theta = rng.vonmises(1.0, 2.0, 500)
    assert circular.circular_mean(theta) == pytest.approx(stats.circmean(theta, high=np.pi, low=-np.pi), abs=1e-9)
    assert circular.circular_variance(theta) == pytest.approx(stats.circvar(theta), abs=1e-9)
    ds = stats.directional_stats(np.stack([np.cos(theta), np.sin(theta)], 1))
    assert circular.resultant_length(theta) == pytest.approx(ds.mean_resultant_length, abs=1e-9)


def test_concentrated_angles_have_r_one_and_tiny_p():
    theta = np.full(40, np.radians(30))
    s = circular.summary(theta)
    assert s["mean_deg"] == pytest.approx(30) and s["R"] == pytest.approx(1) and s["rayleigh_p"] < 1e-12


def test_uniform_angles_have_r_near_zero_and_large_p():
    theta = np.linspace(-np.pi, np.pi, 360, endpoint=False)
    assert circular.resultant_length(theta) < 1e-12 and circular.rayleigh_test(theta) == 1.0
    rng = np.random.default_rng(1)
    ps = [circular.rayleigh_test(rng.uniform(-np.pi, np.pi, 50)) for _ in range(400)]
    assert 0.03 < np.mean(np.array(ps) < 0.05) < 0.08  # calibrated under the null


def test_empty_input_is_nan():
    assert np.isnan(circular.circular_mean(np.array([]))) and np.isnan(circular.rayleigh_test(np.array([])))


def test_circular_correlation_of_aligned_rotated_reflected_and_shuffled_angles():
    rng = np.random.default_rng(0)
    beta = rng.uniform(-np.pi, np.pi, 10)  # e.g. ten class label angles
    assert circular.correlation(beta, beta) == pytest.approx(1.0)
    assert circular.correlation(beta + 1.3, beta) == pytest.approx(1.0)  # a rotation of the hue plane changes nothing
    assert circular.correlation(-beta, beta) == pytest.approx(-1.0)  # a reflection flips the sign
    r, p = circular.correlation_test(-beta + 0.4, beta, n_perm=500, seed=0)
    assert r == pytest.approx(1.0) and p < 0.01  # |r|: the plane's handedness is arbitrary
    rs, ps = [], []
    for seed in range(20):  # unrelated angles: |r| small on average, p spread out
        r, p = circular.correlation_test(rng.uniform(-np.pi, np.pi, 10), beta, n_perm=200, seed=seed)
        rs.append(r)
        ps.append(p)
    assert np.mean(rs) < 0.45 and np.mean(ps) > 0.3


def test_circular_correlation_of_a_constant_set_is_undefined():
    assert np.isnan(circular.correlation(np.zeros(5), np.arange(5.0)))
    r, p = circular.correlation_test(np.zeros(5), np.arange(5.0), n_perm=10, seed=0)
    assert np.isnan(r) and np.isnan(p)


def test_wrap():
    assert circular.wrap(np.array([3 * np.pi / 2, -3 * np.pi / 2, 0.5])) == pytest.approx([-np.pi / 2, np.pi / 2, 0.5])
