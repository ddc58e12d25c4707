import numpy as np

from hue import folds


def test_every_image_in_exactly_one_fold_and_classes_spread():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 503)
    f = folds.assign(labels, 5, seed=1)
    assert f.shape == labels.shape and set(f) == {0, 1, 2, 3, 4}
    for c in range(7):
        per_fold = np.bincount(f[labels == c], minlength=5)
        assert per_fold.max() - per_fold.min() <= 1  # stratified within one image


def test_seeded_and_deterministic():
    labels = np.repeat(np.arange(4), 10)
    assert (folds.assign(labels, 5, 3) == folds.assign(labels, 5, 3)).all()
    assert (folds.assign(labels, 5, 3) != folds.assign(labels, 5, 4)).any()
