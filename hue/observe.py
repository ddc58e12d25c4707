"""The papers' observations as numbers (docs/method.md §3): energy maps, where matches land,
conditional match locations and the activation-space hue. Pure functions of arrays; `run`
reads the activation store and the kNN match table and writes metrics and figures.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from hue import circular, shards

# --- energy maps (Fig. 3) ------------------------------------------------------------------


def grid_coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred x (columns) and y (rows, up) of an (H, W) map: two (H, W) arrays."""
    ys, xs = np.meshgrid((h - 1) / 2 - np.arange(h), np.arange(w) - (w - 1) / 2, indexing="ij")
    return xs, ys


def radial_profile(energy_map: np.ndarray) -> list[dict]:
    """Mean energy at each distinct distance from the centre."""
    xs, ys = grid_coords(*energy_map.shape)
    radius = np.round(np.hypot(xs, ys), 6)
    return [{"radius": float(r), "energy": float(energy_map[radius == r].mean())} for r in np.unique(radius)]


def symmetry(energy_map: np.ndarray) -> dict:
    """Relative distance of the map from its 90 / 180 degree rotations (0 = symmetric)."""
    norm = float(np.linalg.norm(energy_map)) or 1.0
    out = {"rot180": float(np.linalg.norm(energy_map - np.rot90(energy_map, 2)) / norm)}
    square = energy_map.shape[0] == energy_map.shape[1]
    out["rot90"] = float(np.linalg.norm(energy_map - np.rot90(energy_map)) / norm) if square else None
    return out


