"""Every path the pipeline reads or writes, in one place (relative to the repo root)."""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
METRICS = Path("metrics")
PLOTS = Path("plots")


def raw(dataset: str) -> Path:
    """Where a dataset's image files are downloaded or written."""
    return DATA / "raw" / dataset


def folder_snapshot(dataset: str) -> Path:
    """Content listing of a local image folder (what makes DVC rerun on change)."""
    return DATA / "folders" / f"{dataset}.json"


def manifest(dataset: str) -> Path:
    """The per-image manifest table of a dataset."""
    return DATA / "manifests" / f"{dataset}.parquet"


def download_metrics(dataset: str) -> Path:
    """Counts of usable and skipped images."""
    return METRICS / "download" / f"{dataset}.json"
