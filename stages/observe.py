"""Observe stage: energy maps, match locations, conditional matches and activation hue as numbers."""

import typer

from hue import config, observe, paths, report, shards
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

FIGURES = {"energy.png": report.plot_energy, "matches.png": report.plot_matches, "polar.png": report.plot_polar,
           "conditional.png": report.plot_conditional}


@app.command()
@guarded
def measure(dataset: str, backbone: str) -> None:
    """Measure the observations of DATASET through BACKBONE and draw its figures."""
    cfg, data = config.load("observe"), config.load("data")
    store = shards.ActivationStore(paths.activations(dataset, backbone))
    metrics, maps = observe.run(store, paths.matches(dataset, backbone), cfg, data.run_folds[0])
    shards.write_json(paths.observe_metrics(dataset, backbone), metrics)
    shards.write_json(paths.observe_maps(dataset, backbone), maps)
    report.write_radial_csv(metrics, paths.observe_plot(dataset, backbone, "radial.csv"))
    for name, draw in FIGURES.items():
        draw(f"{dataset} / {backbone}", maps, metrics, paths.observe_plot(dataset, backbone, name))


@app.command()
@guarded
def grid(dataset: str) -> None:
    """Energy maps of every backbone of DATASET side by side."""
    backbones = config.load("extract").backbones
    maps = report.read_required({b: paths.observe_maps(dataset, b) for b in backbones}, "energy maps")
    report.plot_energy_grid(dataset, maps, paths.energy_grid(dataset))


if __name__ == "__main__":
    app()
