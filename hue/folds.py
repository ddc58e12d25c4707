"""Stratified k-fold assignment: every image in exactly one fold."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedKFold


def assign(labels: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold id per image, stratified by label and seeded; (N,) int labels -> (N,) int folds."""
    folds = np.full(len(labels), -1, dtype=np.int64)
    splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        folds[held_out] = fold
    return folds
