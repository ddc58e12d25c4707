"""Download stage: fetch a dataset, validate its images, write its manifest and counts."""

from pathlib import Path

import typer

from hue import config, manifest
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
def dataset(name: str) -> None:
    """Fetch dataset NAME into data/raw/NAME and write data/manifests/NAME.parquet."""
    manifest.run(name, config.load("data"))


@app.command()
@guarded
def snapshot(name: str) -> None:
    """List the content of local folder NAME (data.folders) so DVC reruns when it changes."""
    manifest.write_snapshot(name, config.load("data"))


if __name__ == "__main__":
    app()
