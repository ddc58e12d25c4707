"""Every path the pipeline reads or writes, in one place (relative to the repo root).

metrics/*.json are the DVC metrics (headline numbers only); metrics/detail/folds.json mirrors
them per fold; metrics/detail/<stage>/ holds the per-run and per-class numbers and
metrics/timings/ the throughputs: plain (DVC-cached) outputs, so `dvc metrics diff` stays
short and deterministic.
"""

from __future__ import annotations

from pathlib import Path

DATA = Path("data")
METRICS = Path("metrics")
DETAIL = METRICS / "detail"
TIMINGS = METRICS / "timings"
PLOTS = Path("plots")


def raw(dataset: str) -> Path:
    """Where a dataset's image files are downloaded or written."""
    return DATA / "raw" / dataset


def share_download_cache(cwd: Path | None = None) -> Path | None:
    """In a DVC queue's temporary workspace, link its data/raw to the main workspace's; return the link.

    data/raw/ is a download cache, not a DVC output (a stage rerun would delete hand-placed
    files), so the copy `dvc exp run --queue` makes at <root>/.dvc/tmp/exps/<tmp>/ has none:
    its stages would not find the images its manifest names. Queued experiments share the
    main workspace's cache instead.
    """
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 3):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            link, main = cwd / DATA / "raw", Path(*parts[:i]) / DATA / "raw"
            if not link.exists() and not link.is_symlink():
                main.mkdir(parents=True, exist_ok=True)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(main, target_is_directory=True)
            return link
    return None


def folder_snapshot(dataset: str) -> Path:
    """Content listing of a local image folder (what makes DVC rerun on change)."""
    return DATA / "folders" / f"{dataset}.json"


def weight_file_snapshot(name: str) -> Path:
    """Hash of a state-dict file of extract.weight_files (what makes DVC rerun on change)."""
    return DATA / "weights" / f"{name}.json"


def manifest(dataset: str) -> Path:
    """The per-image manifest table of a dataset."""
    return DATA / "manifests" / f"{dataset}.parquet"


def skipped(dataset: str) -> Path:
    """Every file the download stage set aside, with its reason."""
    return DATA / "manifests" / f"{dataset}-skipped.parquet"


def download_metrics(dataset: str) -> Path:
    """Counts of usable and skipped images."""
    return DETAIL / "download" / f"{dataset}.json"


# --- feature sources: <backbone>-<weights> ------------------------------------------------


def model_dir(dataset: str, source: str) -> Path:
    """A source's weights folder: its card, and the fold checkpoints of a trained source."""
    return DATA / "models" / dataset / source


def card(dataset: str, source: str) -> Path:
    """What identifies a source's weights."""
    return model_dir(dataset, source) / "card.json"


def activations(dataset: str, source: str) -> Path:
    """The activation store(s) of a dataset through a source (fold<k>/ stores for trained sources)."""
    return DATA / "activations" / dataset / source


def index_dir(dataset: str, source: str, fold: int) -> Path:
    """Annoy indexes over the memory of one held-out fold."""
    return DATA / "indexes" / dataset / source / f"fold{fold}"


def matches(dataset: str, source: str) -> Path:
    """Every query pixel's K matches, for the observations."""
    return DATA / "knn" / dataset / source / "matches.parquet"


def knn_detail(dataset: str, source: str) -> Path:
    """kNN accuracy per fold and descriptor, recall and agreement with exact search."""
    return DETAIL / "knn" / f"{dataset}-{source}.json"


def figure4_data(dataset: str) -> Path:
    """Figure 4 as DVC plot data."""
    return PLOTS / "knn" / f"{dataset}-accuracy.csv"


def figure4_png(dataset: str) -> Path:
    """Figure 4 as a picture."""
    return PLOTS / "knn" / f"{dataset}-accuracy.png"


# --- training ------------------------------------------------------------------------------


def run_name(dataset: str, arch: str, loss: str, fold: int) -> str:
    """The name of one training run."""
    return f"{dataset}-{arch}-{loss}-fold{fold}"


def checkpoint(dataset: str, arch: str, loss: str, fold: int) -> Path:
    """A finished run's model (the trained source `<arch>-<loss>` of held-out `fold`)."""
    return model_dir(dataset, f"{arch}-{loss}") / f"fold{fold}.pt"


def resume_state(dataset: str, arch: str, loss: str, fold: int) -> Path:
    """Per-epoch state of a run in progress; not a DVC output, so DVC never deletes it before a rerun."""
    return DATA / "resume" / f"{run_name(dataset, arch, loss, fold)}.pt"


def train_log(dataset: str, arch: str, loss: str, fold: int) -> Path:
    """Per-epoch log of a training run."""
    return PLOTS / "train" / f"{run_name(dataset, arch, loss, fold)}.csv"


def train_detail(dataset: str, arch: str, loss: str, fold: int) -> Path:
    """Final numbers of a training run."""
    return DETAIL / "train" / f"{run_name(dataset, arch, loss, fold)}.json"


def curves_data(dataset: str, arch: str) -> Path:
    """Mean validation curves of one-hot and hue over folds (DVC plot data)."""
    return PLOTS / "curves" / f"{dataset}-{arch}.csv"


def curves_png(dataset: str, arch: str) -> Path:
    """One-hot and hue training curves side by side, folds overlaid."""
    return PLOTS / "curves" / f"{dataset}-{arch}.png"


def timings(stage: str, name: str) -> Path:
    """Wall times and throughputs of one stage item (not a DVC metric: they vary run to run)."""
    return TIMINGS / stage / f"{name}.json"


# --- aggregate: headline metrics -----------------------------------------------------------

TRAIN_METRICS = METRICS / "train.json"
KNN_METRICS = METRICS / "knn.json"
OBSERVE_METRICS = METRICS / "observe.json"
FOLDS = DETAIL / "folds.json"  # the per-fold values behind every headline metric, same keys
TABLE1_MD = PLOTS / "table1.md"
TABLE1_CSV = PLOTS / "table1.csv"
ONEHOT_VS_HUE = PLOTS / "onehot_vs_hue.png"


# --- observations --------------------------------------------------------------------------


def observe_detail(dataset: str, source: str) -> Path:
    """The observations as numbers, per fold and per class."""
    return DETAIL / "observe" / f"{dataset}-{source}.json"


def observe_plot(dataset: str, source: str, name: str) -> Path:
    """One observation figure or plot-data file."""
    return PLOTS / "observe" / f"{dataset}-{source}-{name}"


def observe_maps(dataset: str, source: str) -> Path:
    """The maps behind the observation figures (grid arrays, conditional maps, class angles)."""
    return DATA / "observe" / dataset / source / "maps.json"


def energy_grid(dataset: str) -> Path:
    """Energy maps of every source of a dataset."""
    return PLOTS / "observe" / f"{dataset}-energy-grid.png"


def compare_table(dataset: str, backbone: str) -> Path:
    """One-hot vs hue trained models: every observation, paired over folds."""
    return PLOTS / "observe" / f"{dataset}-{backbone}-trained.md"


def compare_plot(dataset: str, backbone: str, name: str) -> Path:
    """One-hot vs hue side-by-side figures."""
    return PLOTS / "observe" / f"{dataset}-{backbone}-trained-{name}"


def interactive_detail(dataset: str, backbone: str) -> Path:
    """InterActive accuracies per configuration, layer and fold."""
    return DETAIL / "interactive" / f"{dataset}-{backbone}.json"


def interactive_table(dataset: str, backbone: str) -> Path:
    """The paper-style InterActive table."""
    return PLOTS / "interactive" / f"{dataset}-{backbone}.md"
