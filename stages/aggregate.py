"""Aggregate stage: the Table 1 analogue (one-hot vs hue, paired over folds) and the kNN summary."""

import typer

from hue import config, paths, report
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
def main() -> None:
    """Read exactly the run metrics the params imply and write summary, table and figure."""
    data, extract, train = config.load("data"), config.load("extract"), config.load("train")
    runs = {(d, a, loss, f): paths.train_metrics(d, a, loss, f)
            for d in data.datasets for a in train.archs for loss in config.TRAIN_LOSSES for f in data.run_folds}
    knns = {(d, b): paths.knn_metrics(d, b) for d in data.datasets for b in extract.backbones}
    report.aggregate(runs, knns, paths.SUMMARY, paths.TABLE1_MD, paths.TABLE1_CSV, paths.ONEHOT_VS_HUE)


if __name__ == "__main__":
    app()