def energy_stats(energies: np.ndarray) -> dict:
    """Mean energy map over images, its radial profile and symmetry: (N, H, W) -> dict."""
    emap = energies.mean(0)  # (H, W), row 0 = top
    xs, ys = grid_coords(*emap.shape)
    centre_of_mass = (float((emap * xs).sum() / emap.sum()), float((emap * ys).sum() / emap.sum()))
    return {"map": emap.tolist(), "radial_profile": radial_profile(emap), "symmetry": symmetry(emap),
            "centre_of_mass": centre_of_mass, "centre_to_mean_ratio": float(emap[emap.shape[0] // 2,
                                                                                 emap.shape[1] // 2] / emap.mean())}


# --- match locations (Fig. 5) --------------------------------------------------------------


def heatmap(x: np.ndarray, y: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Counts of centred positions on the grid: (H, W), row 0 = top."""
    h, w = grid
    rows = np.round((h - 1) / 2 - y).astype(int)
    cols = np.round(x + (w - 1) / 2).astype(int)
    out = np.zeros(grid, dtype=np.int64)
    np.add.at(out, (rows, cols), 1)
    return out


def class_angle_stats(theta: np.ndarray, classes: np.ndarray, n_classes: int) -> list[dict]:
    """Circular summary of the angles of each class."""
    return [{"class": c, **circular.summary(theta[classes == c])} for c in range(n_classes)]


def class_resultants(theta: np.ndarray, classes: np.ndarray, n_classes: int) -> np.ndarray:
    """R of each class's angles, vectorised: (n_classes,), nan for empty classes."""
    n = np.bincount(classes, minlength=n_classes).astype(float)
    c = np.bincount(classes, weights=np.cos(theta), minlength=n_classes)
    s = np.bincount(classes, weights=np.sin(theta), minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.hypot(c, s) / n


def permutation_baseline(theta: np.ndarray, member_of: np.ndarray, labels: np.ndarray, match_labels: np.ndarray | None,
                         n_classes: int, n_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """R per class when labels are shuffled across units (images): (mean R, share of R >= observed).

    member_of: unit index of each angle; labels: label of each unit. With `match_labels`, only
    angles whose match label equals the (shuffled) unit label count (same-class matches).
    """
    def resultants(unit_labels):
        cls = unit_labels[member_of]
        keep = np.ones(len(theta), bool) if match_labels is None else match_labels == cls
        return class_resultants(theta[keep], cls[keep], n_classes)

    observed = resultants(labels)
    rng = np.random.default_rng(seed)
    perms = np.stack([resultants(rng.permutation(labels)) for _ in range(n_perm)])  # (n_perm, C)
    with np.errstate(invalid="ignore"):
        exceed = (1 + (perms >= observed).sum(0)) / (1 + n_perm)
    return np.nanmean(perms, 0), exceed


def match_stats(matches: pd.DataFrame, grid: tuple[int, int], n_classes: int, n_perm: int, seed: int) -> dict:
    """Where same- and different-class matches land, with per-class angular bias and its baseline."""
    same = (matches["match_label"] == matches["query_label"]).to_numpy()
    mx, my = matches["mx"].to_numpy(), matches["my"].to_numpy()
    radius = np.hypot(mx, my)
    off = radius > 0  # the angle of the centre cell is undefined
    theta = np.arctan2(my, mx)
    qcls = matches["query_label"].to_numpy()
    per_class = class_angle_stats(theta[same & off], qcls[same & off], n_classes)
    units, member_of = np.unique(matches["query_image"].to_numpy(), return_inverse=True)
    unit_labels = np.zeros(len(units), dtype=np.int64)
    unit_labels[member_of] = qcls
    base_r, perm_p = permutation_baseline(theta[off], member_of[off], unit_labels, matches["match_label"].to_numpy()[off],
                                          n_classes, n_perm, seed)
    for row, r0, p in zip(per_class, base_r, perm_p):
        row.update(R_shuffled=float(r0), permutation_p=float(p))
    return {
        "share_same_class": float(same.mean()),
        "mean_radius_same": float(radius[same].mean()) if same.any() else None,
        "mean_radius_different": float(radius[~same].mean()) if (~same).any() else None,
        "heatmap_same": heatmap(mx[same], my[same], grid).tolist(),
        "heatmap_different": heatmap(mx[~same], my[~same], grid).tolist(),
        "heatmap_same_by_class": [heatmap(mx[same & (qcls == c)], my[same & (qcls == c)], grid).tolist()
                                  for c in range(n_classes)],
        "angles_same": circular.summary(theta[same & off]),
        "angles_different": circular.summary(theta[~same & off]),
        "per_class": per_class,
    }


# --- conditional match locations (Fig. 6 / 8) ----------------------------------------------


def displacement_components(qx, qy, mx, my) -> tuple[np.ndarray, np.ndarray]:
    """Radial and tangential components of match - query, relative to the query's direction."""
    r = np.hypot(qx, qy)
    er = np.stack([qx / r, qy / r])  # (2, n) unit radial
    et = np.stack([-er[1], er[0]])  # (2, n) unit tangential
    d = np.stack([mx - qx, my - qy])
    return (d * er).sum(0), (d * et).sum(0)


def conditional_stats(matches: pd.DataFrame, grid: tuple[int, int]) -> dict:
    """p(x_match | x_query): spread around the query position, tangential vs radial variance."""
    q = matches[["qx", "qy", "mx", "my"]].to_numpy(dtype=np.float64).T
    same = (matches["match_label"] == matches["query_label"]).to_numpy()
    dist = np.hypot(q[2] - q[0], q[3] - q[1])
    out = {}
    for name, sel in (("same", same), ("different", ~same)):
        off = sel & (np.hypot(q[0], q[1]) > 0)
        rad, tan = displacement_components(*q[:, off])
        out[name] = {
            "n": int(sel.sum()),
            "mean_distance_to_query": float(dist[sel].mean()) if sel.any() else None,
            "share_at_query_position": float((dist[sel] == 0).mean()) if sel.any() else None,
            "radial_variance": float(rad.var()) if off.any() else None,
            "tangential_variance": float(tan.var()) if off.any() else None,
            "tangential_radial_ratio": float(tan.var() / rad.var()) if off.any() and rad.var() > 0 else None,
        }
    out["maps"] = conditional_maps(matches, grid)
    return out


def conditional_maps(matches: pd.DataFrame, grid: tuple[int, int]) -> dict:
    """Normalised match heatmaps for every query position: {'x,y': {'same': (H,W), 'different': (H,W)}}."""
    same = (matches["match_label"] == matches["query_label"]).to_numpy()
    out = {}
    for (qx, qy), idx in matches.groupby(["qx", "qy"]).indices.items():
        entry = {}
        for name, sel in (("same", same[idx]), ("different", ~same[idx])):
            hm = heatmap(matches["mx"].to_numpy()[idx][sel], matches["my"].to_numpy()[idx][sel], grid)
            entry[name] = (hm / max(hm.sum(), 1)).round(6).tolist()
        out[f"{qx:g},{qy:g}"] = entry
    return out


# --- activation-space hue ------------------------------------------------------------------


def hue_plane(fit_vectors: np.ndarray) -> np.ndarray:
    """The two leading principal directions of the residuals from the medial axis: (2, N).

    Directions come from the centred residuals (ordinary PCA); hue then projects the residual
    itself, so the origin of the hue plane stays on the medial (grey) axis as for colour hue.
    (Uncentred directions were tried: on post-ReLU activations the first one is the mean
    residual and every hue collapses near one angle.) Signs are fixed: each direction's
    largest-magnitude component is positive.
    """
    r = residuals(fit_vectors)
    _, _, vt = np.linalg.svd(r - r.mean(0), full_matrices=False)
    plane = vt[:2]
    signs = np.sign(plane[np.arange(2), np.abs(plane).argmax(1)])
    return plane * signs[:, None]


def residuals(vectors: np.ndarray) -> np.ndarray:
    """r = I - (I . u) u with u = (1, ..., 1) / sqrt(N): (n, N) -> (n, N)."""
    u = np.full(vectors.shape[1], 1 / np.sqrt(vectors.shape[1]))
    return vectors - np.outer(vectors @ u, u)


def hue_and_saturation(vectors: np.ndarray, plane: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """hue = atan2(pc2, pc1) of the residual, saturation = ||r|| / ||I||: (n, N) -> (n,), (n,)."""
    r = residuals(vectors)
    proj = r @ plane.T  # (n, 2)
    norms = np.linalg.norm(vectors, axis=1)
    sat = np.divide(np.linalg.norm(r, axis=1), norms, out=np.zeros(len(vectors)), where=norms > 0)
    return np.arctan2(proj[:, 1], proj[:, 0]), sat


def hue_stats(vectors: np.ndarray, labels: np.ndarray, images: np.ndarray, plane: np.ndarray, n_classes: int,
              n_perm: int, seed: int) -> dict:
    """Per-class circular statistics of the hue angle (with a shuffled-label baseline) and saturation."""
    hue, sat = hue_and_saturation(vectors, plane)
    keep = sat > 0
    per_class = class_angle_stats(hue[keep], labels[keep], n_classes)
    units, member_of = np.unique(images[keep], return_inverse=True)
    unit_labels = np.zeros(len(units), dtype=np.int64)
    unit_labels[member_of] = labels[keep]
    base_r, perm_p = permutation_baseline(hue[keep], member_of, unit_labels, None, n_classes, n_perm, seed)
    for row, r0, p in zip(per_class, base_r, perm_p):
        row.update(R_shuffled=float(r0), permutation_p=float(p))
    q = np.quantile(sat, [0.05, 0.25, 0.5, 0.75, 0.95])
    return {
        "pooled": circular.summary(hue[keep]),
        "per_class": per_class,
        "saturation": {"mean": float(sat.mean()), "std": float(sat.std()),
                       "quantiles": dict(zip(["p05", "p25", "p50", "p75", "p95"], map(float, q))),
                       "histogram": np.histogram(sat, bins=20, range=(0, 1))[0].tolist()},
        "n_vectors": int(len(vectors)),
    }


# --- the hue head and the angular labels (trained sources) --------------------------------


def label_angles(kind: str, n_classes: int, seed: int) -> np.ndarray:
    """phi_c, the angle of each class's angular label theta_c (the hue loss's target): (M,)."""
    from hue import losses

    labels = losses.angular_labels(kind, n_classes, seed).double().numpy()
    return np.arctan2(labels[:, 1], labels[:, 0])


def head_stats(theta: np.ndarray, labels: np.ndarray, phi: np.ndarray, n_perm: int, seed: int) -> dict:
    """The hue head's theta' on held-out images: per-class circular summary and angular error to phi_c."""
    angle = np.arctan2(theta[:, 1], theta[:, 0])  # (n,)
    error = np.degrees(np.abs(circular.wrap(angle - phi[labels])))  # (n,) in [0, 180]
    per_class = class_angle_stats(angle, labels, len(phi))
    for row in per_class:
        sel = labels == row["class"]
        row["error_deg"] = float(error[sel].mean()) if sel.any() else None
    means = np.array([r["mean_rad"] for r in per_class])
    ok = ~np.isnan(means)
    corr, corr_p = circular.correlation_test(means[ok], phi[ok], n_perm, seed)
    return {"per_class": per_class, "error_deg": float(error.mean()), "label_corr": corr, "label_corr_p": corr_p}


# --- the stage -----------------------------------------------------------------------------


def _by_class(rows: list[dict]) -> dict:
    """Per-class rows keyed by label."""
    return {str(r["class"]): {k: v for k, v in r.items() if k != "class"} for r in rows}


def sample_images(images: np.ndarray, max_vectors: int, per_image: int, seed: int) -> np.ndarray:
    """A seeded, sorted sample of whole images holding at most `max_vectors` pixel vectors."""
    n = max(1, max_vectors // per_image)
    if len(images) <= n:
        return images
    return np.sort(np.random.default_rng(seed).choice(images, n, replace=False))


def _mean(values) -> float | None:
    """Mean of the finite values, None if there are none."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else None


def _share_below(values, level: float = 0.05) -> float | None:
    """Share of finite p-values below `level`."""
    v = np.array([x for x in values if x is not None], dtype=np.float64)
    v = v[np.isfinite(v)]
    return float((v < level).mean()) if len(v) else None


def observe_fold(store, matches: pd.DataFrame, fold: int, params, phi_of) -> dict:
    """Every observation on held-out `fold`, seen through the store that serves it."""
    from hue import index

    labels = store.images["label"].to_numpy()
    n_classes = int(labels.max()) + 1
    p = store.n_positions
    held = np.flatnonzero(store.images["fold"].to_numpy() == fold)
    energy = energy_stats(store.energy(held))
    where = match_stats(matches, store.grid, n_classes, params.n_permutations, params.seed)
    conditional = conditional_stats(matches, store.grid)
    conditional.pop("maps")
    memory = index.memory_images(store, fold)
    plane = hue_plane(store.vectors("pixel", sample_images(memory, params.hue_fit_vectors, p, params.seed)))
    chosen = sample_images(held, params.hue_max_vectors, p, params.seed + 1)
    hue = hue_stats(store.vectors("pixel", chosen), np.repeat(labels[chosen], p), np.repeat(chosen, p), plane,
                    n_classes, params.n_permutations, params.seed)
    phi = phi_of(n_classes)
    hue_means = np.array([r["mean_rad"] for r in hue["per_class"]])
    ok = ~np.isnan(hue_means)
    hue["label_corr"], hue["label_corr_p"] = circular.correlation_test(hue_means[ok], phi[ok], params.n_permutations,
                                                                       params.seed)
    head = None
    if "theta_x" in store.images:
        theta = store.images[["theta_x", "theta_y"]].to_numpy()[held]
        head = head_stats(theta, labels[held], phi, params.n_permutations, params.seed)
    all_dist = np.hypot(matches["mx"].to_numpy() - matches["qx"].to_numpy(),
                        matches["my"].to_numpy() - matches["qy"].to_numpy())
    headline = {
        "at_query_position": float((all_dist == 0).mean()) if len(all_dist) else None,
        "match_R": _mean(r["R"] for r in where["per_class"]),
        "match_R_shuffled": _mean(r["R_shuffled"] for r in where["per_class"]),
        "match_significant": _share_below(r["permutation_p"] for r in where["per_class"]),
        "tangential_radial": conditional["same"]["tangential_radial_ratio"],
        "hue_R": _mean(r["R"] for r in hue["per_class"]),
        "hue_R_shuffled": _mean(r["R_shuffled"] for r in hue["per_class"]),
        "hue_significant": _share_below(r["permutation_p"] for r in hue["per_class"]),
        "hue_label_corr": hue["label_corr"], "hue_label_corr_p": hue["label_corr_p"],
        "energy_asymmetry": energy["symmetry"]["rot180"],
        "head_R": _mean(r["R"] for r in head["per_class"]) if head else None,
        "head_error_deg": head["error_deg"] if head else None,
        "head_label_corr": head["label_corr"] if head else None,
    }
    for block in (where, hue) + ((head,) if head else ()):
        block["per_class"] = _by_class(block["per_class"])
    saturation_histogram = hue["saturation"].pop("histogram")
    return {"headline": headline, "energy": {k: v for k, v in energy.items() if k != "map"},
            "match_locations": {k: v for k, v in where.items() if not k.startswith("heatmap")},
            "conditional": conditional, "activation_hue": hue, "hue_head": head,
            "_map": energy["map"], "_hue_class_angles": {c: [r["mean_rad"], r["R"]]
                                                          for c, r in hue["per_class"].items()},
            "_saturation": saturation_histogram}


def across_folds(per_fold: dict[int, dict]) -> dict:
    """Mean, std and per-fold values of every headline number."""
    out = {}
    for key in next(iter(per_fold.values()))["headline"]:
        values = {f: d["headline"][key] for f, d in per_fold.items()}
        finite = [v for v in values.values() if v is not None and np.isfinite(v)]
        out[key] = {"mean": float(np.mean(finite)) if finite else None,
                    "std": float(np.std(finite, ddof=1)) if len(finite) > 1 else (0.0 if finite else None),
                    "per_fold": {str(f): v for f, v in values.items()}}
    return out


def figure_maps(stores_grid: tuple[int, int], matches: pd.DataFrame, per_fold: dict[int, dict], n_classes: int,
                n_perm: int, seed: int) -> dict:
    """The maps behind the figures: pooled over folds where positions are comparable (image plane, theta')."""
    pooled = match_stats(matches, stores_grid, n_classes, n_perm, seed)
    first = per_fold[min(per_fold)]
    head_rows = None
    if first["hue_head"] is not None:
        head_rows = {c: [r["mean_rad"], r["R"]] for c, r in first["hue_head"]["per_class"].items()}
    return {"grid": list(stores_grid), "energy_map": np.mean([d["_map"] for d in per_fold.values()], 0).tolist(),
            "heatmap_same": pooled["heatmap_same"], "heatmap_different": pooled["heatmap_different"],
            "heatmap_same_by_class": pooled["heatmap_same_by_class"],
            "mean_radius_same": pooled["mean_radius_same"], "mean_radius_different": pooled["mean_radius_different"],
            "conditional": conditional_maps(matches, stores_grid),
            "class_angles": {str(r["class"]): [r["mean_rad"], r["R"]] for r in pooled["per_class"]},
            "hue_class_angles": first["_hue_class_angles"], "head_class_angles": head_rows,
            "saturation_histogram": first["_saturation"], "hue_fold": min(per_fold)}


def run(activations, matches_path, params, run_folds: tuple[int, ...], labels_kind: str,
        labels_seed: int) -> tuple[dict, dict]:
    """All observations of one dataset x source, fold by fold: (detail, maps for the figures).

    Each held-out fold is observed through the store that serves it: for a trained source the
    model that never saw it; the hue plane is fitted on that fold's memory only.
    """
    matches = pd.read_parquet(matches_path)
    phi_of = lambda m: label_angles(labels_kind, m, labels_seed)  # noqa: E731
    per_fold, store = {}, None
    for fold in run_folds:
        store = shards.open_store(activations, fold)
        per_fold[fold] = observe_fold(store, matches[matches["fold"] == fold], fold, params, phi_of)
    n_classes = int(store.images["label"].max()) + 1
    maps = figure_maps(store.grid, matches, per_fold, n_classes, params.n_permutations, params.seed)
    for d in per_fold.values():
        for key in [k for k in d if k.startswith("_")]:
            d.pop(key)
    detail = {"dataset": store.manifest["dataset"], "source": store.manifest["source"],
              "weights_id": store.manifest["weights_id"], "grid": list(store.grid), "labels": labels_kind,
              "headline": across_folds(per_fold), "folds": {str(f): d for f, d in per_fold.items()}}
    return detail, maps
