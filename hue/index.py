"""Annoy indexes (angular) over each fold's memory, optionally after a memory-only PCA."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hue import shards
from hue.config import IndexParams

PCA_FIT_ROWS = 200_000  # PCA is fitted on at most this many memory vectors (seeded sample)


def memory_images(store: shards.ActivationStore, fold: int) -> np.ndarray:
    """Global indices of the images in every fold but the held-out one."""
    return np.flatnonzero(store.images["fold"].to_numpy() != fold)


def row_ids(store: shards.ActivationStore, descriptor: str, images: np.ndarray) -> np.ndarray:
    """Ids of the vectors of `images`: global pixel rows for `pixel`, image indices otherwise."""
    if descriptor != "pixel":
        return images.astype(np.int64)
    p = store.n_positions
    return (images[:, None] * p + np.arange(p)).ravel().astype(np.int64)


def fit_pca(vectors: np.ndarray, dim: int, seed: int) -> dict[str, np.ndarray]:
    """PCA on (a seeded sample of) the memory vectors: mean (D,), components (dim, D)."""
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    sample = vectors if len(vectors) <= PCA_FIT_ROWS else vectors[rng.choice(len(vectors), PCA_FIT_ROWS, False)]
    dim = min(dim, sample.shape[0], sample.shape[1])
    pca = PCA(n_components=dim, svd_solver="randomized", random_state=seed).fit(sample)
    return {"mean": pca.mean_.astype(np.float32), "components": pca.components_.astype(np.float32)}


def project(vectors: np.ndarray, pca: dict[str, np.ndarray] | None) -> np.ndarray:
    """Apply a fitted PCA and re-normalise to unit length (so Euclidean = angular again)."""
    if pca is None:
        return vectors
    reduced = (vectors - pca["mean"]) @ pca["components"].T  # (n, dim)
    return reduced / np.maximum(np.linalg.norm(reduced, axis=1, keepdims=True), 1e-12)


def build_annoy(vectors: np.ndarray, n_trees: int, seed: int):
    """An angular Annoy index over (n, D) vectors; item i is row i."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(vectors.shape[1], "angular")
    index.set_seed(seed)
    for i, v in enumerate(vectors):
        index.add_item(i, v)
    index.build(n_trees, n_jobs=1)  # one thread: the same index on every rerun
    return index


def shard_images(images: np.ndarray, shards: int) -> list[np.ndarray]:
    """Split the memory images into `shards` contiguous groups (whole images, sizes within one)."""
    return [part for part in np.array_split(images, min(shards, len(images))) if len(part)]


def pca_sample(store: shards.ActivationStore, descriptor: str, images: np.ndarray, seed: int) -> np.ndarray:
    """Vectors of a seeded sample of memory images, about PCA_FIT_ROWS of them, to fit the PCA on."""
    per_image = store.n_positions if descriptor == "pixel" else 1
    n = max(1, PCA_FIT_ROWS // per_image)
    chosen = images if len(images) <= n else np.sort(np.random.default_rng(seed).choice(images, n, replace=False))
    return store.vectors(descriptor, chosen)


def run(store: shards.ActivationStore, fold: int, descriptors: tuple[str, ...], params: IndexParams,
        out: Path) -> None:
    """The index stage: per descriptor, `index.shards` Annoy indexes over the memory of held-out `fold`.

    Shards hold whole images and are built one after the other, so peak memory is one shard's
    vectors; each is saved on its own and memory-mapped at search time.
    """
    images = memory_images(store, fold)
    groups = shard_images(images, params.shards)
    info = {"fold": fold, "n_trees": params.n_trees, "pca_dim": params.pca_dim, "shards": len(groups),
            "descriptors": {}}
    with shards.atomic_dir(out) as tmp:
        for descriptor in descriptors:
            pca = fit_pca(pca_sample(store, descriptor, images, params.seed), params.pca_dim, params.seed) \
                if params.pca_dim else None
            if pca is not None:
                np.savez(tmp / f"{descriptor}.pca.npz", **pca)
            offsets, dim = [], None
            for j, group in enumerate(groups):
                vectors = project(store.vectors(descriptor, group), pca)  # (m_j, D) one shard
                build_annoy(vectors, params.n_trees, params.seed + j).save(str(tmp / annoy_file(descriptor, j)))
                offsets.append(sum(len(row_ids(store, descriptor, g)) for g in groups[:j]))
                dim = int(vectors.shape[1])
            np.save(tmp / f"{descriptor}.ids.npy", row_ids(store, descriptor, images))
            info["descriptors"][descriptor] = {"n_items": len(row_ids(store, descriptor, images)), "dim": dim,
                                               "shard_offsets": offsets,
                                               "shard_images": [len(g) for g in groups]}
        shards.write_json(tmp / "info.json", info)


def annoy_file(descriptor: str, shard: int) -> str:
    """File name of one Annoy shard."""
    return f"{descriptor}.{shard:03d}.ann"


def load_annoy(folder: Path, descriptor: str, dim: int, shard: int = 0):
    """Memory-map one saved Annoy shard."""
    from annoy import AnnoyIndex

    index = AnnoyIndex(dim, "angular")
    index.load(str(folder / annoy_file(descriptor, shard)))
    return index


def load_pca(folder: Path, descriptor: str) -> dict[str, np.ndarray] | None:
    """The PCA saved beside an index, if any."""
    path = folder / f"{descriptor}.pca.npz"
    if not path.exists():
        return None
    with np.load(path) as z:
        return {k: z[k] for k in z.files}
