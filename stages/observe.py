"""Observe stage: the observations as numbers per fold, their figures, and one-hot vs hue side by side."""

import typer

from hue import compare, config, observe, paths, plot_observe, report, shards, sources
from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

FIGURES = {"energy.png": plot_observe.plot_energy, "matches.png": plot_observe.plot_matches,
           "polar.png": plot_observe.plot_polar, "conditional.png": plot_observe.plot_conditional}


@app.command()
@guarded
def measure(dataset: str, source: str) -> None:
    """Measure the observations of DATASET through SOURCE, fold by fold, and draw its figures."""
    cfg, data, loss = config.load("observe"), config.load("data"), config.load("loss")
    detail, maps = observe.run(paths.activations(dataset, source), paths.matches(dataset, source), cfg,
                               data.run_folds, loss.labels, loss.seed)
    shards.write_json(paths.observe_detail(dataset, source), detail)
    shards.write_json(paths.observe_maps(dataset, source), maps)
    report.write_radial_csv(maps["energy_map"], paths.observe_plot(dataset, source, "radial.csv"))
    for name, draw in FIGURES.items():
        draw(f"{dataset} / {source}", maps, detail["headline"], paths.observe_plot(dataset, source, name))


@app.command()
@guarded
def grid(dataset: str) -> None:
    """Energy maps of every feature source of DATASET side by side."""
    names = sources.names(config.load("extract"))
    maps = report.read_required({n: paths.observe_maps(dataset, n) for n in names}, "energy maps")
    plot_observe.plot_energy_grid(dataset, maps, paths.energy_grid(dataset))


@app.command("compare")
@guarded
def compare_trained(dataset: str, backbone: str) -> None:
    """One-hot vs hue models of BACKBONE on DATASET: every observation paired over folds, figures side by side."""
    loss = config.load("loss")
    names = {m: f"{backbone}-{m}" for m in sources.TRAINED}
    compare.run(dataset, backbone, {m: paths.observe_detail(dataset, n) for m, n in names.items()},
                {m: paths.knn_detail(dataset, n) for m, n in names.items()},
                {m: paths.observe_maps(dataset, n) for m, n in names.items()}, loss.labels, loss.seed,
                paths.compare_table(dataset, backbone), paths.compare_plot(dataset, backbone, "polar.png"),
                paths.compare_plot(dataset, backbone, "matches.png"))


if __name__ == "__main__":
    app()
