"""Memory-based classification, docs/method.md §2 (Eq. 1-3), with Annoy or exact search (hue.search).

Classification is a pure function of (neighbour distances, neighbour labels, which query
image each query vector belongs to, class counts of the memory): search and vote are apart,
so the same vote runs on Annoy's neighbours and on the exact reference.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from hue import index, search, shards
from hue.config import KnnParams
from hue.errors import HueError


class KnnError(HueError):
    """Annoy's recall is too low, or an index is missing."""


# --- Eq. 1-3 -------------------------------------------------------------------------------


def kernel_weights(dist: np.ndarray, eps: float) -> np.ndarray:
    """Eq. 3: f = exp(-d^2 / (alpha^2 + eps)), alpha = distance to the nearest neighbour; (Q, K) -> (Q, K)."""
    alpha = dist[:, :1]  # (Q, 1) adaptive bandwidth (neighbours are sorted nearest first)
    return np.exp(-(dist.astype(np.float64) ** 2) / (alpha.astype(np.float64) ** 2 + eps))


def kernel_vote(dist: np.ndarray, neighbour_labels: np.ndarray, query_image: np.ndarray, n_images: int,
                class_counts: np.ndarray, eps: float) -> np.ndarray:
    """Eq. 1-2: per query image, the class-frequency-normalised kernel vote; -> scores (n_images, C)."""
    weights = kernel_weights(dist, eps)  # (Q, K)
    valid = neighbour_labels >= 0  # missing neighbours (fewer than K found) vote nothing
    scores = np.zeros((n_images, len(class_counts)), dtype=np.float64)
    rows = np.broadcast_to(query_image[:, None], neighbour_labels.shape)
    np.add.at(scores, (rows[valid], neighbour_labels[valid]), weights[valid])
    counts = class_counts.astype(np.float64)
    return np.divide(scores, counts, out=np.zeros_like(scores), where=counts > 0)


def predict(scores: np.ndarray) -> np.ndarray:
    """argmax over classes; ties go to the lowest class index (np.argmax takes the first)."""
    return scores.argmax(axis=1)


# --- one fold ------------------------------------------------------------------------------


def query_groups(descriptor: str, n_images: int, n_positions: int) -> np.ndarray:
    """Which query image each query vector belongs to: (Q,) ints in 0..n_images-1."""
    if descriptor == "pixel":
        return np.repeat(np.arange(n_images), n_positions)
    return np.arange(n_images)


