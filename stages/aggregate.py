"""Aggregate stage: headline metrics and Table 1 (one-hot vs hue, paired over folds); training curves."""

import typer

from hue import aggregate, config, paths, sources
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
def main() -> None:
    """Read exactly the stage outputs the params imply and write the headline metrics, table and figure."""
    data, extract, train = config.load("data"), config.load("extract"), config.load("train")
    names = sources.names(extract)
    runs = {(d, a, loss, f): paths.train_detail(d, a, loss, f)
            for d in data.datasets for a in train.archs for loss in config.TRAIN_LOSSES for f in data.run_folds}
    knns = {(d, n): paths.knn_detail(d, n) for d in data.datasets for n in names}
    observations = {(d, n): paths.observe_detail(d, n) for d in data.datasets for n in names}
    aggregate.run(runs, knns, observations, aggregate.Outputs(
        paths.TRAIN_METRICS, paths.KNN_METRICS, paths.OBSERVE_METRICS, paths.FOLDS, paths.TABLE1_MD,
        paths.TABLE1_CSV, paths.ONEHOT_VS_HUE))


@app.command()
@guarded
def curves(dataset: str, arch: str) -> None:
    """Training curves of ARCH on DATASET: one-hot and hue side by side, every run fold."""
    data = config.load("data")
    logs = {loss: {f: paths.train_log(dataset, arch, loss, f) for f in data.run_folds} for loss in config.TRAIN_LOSSES}
    aggregate.curves(f"{dataset} / {arch}: training from scratch", logs, paths.curves_data(dataset, arch),
                     paths.curves_png(dataset, arch))


if __name__ == "__main__":
    app()
