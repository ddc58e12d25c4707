"""kNN stage: kernel-density classification (Eq. 1-3) of every held-out fold, and Figure 4."""

import typer

from hue import config, knn, paths, report, shards
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
def evaluate(dataset: str, backbone: str) -> None:
    """Classify every run fold of DATASET through BACKBONE against its memory."""
    cfg, data = config.load("knn"), config.load("data")
    store = shards.ActivationStore(paths.activations(dataset, backbone))
    dirs = {f: paths.index_dir(dataset, backbone, f) for f in data.run_folds}
    knn.run(store, dirs, cfg, paths.matches(dataset, backbone), paths.knn_metrics(dataset, backbone))


@app.command()
@guarded
def figure4(dataset: str) -> None:
    """Accuracy by backbone x descriptor for DATASET (the papers' Figure 4)."""
    backbones = config.load("extract").backbones
    report.figure4(dataset, {b: paths.knn_metrics(dataset, b) for b in backbones},
                   paths.figure4_data(dataset), paths.figure4_png(dataset))


if __name__ == "__main__":
    app()
