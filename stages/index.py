"""Index stage: Annoy indexes over one fold's memory, per descriptor (index.shards of them)."""

import typer

from hue import config, index, paths, shards
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
def main(dataset: str, source: str, fold: int) -> None:
    """Index the memory (every fold but FOLD) of DATASET through SOURCE."""
    cfg, knn = config.load("index"), config.load("knn")
    store = shards.open_store(paths.activations(dataset, source), fold)
    index.run(store, fold, knn.descriptors, cfg, paths.index_dir(dataset, source, fold))


if __name__ == "__main__":
    app()
