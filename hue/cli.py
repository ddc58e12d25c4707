"""Glue for the thin stage scripts: one-line errors, no tracebacks."""

from __future__ import annotations

import functools
import sys
from typing import Callable

import typer

from hue.errors import HueError


def guarded(fn: Callable) -> Callable:
    """Print a HueError as one line on stderr and exit 1 instead of a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from hue import paths

        paths.share_download_cache()  # no-op outside a queued experiment's workspace
        try:
            return fn(*args, **kwargs)
        except HueError as err:
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(1) from None
        except FileNotFoundError as err:  # an input of an upstream stage is missing
            what = err.filename or str(err)
            typer.echo(f"error: {what} not found: run the stages before this one first (dvc repro)", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted: outputs were not written; rerun to start over", err=True)
            raise typer.Exit(130) from None

    return wrapper


def progress(iterable, **kwargs):
    """A progress bar on a terminal, silent in CI logs."""
    from tqdm.auto import tqdm

    disable = kwargs.pop("disable", False) or not sys.stderr.isatty()
    return tqdm(iterable, disable=disable, **kwargs)
