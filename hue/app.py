"""The `hue` command: review a change against a base revision (and, later, sweep reports)."""

from __future__ import annotations

from pathlib import Path

import typer

from hue.cli import guarded

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=True)


@app.callback()
def main() -> None:
    """Review tools for the activation hue pipeline (run from the repository root)."""


@app.command()
@guarded
def review(base: str = typer.Option("main", help="git revision or DVC experiment to compare against"),
           new: str = typer.Option(None, help="git revision or experiment to review (default: the workspace)"),
           out: Path = typer.Option(Path("review.md"), help="the Markdown report; images go beside it")) -> None:
    """Params diff, every headline metric base vs new with paired fold statistics, and changed figures."""
    from hue import review as review_module

    rows = review_module.review(base, new, out)
    typer.echo(f"wrote {out}: {len(rows)} headline metrics, "
               f"{sum(r['verdict'] == 'changed' for r in rows)} changed beyond fold noise")


@app.command()
@guarded
def sweep(key: str = typer.Option("digits/resnet18", "--key", help="dataset/arch of the Table 1 cell to compare"),
          out: Path = typer.Option(Path("sweep"), help="folder for sweep.md and its figures"),
          all_commits: bool = typer.Option(False, "--all-commits", "-A", help="experiments of every commit, not HEAD's")
          ) -> None:
    """Every DVC experiment: params that differ, one-hot vs hue paired over folds, diagnostics, figures."""
    from hue import sweep as sweep_module

    experiments = sweep_module.report(sweep_module.exp_show(all_commits), sweep_module.git_reader, key, out)
    changed = sum(1 for e in experiments if e.paired and e.paired["verdict"] == "changed")
    typer.echo(f"wrote {out / 'sweep.md'}: {len(experiments)} rows, {changed} beyond fold noise")
