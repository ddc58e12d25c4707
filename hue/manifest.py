"""From fetched records to the per-image manifest: validate, convert, cap, label, fold."""

from __future__ import annotations

import collections
import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from hue import datasets, folds, images, paths, shards
from hue.config import DataParams
from hue.errors import HueError

COLUMNS = ["image_id", "path", "label", "class_name", "split", "fold", "width", "height"]


class ManifestError(HueError):
    """The dataset has no usable images, or a class is too small to be folded."""


def inspect_all(records: list[datasets.Record]) -> list[images.Check]:
    """Decode every candidate file, in parallel threads (PIL releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda r: images.inspect(r.path), records, chunksize=64))


def _cap(frame: pd.DataFrame, max_per_class: int | None, seed: int) -> pd.DataFrame:
    """Seeded subsample of at most `max_per_class` images per class, order kept."""
    if max_per_class is None:
        return frame
    keep = frame.groupby("class_name", sort=False, group_keys=False).apply(
        lambda g: g.sample(n=min(len(g), max_per_class), random_state=seed)
    )
    return frame.loc[sorted(keep.index)]


def _image_id(path: Path, root: Path) -> str:
    """A stable id: the path relative to the dataset root."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return path.as_posix()


SKIPPED_COLUMNS = ["path", "class_name", "reason"]


def build(name: str, source: datasets.Source, params: DataParams,
          root: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """Validate the source and return (manifest, download metrics, every file set aside with its reason)."""
    checks = inspect_all(source.records)
    skipped = collections.Counter(reason for _, reason in source.skipped)
    aside = [(p.as_posix(), p.parent.name, reason) for p, reason in source.skipped]
    converted = collections.Counter()
    rows = []
    for rec, chk in zip(source.records, checks):
        if not chk.ok:
            skipped[chk.reason] += 1
            aside.append((rec.path.as_posix(), rec.class_name, chk.reason))
            continue
        if chk.mode != "RGB":
            converted[chk.mode] += 1
        rows.append((_image_id(rec.path, root), rec.path.as_posix(), rec.class_name, rec.split, chk.width, chk.height))
    frame = pd.DataFrame(rows, columns=["image_id", "path", "class_name", "split", "width", "height"])
    frame = _cap(frame, params.max_per_class, params.seed)

    counts = frame["class_name"].value_counts()
    skipped_classes = {c: "empty_class" for c in source.classes if counts.get(c, 0) == 0}
    small = [c for c in source.classes if 0 < counts.get(c, 0) < params.folds]
    if small and not params.drop_small_classes:
        c = small[0]
        raise ManifestError(
            f"{name}: class {c!r} has {counts[c]} usable image(s), fewer than data.folds={params.folds} "
            f"({len(small)} such class(es)); add images, lower data.folds, or set data.drop_small_classes: true"
        )
    for c in small:
        skipped["small_class"] += int(counts[c])
        skipped_classes[c] = "small_class"
    aside += [(p, c, "small_class") for p, c in frame.loc[frame["class_name"].isin(small), ["path", "class_name"]]
              .itertuples(index=False)]
    frame = frame[~frame["class_name"].isin(small)].reset_index(drop=True)
    if frame.empty:
        raise ManifestError(f"{name}: no usable images remain (skipped: {dict(skipped) or 'none found'}); "
                            f"check the files under {root}")

    classes = [c for c in source.classes if c not in skipped_classes]
    frame["label"] = frame["class_name"].map({c: i for i, c in enumerate(classes)}).astype(np.int64)
    frame["fold"] = folds.assign(frame["label"].to_numpy(), params.folds, params.seed)
    frame = frame[COLUMNS]
    metrics = {
        "dataset": name,
        "n_images": len(frame),
        "n_classes": len(classes),
        "n_skipped": int(sum(skipped.values())),
        "skipped": dict(sorted(skipped.items())),
        "skipped_classes": dict(sorted(skipped_classes.items())),
        "converted": dict(sorted(converted.items())),
        "folds": params.folds,
        "images_per_fold": np.bincount(frame["fold"], minlength=params.folds).tolist(),
        "splits": frame["split"].value_counts().sort_index().to_dict(),
    }
    return frame, metrics, pd.DataFrame(sorted(aside), columns=SKIPPED_COLUMNS)


def run(name: str, params: DataParams) -> pd.DataFrame:
    """The download stage: fetch, validate, write the manifest and its metrics."""
    folder = params.folders.get(name)
    root = Path(folder) if folder is not None else paths.raw(name)
    source = datasets.fetch(name, paths.raw(name), Path(folder) if folder is not None else None)
    frame, metrics, aside = build(name, source, params, root)
    shards.write_parquet(paths.manifest(name), frame)
    shards.write_parquet(paths.skipped(name), aside)
    shards.write_json(paths.download_metrics(name), metrics)
    return frame


def snapshot(folder: Path) -> dict:
    """Content listing of a local image folder: relative path -> (size, md5)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ManifestError(f"image folder {folder} does not exist; fix its path under data.folders")
    listing = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        listing[path.relative_to(folder).as_posix()] = [path.stat().st_size, digest]
    return {"folder": str(folder), "files": listing}


def write_snapshot(name: str, params: DataParams) -> None:
    """The snapshot stage of a local folder dataset."""
    if name not in params.folders:
        raise ManifestError(f"{name} is not a key of data.folders; known: {sorted(params.folders)}")
    shards.write_json(paths.folder_snapshot(name), snapshot(Path(params.folders[name])))
