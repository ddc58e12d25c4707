"""Reproducibility band: the default training at another torch thread count vs the workspace's runs.

    python bench/threads.py --threads 1       # after `dvc repro` (which trained with torch's default threads)

Retrains every (loss, fold) of the default params with `torch.set_num_threads(N)` and prints the
per-fold test accuracy next to the workspace's, and the largest change: how far floating point
alone moves the numbers on one machine.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(threads: int = 1, dataset: str = "digits", arch: str = "resnet18") -> None:
    """Retrain at `threads` threads; print per-fold accuracies against the workspace's."""
    import torch

    from hue import config, paths, train

    torch.set_num_threads(threads)
    params, loss, data = config.load("train"), config.load("loss"), config.load("data")
    changes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("onehot", "hue"):
            for fold in data.run_folds:
                out = train.Outputs(*(Path(tmp) / f"{kind}{fold}-{n}" for n in ("m.pt", "r.pt", "l.csv", "d.json", "t.json")))
                new = train.run(dataset, arch, fold, kind, params, loss, paths.manifest(dataset), out)["test_accuracy"]
                ref = json.loads(paths.train_detail(dataset, arch, kind, fold).read_text())["test_accuracy"]
                changes[(kind, fold)] = new - ref
                print(f"{kind:6s} fold {fold}: workspace {ref:.4f}  {threads} thread(s) {new:.4f}  change {new - ref:+.4f}",
                      flush=True)
    for kind in ("onehot", "hue"):
        per = [v for (k, _), v in changes.items() if k == kind]
        print(f"{kind}: largest |change| {max(map(abs, per)):.4f}, change of the mean {sum(per) / len(per):+.4f}")
    print(f"largest per-fold |change|: {max(map(abs, changes.values())):.4f}")


if __name__ == "__main__":
    app()
