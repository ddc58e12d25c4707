"""Every observation statistic on planted data with a known answer."""

import numpy as np
import pandas as pd
import pytest

from hue import observe


def test_radial_energy_map_gives_its_profile_and_is_symmetric():
    xs, ys = observe.grid_coords(5, 5)
    energies = np.stack([10 - np.hypot(xs, ys) ** 2] * 4)  # (4, 5, 5) planted E = 10 - r^2
    s = observe.energy_stats(energies)
    prof = {p["radius"]: p["energy"] for p in s["radial_profile"]}
    assert prof[0.0] == pytest.approx(10) and prof[1.0] == pytest.approx(9) and prof[2.828427] == pytest.approx(2)
    assert s["symmetry"]["rot90"] == pytest.approx(0) and s["symmetry"]["rot180"] == pytest.approx(0)
    assert s["centre_of_mass"] == pytest.approx((0, 0))
    assert s["centre_to_mean_ratio"] == pytest.approx(10 / energies[0].mean())
    assert np.array(s["map"]) == pytest.approx(energies[0])


def test_asymmetric_energy_map_is_measured():
    emap = np.zeros((3, 3))
    emap[0, 2] = 1.0  # all energy top-right: (x, y) = (1, 1)
    s = observe.energy_stats(emap[None])
    assert s["symmetry"]["rot180"] == pytest.approx(np.sqrt(2)) and s["centre_of_mass"] == pytest.approx((1, 1))
    assert observe.grid_coords(3, 3)[1][0, 0] == 1  # row 0 is the top (y up)


def planted_matches(angle_of_class, n_images=40, k=10, radius=2.0, seed=0):
    """Query images of 2 classes; same-class matches at a fixed angle per class, others anywhere."""
    rng = np.random.default_rng(seed)
    rows = []
    for img in range(n_images):
        label = img % 2
        for _ in range(k):
            same = rng.random() < 0.7
            theta = angle_of_class[label] if same else rng.uniform(-np.pi, np.pi)
            r = radius if same else 3.0
            rows.append({"fold": 0, "query_image": img, "qx": 0.0, "qy": 0.0, "query_label": label, "rank": 0,
                         "match_image": 1000, "mx": r * np.cos(theta), "my": r * np.sin(theta),
                         "match_label": label if same else 1 - label, "distance": 0.1})
    return pd.DataFrame(rows)


def test_matches_at_a_known_angle_give_that_mean_and_r_one():
    m = planted_matches({0: np.radians(60), 1: np.radians(-120)})
    s = observe.match_stats(m, (7, 7), 2, n_perm=50, seed=0)
    c0, c1 = s["per_class"][0], s["per_class"][1]
    assert c0["mean_deg"] == pytest.approx(60) and c0["R"] == pytest.approx(1)
    assert c1["mean_deg"] == pytest.approx(-120) and c1["R"] == pytest.approx(1)
    assert c0["rayleigh_p"] < 1e-6 and c0["permutation_p"] < 0.05 and c0["R_shuffled"] < 0.9
    assert s["mean_radius_same"] == pytest.approx(2.0) and s["mean_radius_different"] == pytest.approx(3.0)
    assert s["share_same_class"] == pytest.approx((m["match_label"] == m["query_label"]).mean())
    same = m["match_label"] == m["query_label"]
    assert s["angles_same"]["n"] == same.sum() and s["angles_different"]["n"] == (~same).sum()
    assert s["angles_different"]["R"] < 0.3 and s["angles_same"]["R"] < 0.1  # opposite class angles cancel when pooled
    assert np.array(s["heatmap_same_by_class"][0]).sum() == (same & (m["query_label"] == 0)).sum()
    assert np.array(s["heatmap_same"]).sum() + np.array(s["heatmap_different"]).sum() == len(m)


def test_uniform_angles_give_r_near_zero_and_large_p():
    rng = np.random.default_rng(1)
    theta = rng.uniform(-np.pi, np.pi, 4000)
    m = pd.DataFrame({"query_image": np.arange(4000) // 10, "query_label": np.zeros(4000, int),
                      "match_label": np.zeros(4000, int), "mx": 2 * np.cos(theta), "my": 2 * np.sin(theta),
                      "qx": 0.0, "qy": 0.0})
    s = observe.match_stats(m, (7, 7), 1, n_perm=10, seed=0)
    assert s["per_class"][0]["R"] < 0.05 and s["per_class"][0]["rayleigh_p"] > 0.01


def test_heatmap_places_positions_on_the_grid():
    hm = observe.heatmap(np.array([0.0, 1.0, -1.0]), np.array([0.0, 1.0, -1.0]), (3, 3))
    assert hm.tolist() == [[0, 0, 1], [0, 1, 0], [1, 0, 0]]


