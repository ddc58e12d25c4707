"""Extract stage: a feature source's card, and bottleneck activations of a dataset through it, to shards."""

import typer

from hue import config, extract, paths, sources
from hue.cli import guarded, keeps_heap

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
def card(dataset: str, source: str) -> None:
    """Write the weights card of SOURCE (<backbone>-<weights>) for DATASET."""
    sources.write_card(source, config.load("extract"), paths.card(dataset, source))


@app.command("weight-file")
@guarded
def weight_file(name: str) -> None:
    """Hash the state-dict file extract.weight_files.NAME."""
    sources.snapshot_weight_file(name, config.load("extract"), paths.weight_file_snapshot(name))


@app.command()
@guarded
@keeps_heap
def run(dataset: str, source: str) -> None:
    """Extract activations of DATASET through SOURCE (one store per run fold for trained sources)."""
    cfg, data = config.load("extract"), config.load("data")
    extract.run(dataset, source, cfg, data.run_folds, paths.manifest(dataset), paths.model_dir(dataset, source),
                paths.activations(dataset, source), paths.timings("extract", f"{dataset}-{source}"))


if __name__ == "__main__":
    app()
