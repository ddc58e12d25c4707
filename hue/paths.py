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


def run_name(dataset: str, arch: str, loss: str, fold: int) -> str:
    """The name of one training run."""
    return f"{dataset}-{arch}-{loss}-fold{fold}"


def checkpoint(dataset: str, arch: str, loss: str, fold: int) -> Path:
    """A training run's resumable checkpoint."""
    return DATA / "models" / dataset / arch / loss / f"fold{fold}.pt"


def train_log(dataset: str, arch: str, loss: str, fold: int) -> Path:
    """Per-epoch log of a training run (DVC plots)."""
    return PLOTS / "train" / f"{run_name(dataset, arch, loss, fold)}.csv"


def train_metrics(dataset: str, arch: str, loss: str, fold: int) -> Path:
    """Final metrics of a training run."""
    return METRICS / "train" / f"{run_name(dataset, arch, loss, fold)}.json"


SUMMARY = METRICS / "summary.json"
TABLE1_MD = PLOTS / "table1.md"
TABLE1_CSV = PLOTS / "table1.csv"
ONEHOT_VS_HUE = PLOTS / "onehot_vs_hue.png"


def observe_metrics(dataset: str, backbone: str) -> Path:
    """The observations as numbers."""
    return METRICS / "observe" / f"{dataset}-{backbone}.json"


def observe_plot(dataset: str, backbone: str, name: str) -> Path:
    """One observation figure or plot-data file."""
    return PLOTS / "observe" / f"{dataset}-{backbone}-{name}"


def observe_maps(dataset: str, backbone: str) -> Path:
    """The maps behind the observation figures (grid arrays, conditional maps, class angles)."""
    return DATA / "observe" / dataset / backbone / "maps.json"


def energy_grid(dataset: str) -> Path:
    """Energy maps of every backbone of a dataset."""
    return PLOTS / "observe" / f"{dataset}-energy-grid.png"


def interactive_metrics(dataset: str, backbone: str) -> Path:
    """InterActive accuracies per configuration and layer."""
    return METRICS / "interactive" / f"{dataset}-{backbone}.json"


def interactive_table(dataset: str, backbone: str) -> Path:
    """The paper-style InterActive table."""
    return PLOTS / "interactive" / f"{dataset}-{backbone}.md"