def conditional_frame(dx, dy):
    """Queries on a ring at radius 2; every match displaced by (radial dx, tangential dy) +- noise."""
    rows = []
    for qx, qy in ((2, 0), (0, 2), (-2, 0), (0, -2)):
        er, et = np.array([qx, qy]) / 2.0, np.array([-qy, qx]) / 2.0
        for s in (-1, 1):
            d = s * (dx * er + dy * et)
            rows.append({"qx": float(qx), "qy": float(qy), "mx": qx + d[0], "my": qy + d[1], "query_label": 0,
                         "match_label": 0})
    return pd.DataFrame(rows)


def test_tangential_spread_gives_ratio_above_one_and_radial_below():
    tangential = observe.conditional_stats(conditional_frame(0.0, 1.0), (7, 7))["same"]
    radial = observe.conditional_stats(conditional_frame(1.0, 0.0), (7, 7))["same"]
    assert tangential["radial_variance"] == pytest.approx(0) and tangential["tangential_variance"] == pytest.approx(1)
    assert radial["tangential_radial_ratio"] == pytest.approx(0)
    assert tangential["mean_distance_to_query"] == pytest.approx(1) and tangential["share_at_query_position"] == 0
    mixed = observe.conditional_stats(conditional_frame(1.0, 2.0), (7, 7))["same"]
    assert mixed["tangential_radial_ratio"] == pytest.approx(4.0) and mixed["n"] == 8
    frame = conditional_frame(1.0, 0.0).assign(match_label=1)  # now every match is a different-class one
    both = observe.conditional_stats(frame, (7, 7))
    assert both["same"]["n"] == 0 and both["same"]["tangential_radial_ratio"] is None
    assert both["different"]["radial_variance"] == pytest.approx(1) and both["different"]["n"] == 8


def test_conditional_maps_are_normalised_per_query_position():
    maps = observe.conditional_maps(conditional_frame(0.0, 1.0), (7, 7))
    assert set(maps) == {"2,0", "0,2", "-2,0", "0,-2"}
    assert np.array(maps["2,0"]["same"]).sum() == pytest.approx(1)


def test_vectors_in_a_known_hue_plane_give_their_angles():
    n_dim, rng = 16, np.random.default_rng(0)
    u = np.full(n_dim, 1 / np.sqrt(n_dim))
    basis = np.linalg.qr(np.column_stack([u, rng.normal(size=(n_dim, 2))]))[0][:, 1:].T  # (2, N) orthonormal, _|_ u
    phi = rng.uniform(-np.pi, np.pi, 300)
    a, b = 2.0, 0.5
    vectors = a * u + b * (np.cos(phi)[:, None] * basis[0] + np.sin(phi)[:, None] * basis[1])  # (300, N)
    plane = observe.hue_plane(vectors)
    hue, sat = observe.hue_and_saturation(vectors, plane)
    assert sat == pytest.approx(np.full(300, b / np.hypot(a, b)))
    shift = np.angle(np.exp(1j * (hue - phi)))  # rotation of the fitted plane
    flip = np.angle(np.exp(1j * (hue + phi)))  # or a reflection
    assert np.ptp(np.unwrap(shift)) < 1e-6 or np.ptp(np.unwrap(flip)) < 1e-6


def test_hue_stats_find_class_specific_hue():
    n_dim, rng = 12, np.random.default_rng(1)
    u = np.full(n_dim, 1 / np.sqrt(n_dim))
    basis = np.linalg.qr(np.column_stack([u, rng.normal(size=(n_dim, 2))]))[0][:, 1:].T
    labels = np.repeat([0, 1], 200)
    phi = np.where(labels == 0, 0.5, 2.5) + 0.05 * rng.normal(size=400)
    vectors = u + np.cos(phi)[:, None] * basis[0] + np.sin(phi)[:, None] * basis[1]
    s = observe.hue_stats(vectors, labels, np.arange(400), observe.hue_plane(vectors), 2, n_perm=20, seed=0)
    assert s["per_class"][0]["R"] > 0.99 and s["per_class"][1]["R"] > 0.99
    assert abs(s["per_class"][0]["mean_rad"] - s["per_class"][1]["mean_rad"]) % (2 * np.pi) == pytest.approx(2.0, abs=0.02)
    assert s["per_class"][0]["permutation_p"] < 0.1 and s["n_vectors"] == 400
    assert s["pooled"]["n"] == 400 and s["pooled"]["R"] < s["per_class"][0]["R"]
    expected_sat = 1 / np.sqrt(2.0)  # ||r|| = 1 (unit circle in the plane), ||I|| = sqrt(1 + 1)
    assert s["saturation"]["mean"] == pytest.approx(expected_sat) and s["saturation"]["std"] == pytest.approx(0, abs=1e-9)
    assert s["saturation"]["quantiles"]["p50"] == pytest.approx(expected_sat)
    assert sum(s["saturation"]["histogram"]) == 400 and s["saturation"]["histogram"][int(expected_sat * 20)] == 400