def memory_shards(store: shards.ActivationStore, descriptor: str, memory_ids: np.ndarray, info: dict, pca):
    """Stream the memory shard by shard: (item offset, (m_j, D) float32 vectors), one shard in RAM at a time."""
    p = store.n_positions if descriptor == "pixel" else 1
    images = np.unique(memory_ids // p)
    bounds = np.cumsum([0, *info["shard_images"]])
    for offset, lo, hi in zip(info["shard_offsets"], bounds[:-1], bounds[1:]):
        yield offset, index.project(store.vectors(descriptor, images[lo:hi]), pca)


def annoy_shards(folder: Path, descriptor: str, info: dict) -> list:
    """Every memory-mapped Annoy shard of a descriptor with its item offset."""
    return [(index.load_annoy(folder, descriptor, info["dim"], j), offset)
            for j, offset in enumerate(info["shard_offsets"])]


def evaluate_fold(store: shards.ActivationStore, folder: Path, fold: int, descriptor: str,
                  params: KnnParams) -> dict:
    """Classify the held-out fold's images against the fold's memory, with the exact reference."""
    labels = store.images["label"].to_numpy()
    n_classes = int(labels.max()) + 1
    info = shards.read_json(folder / "info.json")["descriptors"][descriptor]
    queries_img = np.flatnonzero(store.images["fold"].to_numpy() == fold)
    memory_ids = np.load(folder / f"{descriptor}.ids.npy")  # item -> vector id
    pca = index.load_pca(folder, descriptor)
    queries = index.project(store.vectors(descriptor, queries_img), pca)  # (Q, D)
    p = store.n_positions if descriptor == "pixel" else 1
    memory_labels = labels[memory_ids // p]  # (M,)
    class_counts = np.bincount(memory_labels, minlength=n_classes)
    groups = query_groups(descriptor, len(queries_img), store.n_positions)
    exact = lambda q: search.exact_search(q, memory_shards(store, descriptor, memory_ids, info, pca),  # noqa: E731
                                          params.k, params.query_block)

    start = time.perf_counter()
    if params.backend == "annoy":
        dist, item = search.annoy_search_sharded(annoy_shards(folder, descriptor, info), queries, params.k,
                                                 params.search_k)
    else:
        dist, item = exact(queries)
    seconds = time.perf_counter() - start

    neighbour_labels = np.where(item >= 0, memory_labels[np.maximum(item, 0)], -1)
    pred = predict(kernel_vote(dist, neighbour_labels, groups, len(queries_img), class_counts, params.eps))
    truth = labels[queries_img]

    # exact reference on a seeded sample of held-out images
    rng = np.random.default_rng(params.seed + fold)
    ref_img = np.sort(rng.choice(len(queries_img), min(params.reference_images, len(queries_img)), replace=False))
    ref_rows = np.flatnonzero(np.isin(groups, ref_img))
    if params.backend == "annoy":
        ref_dist, ref_item = exact(queries[ref_rows])
        ann_item = item[ref_rows]
    else:  # the main search is the reference; measure Annoy anyway, so its recall is known before anyone uses it
        ref_dist, ref_item = dist[ref_rows], item[ref_rows]
        _, ann_item = search.annoy_search_sharded(annoy_shards(folder, descriptor, info), queries[ref_rows],
                                                  params.k, params.search_k)
    remap = np.searchsorted(ref_img, groups[ref_rows])
    ref_labels = np.where(ref_item >= 0, memory_labels[np.maximum(ref_item, 0)], -1)  # -1: fewer than k in memory
    ref_pred = predict(kernel_vote(ref_dist, ref_labels, remap, len(ref_img), class_counts, params.eps))
    return {
        "accuracy": float((pred == truth).mean()),
        "recall_at_k": search.recall_at_k(ann_item, ref_item),
        "agreement": float((pred[ref_img] == ref_pred).mean()),
        "n_queries": len(queries),
        "search_seconds": seconds,
        "neighbours": (dist, item, memory_ids, queries_img),
    }


# --- the stage -----------------------------------------------------------------------------


def match_table(store: shards.ActivationStore, fold: int, neighbours: tuple) -> pd.DataFrame:
    """For every query pixel, its K matches: positions, labels and distances."""
    from hue.extract import centred_positions

    dist, item, memory_ids, queries_img = neighbours
    p = store.n_positions
    xs, ys = centred_positions(*store.grid)
    labels = store.images["label"].to_numpy()
    q, k = item.shape
    q_vec = np.repeat(np.arange(q), k)
    q_img, q_pos = queries_img[q_vec // p], q_vec % p
    valid = item.ravel() >= 0
    m_id = memory_ids[np.maximum(item.ravel(), 0)]
    m_img, m_pos = m_id // p, m_id % p
    table = pd.DataFrame({
        "fold": np.full(q * k, fold, np.int16), "query_image": q_img.astype(np.int32),
        "qx": xs[q_pos].astype(np.float32), "qy": ys[q_pos].astype(np.float32),
        "query_label": labels[q_img].astype(np.int32), "rank": np.tile(np.arange(k), q).astype(np.int16),
        "match_image": m_img.astype(np.int32), "mx": xs[m_pos].astype(np.float32),
        "my": ys[m_pos].astype(np.float32), "match_label": labels[m_img].astype(np.int32),
        "distance": dist.ravel().astype(np.float32),
    })
    return table[valid]


TIMING_KEYS = ("search_seconds",)


def run(activations: Path, index_dirs: dict[int, Path], params: KnnParams, matches_out: Path, detail_out: Path,
        timings_out: Path) -> dict:
    """The knn stage: every descriptor on every run fold; fails when Annoy's recall is too low."""
    per = {d: {} for d in params.descriptors}
    tables, manifest = [], None
    for fold, folder in sorted(index_dirs.items()):
        store = shards.open_store(activations, fold)
        manifest = store.manifest
        if not (folder / "info.json").exists():
            raise KnnError(f"{folder}/info.json missing: run the index stage for fold {fold} first")
        info = shards.read_json(folder / "info.json")
        for descriptor in params.descriptors:
            if descriptor not in info["descriptors"]:
                raise KnnError(f"{folder} has no {descriptor} index; rerun the index stage (dvc repro)")
            r = evaluate_fold(store, folder, fold, descriptor, params)
            if params.backend == "annoy" and r["recall_at_k"] < params.min_recall:
                raise KnnError(
                    f"{manifest['dataset']}/{manifest['source']} fold {fold} {descriptor}: Annoy "
                    f"recall@{params.k} = {r['recall_at_k']:.3f} < knn.min_recall = {params.min_recall}; raise "
                    f"knn.search_k (now {params.search_k}) or index.n_trees (now {info['n_trees']}), set "
                    f"index.pca_dim, or use knn.backend: exact"
                )
            if descriptor == "pixel":
                tables.append(match_table(store, fold, r["neighbours"]))
            per[descriptor][fold] = {k: v for k, v in r.items() if k != "neighbours"}
    detail, timings = summarise(manifest, per, params)
    if tables:
        shards.write_parquet(matches_out, pd.concat(tables, ignore_index=True))
    shards.write_json(detail_out, detail)
    shards.write_json(timings_out, timings)
    return detail


def summarise(manifest: dict, per: dict, params: KnnParams) -> tuple[dict, dict]:
    """Deterministic numbers (mean, std and per-fold accuracy, recall, agreement) and the timings apart."""
    detail = {"dataset": manifest["dataset"], "source": manifest["source"], "weights_id": manifest["weights_id"],
              "backend": params.backend, "k": params.k, "search_k": params.search_k, "descriptors": {}}
    timings = {"dataset": manifest["dataset"], "source": manifest["source"], "descriptors": {}}
    for descriptor, folds in per.items():
        acc = np.array([f["accuracy"] for f in folds.values()])
        detail["descriptors"][descriptor] = {
            "accuracy": float(acc.mean()),
            "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "accuracy_per_fold": {str(k): f["accuracy"] for k, f in folds.items()},
            "recall_at_k": float(np.mean([f["recall_at_k"] for f in folds.values()])),
            "recall_at_k_min": float(np.min([f["recall_at_k"] for f in folds.values()])),
            "agreement": float(np.mean([f["agreement"] for f in folds.values()])),
        }
        seconds = sum(f["search_seconds"] for f in folds.values())
        timings["descriptors"][descriptor] = {
            "search_seconds": seconds, "queries_per_second": sum(f["n_queries"] for f in folds.values()) / max(seconds, 1e-9)}
    return detail, timings
