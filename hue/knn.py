"""Memory-based classification, SPEC section 2 (Eq. 1-3), with Annoy or exact search.

Classification is a pure function of (neighbour distances, neighbour labels, which query
image each query vector belongs to, class counts of the memory): search and vote are apart,
so the same vote runs on Annoy's neighbours and on the exact reference.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from hue import index, shards
from hue.config import KnnParams
from hue.errors import HueError


class KnnError(HueError):
    """Annoy's recall is too low, or an index is missing."""


# --- search --------------------------------------------------------------------------------


def exact_search(queries: np.ndarray, memory: np.ndarray, k: int, query_block: int = 2048,
                 memory_block: int = 65536, device: str | None = None,
                 shortlist: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest memory rows by Euclidean distance: (Q, D), (M, D) -> dist (Q, k), idx (Q, k).

    Blocked matrix products. On a GPU (torch) the products run in bf16 to shortlist 2k + 8
    candidates per block, re-ranked with fp32 distances. On the CPU there is no fast bf16, and
    numpy's OpenBLAS runs these fp32 products about 2x faster than torch's MKL build on the AMD
    CPUs measured (bench/RESULTS.md), so the products go through numpy. `shortlist` forces the
    bf16 path (on any device, for tests).
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    shortlist = dev.type == "cuda" if shortlist is None else shortlist
    k = min(k, len(memory))
    if len(queries) == 0:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    memory = np.ascontiguousarray(memory, dtype=np.float32)
    mem_sq = np.einsum("md,md->m", memory, memory)  # (M,) squared norms (1, or 0 for all-zero vectors)
    if shortlist or dev.type != "cpu":
        return _exact_torch(queries, memory, mem_sq, k, query_block, memory_block, dev, shortlist)
    out_d, out_i = [], []
    for q0 in range(0, len(queries), query_block):
        q = np.ascontiguousarray(queries[q0:q0 + query_block], dtype=np.float32)  # (B, D)
        best_s, best_i = None, None
        for m0 in range(0, len(memory), memory_block):
            scores = q @ memory[m0:m0 + memory_block].T  # (B, Mb) dot products, OpenBLAS
            scores *= 2
            scores -= mem_sq[m0:m0 + memory_block]  # larger = closer: ||q||^2 - ||q - m||^2
            s, i = torch.from_numpy(scores).topk(min(k, scores.shape[1]), dim=1)
            best_s, best_i = _merge(best_s, best_i, s, i + m0, k)
        d2 = (torch.from_numpy(np.einsum("bd,bd->b", q, q))[:, None] - best_s).clamp_min(0)  # (B, k)
        out_d.append(d2.sqrt().numpy())
        out_i.append(best_i.numpy())
    return np.concatenate(out_d), np.concatenate(out_i).astype(np.int64)


def _merge(best_s, best_i, s, i, keep: int):
    """Keep the `keep` best of a running top list and a new block's top list."""
    if best_s is None:
        return s, i
    s, i = torch.cat([best_s, s], 1), torch.cat([best_i, i], 1)
    s, order = s.topk(min(keep, s.shape[1]), dim=1)
    return s, i.gather(1, order)


def _exact_torch(queries, memory, mem_sq, k, query_block, memory_block, dev, shortlist):
    """The torch path of exact_search (GPU; bf16 shortlist re-ranked in fp32 when `shortlist`)."""
    mem = torch.from_numpy(memory).to(dev)  # (M, D)
    msq = torch.from_numpy(mem_sq).to(dev)  # (M,)
    low = mem.to(torch.bfloat16) if shortlist else mem
    take = 2 * k + 8 if shortlist else k
    out_d, out_i = [], []
    for q0 in range(0, len(queries), query_block):
        q = torch.from_numpy(np.ascontiguousarray(queries[q0:q0 + query_block], dtype=np.float32)).to(dev)  # (B, D)
        best_s, best_i = None, None
        for m0 in range(0, len(mem), memory_block):
            scores = 2 * (q.to(low.dtype) @ low[m0:m0 + memory_block].T).float() - msq[m0:m0 + memory_block]
            s, i = scores.topk(min(take, scores.shape[1]), dim=1)
            best_s, best_i = _merge(best_s, best_i, s, i + m0, take)
        if shortlist:  # re-rank the shortlist with fp32 distances
            best_s = 2 * torch.einsum("bd,bsd->bs", q, mem[best_i]) - msq[best_i]
            best_s, order = best_s.topk(min(k, best_s.shape[1]), dim=1)
            best_i = best_i.gather(1, order)
        d2 = (q.pow(2).sum(1, keepdim=True) - best_s).clamp_min(0)  # (B, k) squared distances
        out_d.append(d2.sqrt().cpu().numpy())  # host sync point
        out_i.append(best_i.cpu().numpy())
    return np.concatenate(out_d), np.concatenate(out_i).astype(np.int64)


def annoy_search(ann, queries: np.ndarray, k: int, search_k: int, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k approximate neighbours per query from an angular Annoy index: dist (Q, k), idx (Q, k).

    For unit vectors Annoy's angular distance sqrt(2 - 2 cos) is the Euclidean distance.
    Annoy releases the GIL while searching, so threads scale.
    """
    dist = np.full((len(queries), k), np.inf, dtype=np.float32)
    idx = np.full((len(queries), k), -1, dtype=np.int64)

    def one(i: int) -> None:
        items, ds = ann.get_nns_by_vector(queries[i], k, search_k=search_k, include_distances=True)
        idx[i, : len(items)], dist[i, : len(items)] = items, ds

    with ThreadPoolExecutor(max_workers=threads or None) as pool:
        list(pool.map(one, range(len(queries)), chunksize=256))
    return dist, idx


def recall_at_k(approx_idx: np.ndarray, exact_idx: np.ndarray) -> float:
    """Mean share of the exact k neighbours that the approximate search found."""
    if len(exact_idx) == 0:
        return 1.0
    hits = [len(np.intersect1d(a, e)) for a, e in zip(approx_idx, exact_idx)]
    return float(np.mean(hits) / exact_idx.shape[1])


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


def evaluate_fold(store: shards.ActivationStore, folder: Path, fold: int, descriptor: str,
                  params: KnnParams) -> dict:
    """Classify the held-out fold's images against the fold's memory, with the exact reference."""
    labels = store.images["label"].to_numpy()
    n_classes = int(labels.max()) + 1
    queries_img = np.flatnonzero(store.images["fold"].to_numpy() == fold)
    memory_ids = np.load(folder / f"{descriptor}.ids.npy")  # Annoy item -> vector id
    pca = index.load_pca(folder, descriptor)
    queries = index.project(store.vectors(descriptor, queries_img), pca)  # (Q, D)
    p = store.n_positions if descriptor == "pixel" else 1
    memory_labels = labels[memory_ids // p]  # (M,)
    class_counts = np.bincount(memory_labels, minlength=n_classes)
    groups = query_groups(descriptor, len(queries_img), store.n_positions)
    memory = index.project(store.vectors(descriptor, np.unique(memory_ids // p)), pca)  # (M, D), item order

    start = time.perf_counter()
    if params.backend == "annoy":
        ann = index.load_annoy(folder, descriptor, queries.shape[1])
        dist, item = annoy_search(ann, queries, params.k, params.search_k)
    else:
        dist, item = exact_search(queries, memory, params.k, params.query_block)
    seconds = time.perf_counter() - start

    neighbour_labels = np.where(item >= 0, memory_labels[np.maximum(item, 0)], -1)
    pred = predict(kernel_vote(dist, neighbour_labels, groups, len(queries_img), class_counts, params.eps))
    truth = labels[queries_img]

    # exact reference on a seeded sample of held-out images
    rng = np.random.default_rng(params.seed + fold)
    ref_img = np.sort(rng.choice(len(queries_img), min(params.reference_images, len(queries_img)), replace=False))
    ref_rows = np.flatnonzero(np.isin(groups, ref_img))
    ref_dist, ref_item = exact_search(queries[ref_rows], memory, params.k, params.query_block)
    if params.backend == "annoy":
        ann_item = item[ref_rows]
    else:  # measure Annoy anyway, so its recall is known before anyone switches to it
        ann = index.load_annoy(folder, descriptor, queries.shape[1])
        _, ann_item = annoy_search(ann, queries[ref_rows], params.k, params.search_k)
    remap = np.searchsorted(ref_img, groups[ref_rows])
    ref_pred = predict(kernel_vote(ref_dist, memory_labels[ref_item], remap, len(ref_img), class_counts, params.eps))
    return {
        "accuracy": float((pred == truth).mean()),
        "recall_at_k": recall_at_k(ann_item, ref_item),
        "agreement": float((pred[ref_img] == ref_pred).mean()),
        "n_queries": len(queries),
        "search_seconds": seconds,
        "queries_per_second": len(queries) / max(seconds, 1e-9),
        "neighbours": (dist, item, memory_ids, queries_img),
    }


# --- the stage -----------------------------------------------------------------------------


def match_table(store: shards.ActivationStore, fold: int, neighbours: tuple) -> "pd.DataFrame":
    """For every query pixel, its K matches: positions, labels and distances."""
    import pandas as pd

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


def run(store: shards.ActivationStore, index_dirs: dict[int, Path], params: KnnParams, matches_out: Path,
        metrics_out: Path) -> dict:
    """The knn stage: every descriptor on every run fold; fails when Annoy's recall is too low."""
    import pandas as pd

    per = {d: {} for d in params.descriptors}
    tables = []
    for fold, folder in sorted(index_dirs.items()):
        if not (folder / "info.json").exists():
            raise KnnError(f"{folder}/info.json missing: run the index stage for fold {fold} first")
        info = shards.read_json(folder / "info.json")
        for descriptor in params.descriptors:
            if descriptor not in info["descriptors"]:
                raise KnnError(f"{folder} has no {descriptor} index; rerun the index stage (dvc repro)")
            r = evaluate_fold(store, folder, fold, descriptor, params)
            if params.backend == "annoy" and r["recall_at_k"] < params.min_recall:
                raise KnnError(
                    f"{store.manifest['dataset']}/{store.manifest['backbone']} fold {fold} {descriptor}: Annoy "
                    f"recall@{params.k} = {r['recall_at_k']:.3f} < knn.min_recall = {params.min_recall}; raise "
                    f"knn.search_k (now {params.search_k}) or index.n_trees (now {info['n_trees']}), set "
                    f"index.pca_dim, or use knn.backend: exact"
                )
            if descriptor == "pixel":
                tables.append(match_table(store, fold, r["neighbours"]))
            per[descriptor][fold] = {k: v for k, v in r.items() if k != "neighbours"}
    metrics = summarise(store, per, params)
    if tables:
        shards.write_parquet(matches_out, pd.concat(tables, ignore_index=True))
    shards.write_json(metrics_out, metrics)
    return metrics


def summarise(store: shards.ActivationStore, per: dict, params: KnnParams) -> dict:
    """Mean, std and per-fold values of every number, per descriptor."""
    out = {
        "dataset": store.manifest["dataset"], "backbone": store.manifest["backbone"],
        "weights": store.manifest["weights"], "weights_id": store.manifest["weights_id"],
        "backend": params.backend, "k": params.k, "search_k": params.search_k, "descriptors": {},
    }
    for descriptor, folds in per.items():
        acc = np.array([f["accuracy"] for f in folds.values()])
        out["descriptors"][descriptor] = {
            "accuracy": float(acc.mean()),
            "accuracy_std": float(acc.std(ddof=1)) if len(acc) > 1 else 0.0,
            "accuracy_per_fold": {str(k): f["accuracy"] for k, f in folds.items()},
            "recall_at_k": float(np.mean([f["recall_at_k"] for f in folds.values()])),
            "recall_at_k_min": float(np.min([f["recall_at_k"] for f in folds.values()])),
            "agreement": float(np.mean([f["agreement"] for f in folds.values()])),
            "search_seconds": float(sum(f["search_seconds"] for f in folds.values())),
            "queries_per_second": float(np.mean([f["queries_per_second"] for f in folds.values()])),
        }
    return out
