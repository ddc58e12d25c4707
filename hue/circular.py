"""Circular statistics of angles (radians): mean direction, resultant length, Rayleigh test."""

from __future__ import annotations

import numpy as np


def _moments(theta: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """(mean cos, mean sin, total weight)."""
    theta = np.asarray(theta, dtype=np.float64)
    w = np.ones_like(theta) if weights is None else np.asarray(weights, dtype=np.float64)
    total = w.sum()
    if total == 0:
        return 0.0, 0.0, 0.0
    return float((w * np.cos(theta)).sum() / total), float((w * np.sin(theta)).sum() / total), float(total)


def circular_mean(theta: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean direction atan2(mean sin, mean cos), in (-pi, pi]; nan for no angles."""
    c, s, n = _moments(theta, weights)
    return float(np.arctan2(s, c)) if n else float("nan")


def resultant_length(theta: np.ndarray, weights: np.ndarray | None = None) -> float:
    """Mean resultant length R in [0, 1]: 0 = no preferred direction, 1 = all at one angle."""
    c, s, n = _moments(theta, weights)
    return float(np.hypot(c, s)) if n else float("nan")


def circular_variance(theta: np.ndarray) -> float:
    """1 - R."""
    return 1.0 - resultant_length(theta)


def rayleigh_test(theta: np.ndarray) -> float:
    """Rayleigh test p-value for uniformity against a unimodal alternative.

    z = n R^2 with the second-order correction of Jammalamadaka & SenGupta (2001), the same
    as R CircStats' r.test.
    """
    n = len(theta)
    if n == 0:
        return float("nan")
    z = n * resultant_length(theta) ** 2
    correction = 1 + (2 * z - z**2) / (4 * n) - (24 * z - 132 * z**2 + 76 * z**3 - 9 * z**4) / (288 * n**2)
    return float(min(1.0, max(0.0, np.exp(-z) * correction)))


def summary(theta: np.ndarray) -> dict:
    """Mean (radians and degrees), R, circular variance, Rayleigh p and n of a set of angles."""
    mean = circular_mean(theta)
    return {"n": int(len(theta)), "mean_rad": mean, "mean_deg": float(np.degrees(mean)),
            "R": resultant_length(theta), "circular_variance": circular_variance(theta) if len(theta) else float("nan"),
            "rayleigh_p": rayleigh_test(theta)}


def wrap(theta: np.ndarray) -> np.ndarray:
    """Angles wrapped into (-pi, pi]."""
    return np.angle(np.exp(1j * np.asarray(theta, dtype=np.float64)))


def correlation(alpha: np.ndarray, beta: np.ndarray) -> float:
    """Circular-circular correlation of Fisher & Lee (1983), in [-1, 1]; nan if either set is constant.

    rho = sum_{i<j} sin(a_i - a_j) sin(b_i - b_j) / sqrt(sum sin^2(a_i - a_j) sum sin^2(b_i - b_j)).
    It uses angle differences only, so it is defined for equally spaced angles (the `circle`
    labels, whose circular mean does not exist, unlike the Jammalamadaka-SenGupta form) and a
    rotation of either set leaves it unchanged; a reflection flips its sign.
    """
    a = np.asarray(alpha, np.float64)
    b = np.asarray(beta, np.float64)
    i, j = np.triu_indices(len(a), 1)
    sa, sb = np.sin(a[i] - a[j]), np.sin(b[i] - b[j])
    denom = np.sqrt((sa * sa).sum() * (sb * sb).sum())
    return float((sa * sb).sum() / denom) if denom > 1e-12 else float("nan")


def correlation_test(alpha: np.ndarray, beta: np.ndarray, n_perm: int, seed: int) -> tuple[float, float]:
    """|r| and its permutation p-value: how often shuffling the pairing gives an |r| at least as large.

    |r| because the activation-hue plane has no preferred handedness (its axes' signs are arbitrary).
    """
    observed = abs(correlation(alpha, beta))
    if observed != observed:  # nan: a constant set has no correlation to test
        return observed, float("nan")
    rng = np.random.default_rng(seed)
    perms = np.array([abs(correlation(alpha, rng.permutation(beta))) for _ in range(n_perm)])
    return observed, float((1 + (perms >= observed - 1e-12).sum()) / (1 + n_perm))
