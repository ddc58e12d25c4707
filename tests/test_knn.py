"""Eq. 1-3 by hand, exact search against brute force, Annoy recall measured on clustered data."""

import math

import numpy as np
import pytest

from hue import index, knn


def test_hand_worked_kernel_vote_with_class_frequency_normalisation():
    # one query image, two pixel vectors, K = 2; memory has 2 vectors of class 0 and 4 of class 1
    dist = np.array([[0.5, 1.0], [0.2, 0.4]])
    labels = np.array([[0, 1], [1, 1]])
    eps = 0.01
    scores = knn.kernel_vote(dist, labels, np.array([0, 0]), 1, np.array([2, 4]), eps)
    f11 = math.exp(-0.25 / (0.25 + eps))  # alpha_1 = 0.5
    f12 = math.exp(-1.00 / (0.25 + eps))
    f21 = math.exp(-0.04 / (0.04 + eps))  # alpha_2 = 0.2
    f22 = math.exp(-0.16 / (0.04 + eps))
    assert scores[0, 0] == pytest.approx(f11 / 2, rel=1e-12)
    assert scores[0, 1] == pytest.approx((f12 + f21 + f22) / 4, rel=1e-12)
    assert knn.predict(scores).tolist() == [0]  # normalisation flips it: unnormalised, class 1 wins
    assert f11 < f12 + f21 + f22


def test_ties_go_to_the_lowest_class_and_empty_classes_score_zero():
    dist = np.array([[0.3, 0.3]])
    scores = knn.kernel_vote(dist, np.array([[2, 1]]), np.array([0]), 1, np.array([0, 5, 5]), 1e-6)
    assert scores[0, 0] == 0.0 and scores[0, 1] == scores[0, 2] > 0
    assert knn.predict(scores).tolist() == [1]


def test_nearest_neighbour_has_weight_exp_minus_one_over_one_plus_eps():
    w = knn.kernel_weights(np.array([[0.7, 0.9]]), eps=1e-6)
    assert w[0, 0] == pytest.approx(math.exp(-0.49 / (0.49 + 1e-6)))


def test_missing_neighbours_vote_nothing():
    scores = knn.kernel_vote(np.array([[0.1, np.inf]]), np.array([[1, -1]]), np.array([0]), 1, np.array([1, 1]), 1e-6)
    assert scores[0, 0] == 0 and scores[0, 1] > 0


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def clustered(n, dim=32, n_clusters=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_clusters, dim))
    return unit(centres[rng.integers(0, n_clusters, n)] + 0.3 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("shortlist", [False, True])
def test_exact_search_matches_brute_force_across_blocks(shortlist):
    memory, queries = clustered(500, seed=1), clustered(37, seed=2)
    d, i = knn.exact_search(queries, memory, 5, query_block=8, memory_block=64, device="cpu", shortlist=shortlist)
    full = np.linalg.norm(queries[:, None] - memory[None], axis=2)
    expect = np.argsort(full, axis=1, kind="stable")[:, :5]
    assert (i == expect).all()
    assert np.allclose(d, np.take_along_axis(full, expect, 1), atol=1e-4)


def test_annoy_recall_is_measured_against_exact_search():
    memory, queries = clustered(3000, seed=3), clustered(200, seed=4)
    ann = index.build_annoy(memory, n_trees=10, seed=0)
    _, exact = knn.exact_search(queries, memory, 10, device="cpu")
    d_good, good = knn.annoy_search(ann, queries, 10, search_k=3000)
    _, poor = knn.annoy_search(ann, queries, 10, search_k=10)
    assert knn.recall_at_k(good, exact) >= 0.95
    assert knn.recall_at_k(poor, exact) < knn.recall_at_k(good, exact)
    # Annoy's angular distance on unit vectors is the Euclidean distance
    assert np.allclose(d_good[:, 0], np.linalg.norm(queries - memory[good[:, 0]], axis=1), atol=1e-3)


def test_recall_at_k_counts_overlap():
    assert knn.recall_at_k(np.array([[1, 2, 3, 4]]), np.array([[4, 3, 9, 8]])) == 0.5


class StubStore:
    manifest = {"dataset": "d", "backbone": "b", "weights": "random", "weights_id": "random:seed=0"}


@pytest.mark.parametrize("backend, fails", [("annoy", True), ("exact", False)])
def test_low_annoy_recall_fails_with_the_knobs_to_turn(tmp_path, monkeypatch, backend, fails):
    from hue import config, shards

    folder = tmp_path / "fold0"
    shards.write_json(folder / "info.json", {"n_trees": 7, "descriptors": {"gap": {}}})
    measured = {"accuracy": 0.8, "recall_at_k": 0.42, "agreement": 0.9, "n_queries": 5, "search_seconds": 0.1,
                "queries_per_second": 50.0, "neighbours": None}
    monkeypatch.setattr(knn, "evaluate_fold", lambda *a: dict(measured))
    params = config.build("knn", {"descriptors": ["gap"], "search_k": 100, "backend": backend})
    out = tmp_path / "m.json"
    if not fails:  # with the exact backend Annoy's recall is reported, not enforced
        assert knn.run(StubStore(), {0: folder}, params, tmp_path / "x.parquet", out)["descriptors"]["gap"][
            "recall_at_k"] == 0.42
        return
    with pytest.raises(knn.KnnError) as err:
        knn.run(StubStore(), {0: folder}, params, tmp_path / "x.parquet", out)
    msg = str(err.value)
    assert msg.startswith("d/b fold 0 gap: Annoy recall@10 = 0.420 < knn.min_recall = 0.9; raise knn.search_k (now 100)")
    assert "index.n_trees (now 7)" in msg and "index.pca_dim" in msg and "knn.backend: exact" in msg
    assert not out.exists()  # nothing written
