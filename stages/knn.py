"""kNN stage: kernel-density classification (Eq. 1-3) of every held-out fold, and Figure 4."""

import typer

from hue import config, knn, paths, report, sources
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
def evaluate(dataset: str, source: str) -> None:
    """Classify every run fold of DATASET through SOURCE against its memory."""
    cfg, data = config.load("knn"), config.load("data")
    dirs = {f: paths.index_dir(dataset, source, f) for f in data.run_folds}
    knn.run(paths.activations(dataset, source), dirs, cfg, paths.matches(dataset, source),
            paths.knn_detail(dataset, source), paths.timings("knn", f"{dataset}-{source}"))


@app.command()
@guarded
def figure4(dataset: str) -> None:
    """Accuracy by source x descriptor for DATASET (the papers' Figure 4)."""
    names = sources.names(config.load("extract"))
    report.figure4(dataset, {n: paths.knn_detail(dataset, n) for n in names}, paths.figure4_data(dataset),
                   paths.figure4_png(dataset))


if __name__ == "__main__":
    app()
