"""InterActive stage: aspect-kept resize + activeness features, evaluated with kNN and a linear classifier."""

import typer

from hue import config, interactive, paths
from hue.cli import guarded, keeps_heap

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
@keeps_heap
def main(dataset: str, backbone: str) -> None:
    """Evaluate InterActive features of DATASET through BACKBONE on every run fold."""
    cfg, data, knn = config.load("interactive"), config.load("data"), config.load("knn")
    interactive.run(dataset, backbone, cfg, data.run_folds, knn.k, knn.eps, paths.manifest(dataset),
                    paths.interactive_detail(dataset, backbone), paths.interactive_table(dataset, backbone))


if __name__ == "__main__":
    app()
