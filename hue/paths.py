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


def activations(dataset: str, backbone: str) -> Path:
    """The activation store of a dataset through a backbone."""
    return DATA / "activations" / dataset / backbone


def index_dir(dataset: str, backbone: str, fold: int) -> Path:
    """Annoy indexes over the memory of one held-out fold."""
    return DATA / "indexes" / dataset / backbone / f"fold{fold}"


def matches(dataset: str, backbone: str) -> Path:
    """Every query pixel's K matches, for the observations."""
    return DATA / "knn" / dataset / backbone / "matches.parquet"


def knn_metrics(dataset: str, backbone: str) -> Path:
    """kNN accuracy, recall and timings."""
    return METRICS / "knn" / f"{dataset}-{backbone}.json"


def figure4_data(dataset: str) -> Path:
    """Figure 4 as DVC plot data."""
    return PLOTS / "knn" / f"{dataset}-accuracy.csv"


def figure4_png(dataset: str) -> Path:
    """Figure 4 as a picture."""
    return PLOTS / "knn" / f"{dataset}-accuracy.png"
