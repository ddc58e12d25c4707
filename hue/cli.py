"""Glue for the thin stage scripts: one-line errors, no tracebacks, the process's heap policy."""

from __future__ import annotations

import ctypes
import functools
import os
import platform
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


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def keep_freed_heap() -> bool:
    """Have glibc reuse freed memory instead of returning it to the kernel; False where libc is not glibc.

    torch's CPU allocator frees every activation after each op. By default glibc serves blocks
    over its mmap threshold (at most 32 MB) with fresh mappings and trims the heap's free top, so
    every batch faults its activations in again, page by page: 530k minor faults per extraction
    pass of the default dataset; the extract stage 1.55x faster at 224 px, training 1.07-1.12x
    (bench/RESULTS.md). Served from the heap and kept there (top trimmed only beyond 1 GiB),
    the same blocks are reused batch after batch, at 0-20% more peak RSS (heap fragmentation), so
    only the stages that run a network batch after batch opt in (`keeps_heap`).

    torch's CPU allocator is also asked for transparent huge pages on blocks over 2 MB
    (THP_MEM_ALLOC_ENABLE, which torch reads at its first CPU allocation, so this must run before
    one): the first batch of a process faults its heap in 2 MB pages instead of 4 KB ones (48k ->
    11k faults per extract stage on the default dataset, 0.1-0.2 s of a 3.4 s stage). A kernel with
    THP set to never ignores the request, one built without THP makes torch warn once, and
    THP_MEM_ALLOC_ENABLE=0 in the environment turns it off.
    """
    os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))


def keeps_heap(fn: Callable) -> Callable:
    """Run a stage that pushes batch after batch through a network with `keep_freed_heap`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        keep_freed_heap()
        return fn(*args, **kwargs)

    return wrapper


def progress(iterable, **kwargs):
    """A progress bar on a terminal, silent in CI logs."""
    from tqdm.auto import tqdm

    disable = kwargs.pop("disable", False) or not sys.stderr.isatty()
    return tqdm(iterable, disable=disable, **kwargs)
