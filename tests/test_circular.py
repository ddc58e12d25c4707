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
