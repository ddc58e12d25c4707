"""Index stage: Annoy indexes over one fold's memory, per descriptor."""

import typer

from hue import config, index, paths, shards
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
def main(dataset: str, backbone: str, fold: int) -> None:
    """Index the memory (every fold but FOLD) of DATASET through BACKBONE."""
    cfg, knn = config.load("index"), config.load("knn")
    store = shards.ActivationStore(paths.activations(dataset, backbone))
    index.run(store, fold, knn.descriptors, cfg, paths.index_dir(dataset, backbone, fold))


if __name__ == "__main__":
    app()
