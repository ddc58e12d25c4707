"""File formats, all written atomically: a temp file or folder beside the target, then rename."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pandas as pd


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temp path beside `path`; rename it into place only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@contextlib.contextmanager
def atomic_dir(path: Path) -> Iterator[Path]:
    """Yield a fresh temp folder beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a killed run: never trusted
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp creates 0700
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj: Any) -> None:
    """Write pretty, key-sorted JSON atomically (stable diffs)."""
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_jsonable) + "\n")


def _jsonable(value: Any) -> Any:
    """numpy scalars and paths to plain JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def read_json(path: Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def write_parquet(path: Path, frame: pd.DataFrame) -> None:
    """Write a table atomically, without the pandas index."""
    with atomic_file(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_parquet(path: Path, columns: list[str] | None = None) -> pd.DataFrame:
    """Read a table written by write_parquet."""
    return pd.read_parquet(path, columns=columns)


# --- activation store ----------------------------------------------------------------------
# data/activations/<dataset>/<backbone>/
#   pixel-00000.npy   (rows, C)  unit pixel vectors, row order (image, y, x)
#   gap-00000.npy     (images, C) unit global-average-pooled vectors
#   gmp-00000.npy     (images, C) unit global-max-pooled vectors
#   energy-00000.npy  (images, H, W) float32 ||I(x, y)||^2 before normalisation
#   images.parquet    image, image_id, label, fold, shard, row (+ theta_x, theta_y: the hue head, trained sources)
#   manifest.json     source, node, grid, weights and their hash, transform, dtype, versions
# A trained source has one such store per held-out fold, in fold<k>/ (made by that fold's model).
# `flat` is not stored twice: it is rebuilt exactly from pixel vectors and energies; a pixel's
# centred position follows from its row (image, y, x) and the grid.

import numpy as np  # noqa: E402

IMAGE_LEVEL = ("gap", "gmp")


class ShardWriter:
    """Accumulates per-batch descriptors and writes whole-image shards; memory stays bounded."""

    def __init__(self, folder: Path, dtype: str, images_per_shard: int):
        self.folder, self.dtype, self.images_per_shard = Path(folder), np.dtype(dtype), images_per_shard
        self.buffer: dict[str, list[np.ndarray]] = {"pixel": [], "gap": [], "gmp": [], "energy": []}
        self.n_buffered = 0
        self.n_shards = 0

    def add(self, pixel: np.ndarray, gap: np.ndarray, gmp: np.ndarray, energy: np.ndarray) -> None:
        """Add a batch: pixel (B, P, C), gap/gmp (B, C), energy (B, H, W)."""
        for key, value in (("pixel", pixel), ("gap", gap), ("gmp", gmp), ("energy", energy)):
            self.buffer[key].append(value)
        self.n_buffered += len(pixel)
        while self.n_buffered >= self.images_per_shard:
            self._flush(self.images_per_shard)

    def close(self) -> int:
        """Write what is left; return the number of shards."""
        if self.n_buffered:
            self._flush(self.n_buffered)
        return self.n_shards

    def _flush(self, n: int) -> None:
        """Write the first n buffered images as one shard."""
        for key, parts in self.buffer.items():
            arr = np.concatenate(parts)
            head, rest = arr[:n], arr[n:]
            self.buffer[key] = [rest] if len(rest) else []
            if key == "pixel":
                head = head.reshape(-1, head.shape[-1])  # (n * P, C)
            dtype = np.float32 if key == "energy" else self.dtype
            np.save(self.folder / f"{key}-{self.n_shards:05d}.npy", head.astype(dtype, copy=False))
        self.n_buffered -= n
        self.n_shards += 1


class ActivationStore:
    """Read access to one extract output folder; shards are memory-mapped."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        if not (self.folder / "manifest.json").exists():
            raise FileNotFoundError(2, "missing: run the extract stage first", str(self.folder / "manifest.json"))
        self.manifest = read_json(self.folder / "manifest.json")
        self.images = read_parquet(self.folder / "images.parquet")
        self.grid = tuple(self.manifest["grid"])  # (H, W)
        self.n_positions = self.grid[0] * self.grid[1]

    def _shard(self, key: str, shard: int) -> np.ndarray:
        """Memory-map one shard."""
        return np.load(self.folder / f"{key}-{shard:05d}.npy", mmap_mode="r")

    def energy(self, images: np.ndarray) -> np.ndarray:
        """Energy maps ||I(x, y)||^2 of the sorted global image indices: (n, H, W) float32."""
        table = self.images.iloc[images]
        parts = [np.asarray(self._shard("energy", shard)[group["row"].to_numpy()], dtype=np.float32)
                 for shard, group in table.groupby("shard", sort=True)]
        return np.concatenate(parts) if parts else np.zeros((0, *self.grid), np.float32)

    def iter_vectors(self, descriptor: str, images: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (image indices, vectors) shard by shard for the sorted global image indices `images`.

        vectors are float32: (n_images * P, C) for pixel, (n_images, D) otherwise.
        """
        table = self.images.iloc[images]
        for shard, group in table.groupby("shard", sort=True):
            rows, idx = group["row"].to_numpy(), group["image"].to_numpy()
            if descriptor in IMAGE_LEVEL:
                yield idx, np.asarray(self._shard(descriptor, shard)[rows], dtype=np.float32)
                continue
            pix = self._shard("pixel", shard)
            sel = (rows[:, None] * self.n_positions + np.arange(self.n_positions)).ravel()
            vectors = np.asarray(pix[sel], dtype=np.float32)  # (n * P, C)
            if descriptor == "flat":
                vectors = flat_from_pixels(vectors.reshape(len(rows), self.n_positions, -1),
                                           np.asarray(self._shard("energy", shard)[rows], dtype=np.float32))
            yield idx, vectors

    def vectors(self, descriptor: str, images: np.ndarray) -> np.ndarray:
        """All vectors of `images` (sorted global indices) in one float32 array."""
        parts = [v for _, v in self.iter_vectors(descriptor, np.asarray(images))]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def open_store(folder: Path, fold: int) -> ActivationStore:
    """The store serving held-out `fold`: its own fold<k>/ store (trained sources) or the shared one."""
    own = Path(folder) / f"fold{fold}"
    return ActivationStore(own if (own / "manifest.json").exists() else folder)


def flat_from_pixels(unit_pixels: np.ndarray, energy: np.ndarray) -> np.ndarray:
    """Rebuild unit `flat` vectors: (n, P, C) unit pixels and (n, H, W) energies -> (n, P * C)."""
    raw = unit_pixels * np.sqrt(energy.reshape(len(energy), -1, 1))  # undo the per-pixel normalisation
    flat = raw.reshape(len(raw), -1)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.maximum(norms, 1e-12)
