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


class NpyStream:
    """One .npy file written block by block, nothing buffered; its header takes the row count on close.

    numpy pads every header so that the first axis can grow to 21 digits in place, so the final
    header is as long as the first one and the file is, byte for byte, what np.save writes for
    the rows as one C-order array.
    """

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple[int, ...]):
        self.dtype, self.row_shape, self.rows = np.dtype(dtype), tuple(int(n) for n in row_shape), 0
        self.file = open(path, "wb")
        self.start = self._header()  # bytes before the data

    def _header(self) -> int:
        """(Re)write the header for the rows written so far at the file's start; its length."""
        self.file.seek(0)
        np.lib.format.write_array_header_1_0(self.file, {"descr": np.lib.format.dtype_to_descr(self.dtype),
                                                        "fortran_order": False, "shape": (self.rows, *self.row_shape)})
        return self.file.tell()

    def write(self, block: np.ndarray) -> None:
        """Append rows (n, *row_shape), cast to the file's dtype."""
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"rows of shape {self.row_shape} expected; got a block of {block.shape}")
        if len(block):
            self.file.write(memoryview(np.ascontiguousarray(block, dtype=self.dtype)).cast("B"))
            self.rows += len(block)

    def close(self) -> None:
        """Write the final header and close."""
        try:
            self.file.seek(0, 2)
            if self._header() != self.start:
                raise RuntimeError(f"{self.file.name}: the .npy header changed length ({self.rows} rows)")
        finally:
            self.file.close()


class ShardWriter:
    """Streams per-batch descriptors into whole-image .npy shards: memory is the batch being written."""

    def __init__(self, folder: Path, dtype: str, images_per_shard: int):
        self.folder, self.dtype, self.images_per_shard = Path(folder), np.dtype(dtype), images_per_shard
        self.files: dict[str, NpyStream] = {}  # the open shard's files, by descriptor
        self.shapes: dict[str, tuple[int, ...]] | None = None  # per-image shape of each descriptor
        self.n_open = 0  # images in the open shard
        self.n_shards = 0

    def add(self, pixel: np.ndarray, gap: np.ndarray, gmp: np.ndarray, energy: np.ndarray) -> None:
        """Add a batch: pixel (B, P, C), gap/gmp (B, C), energy (B, H, W); a shard closes when full."""
        batch = {"pixel": pixel, "gap": gap, "gmp": gmp, "energy": energy}
        shapes = {key: value.shape[1:] for key, value in batch.items()}
        self.shapes = self.shapes or shapes
        if shapes != self.shapes or len({len(value) for value in batch.values()}) != 1:  # before any write
            got = {key: value.shape for key, value in batch.items()}
            raise ValueError(f"a batch must hold B images of the first batch's shapes {self.shapes}; got {got}")
        done = 0
        while done < len(pixel):
            if not self.files:
                self._open()
            n = min(len(pixel) - done, self.images_per_shard - self.n_open)
            for key, value in batch.items():
                part = value[done:done + n]
                self.files[key].write(part.reshape(-1, part.shape[-1]) if key == "pixel" else part)  # pixel (n * P, C)
            done, self.n_open = done + n, self.n_open + n
            if self.n_open == self.images_per_shard:
                self._close_shard()

    def close(self) -> int:
        """Close the last shard; return the number of shards."""
        if self.files:
            self._close_shard()
        return self.n_shards

    def _open(self) -> None:
        """Start the next shard's files, their rows shaped as the batches' (pixel: one position's C)."""
        for key, shape in self.shapes.items():
            rows = shape[-1:] if key == "pixel" else shape
            dtype = np.float32 if key == "energy" else self.dtype
            self.files[key] = NpyStream(self.folder / f"{key}-{self.n_shards:05d}.npy", dtype, rows)

    def _close_shard(self) -> None:
        """Finish the open shard."""
        for stream in self.files.values():
            stream.close()
        self.files, self.n_open = {}, 0
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
