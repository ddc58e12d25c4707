"""Extract stage: bottleneck activations of a dataset through a backbone, to shards."""

import typer

from hue import config, extract, paths
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
def main(dataset: str, backbone: str) -> None:
    """Extract bottleneck activations of DATASET through BACKBONE."""
    cfg = config.load("extract")
    extract.run(dataset, backbone, cfg, paths.manifest(dataset), paths.activations(dataset, backbone))


if __name__ == "__main__":
    app()