def test_head_stats_measure_theta_against_the_label_angles():
    phi = observe.label_angles("circle", 4, 0)
    assert phi == pytest.approx(np.array([0, np.pi / 2, np.pi, -np.pi / 2]))
    labels = np.repeat(np.arange(4), 25)
    offset = np.radians(10)  # every theta' sits 10 degrees past its class's label angle
    theta = np.stack([np.cos(phi[labels] + offset), np.sin(phi[labels] + offset)], 1) * 0.3
    s = observe.head_stats(theta, labels, phi, n_perm=100, seed=0)
    assert s["error_deg"] == pytest.approx(10) and s["per_class"][2]["error_deg"] == pytest.approx(10)
    assert s["per_class"][0]["R"] == pytest.approx(1) and s["label_corr"] == pytest.approx(1)
    shuffled = observe.head_stats(theta, np.random.default_rng(0).permutation(labels), phi, n_perm=100, seed=0)
    assert shuffled["error_deg"] > 45 and shuffled["per_class"][0]["R"] < 0.6


def planted_store(tmp_path, n_per_class=12, n_classes=3, grid=(3, 3), dim=24, seed=0):
    """An activation store whose class c sits at activation-space hue angle 2 pi c / C (known answer)."""
    from hue import shards

    rng = np.random.default_rng(seed)
    u = np.full(dim, 1 / np.sqrt(dim))
    basis = np.linalg.qr(np.column_stack([u, rng.normal(size=(dim, 2))]))[0][:, 1:].T  # (2, N) plane _|_ u
    n, p = n_per_class * n_classes, grid[0] * grid[1]
    labels = np.repeat(np.arange(n_classes), n_per_class)
    folds = np.tile(np.arange(3), n // 3)
    angle = 2 * np.pi * labels / n_classes
    raw = u * 2.0 + (np.cos(angle)[:, None] * basis[0] + np.sin(angle)[:, None] * basis[1])  # (n, N)
    pix = np.repeat(raw[:, None, :], p, 1) + 0.02 * rng.normal(size=(n, p, dim))  # (n, P, N)
    energy = (pix ** 2).sum(-1).reshape(n, *grid)
    unit = pix / np.linalg.norm(pix, axis=-1, keepdims=True)
    gap = unit.mean(1) / np.linalg.norm(unit.mean(1), axis=1, keepdims=True)
    w = shards.ShardWriter(tmp_path, "float32", n)
    w.add(unit.astype(np.float32), gap.astype(np.float32), gap.astype(np.float32), energy.astype(np.float32))
    w.close()
    import pandas as pd

    shards.write_parquet(tmp_path / "images.parquet", pd.DataFrame(
        {"image": np.arange(n), "image_id": [str(i) for i in range(n)], "label": labels, "fold": folds,
         "shard": 0, "row": np.arange(n)}))
    shards.write_json(tmp_path / "manifest.json", {"dataset": "t", "source": "x-random", "weights_id": "w",
                                                   "grid": list(grid), "n_shards": 1})
    return shards.ActivationStore(tmp_path), angle


def test_observe_fold_finds_the_planted_activation_hue_and_its_alignment_with_the_labels(tmp_path):
    from hue import config

    store, _ = planted_store(tmp_path, n_per_class=6, n_classes=6)
    labels = store.images["label"].to_numpy()
    held = np.flatnonzero(store.images["fold"].to_numpy() == 0)
    matches = pd.DataFrame({"fold": 0, "query_image": np.repeat(held, 2), "qx": 0.0, "qy": 0.0,
                            "query_label": np.repeat(labels[held], 2), "rank": np.tile([0, 1], len(held)),
                            "match_image": 0, "mx": np.tile([0.0, 1.0], len(held)), "my": 0.0,
                            "match_label": np.repeat(labels[held], 2), "distance": 0.1})
    params = config.build("observe", {"n_permutations": 100, "hue_fit_vectors": 1000, "hue_max_vectors": 1000})
    d = observe.observe_fold(store, matches, 0, params, lambda m: 2 * np.pi * np.arange(m) / m)
    h = d["headline"]
    assert h["hue_R"] > 0.99 and h["hue_label_corr"] == pytest.approx(1, abs=1e-3)  # planted at the label angles
    assert h["hue_label_corr_p"] < 0.05
    assert h["at_query_position"] == pytest.approx(0.5)  # one of each query's two matches is at its own position
    assert h["head_R"] is None and d["hue_head"] is None  # no hue head: a pretrained source
    scrambled = lambda m: 2 * np.pi * np.array([0, 3, 1, 5, 2, 4])[:m] / m  # noqa: E731  not a rotation or reflection
    s2 = observe.observe_fold(store, matches, 0, params, scrambled)["headline"]
    assert s2["hue_label_corr"] < 0.8 and s2["hue_label_corr_p"] > 0.05 and s2["hue_R"] == h["hue_R"]
