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
