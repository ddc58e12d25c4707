"""Shared matplotlib plumbing: a file-only backend, atomic saves, centred-grid extents."""

from __future__ import annotations

from pathlib import Path

from hue import shards


def pyplot():
    """matplotlib with the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path, dpi: int = 110) -> None:
    """Write a figure atomically and close it."""
    with shards.atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})  # no version stamp: stable bytes
    pyplot().close(fig)


def extent(grid) -> list[float]:
    """imshow extent so that axes read centred x, y (y up)."""
    h, w = grid
    return [-(w - 1) / 2 - 0.5, (w - 1) / 2 + 0.5, -(h - 1) / 2 - 0.5, (h - 1) / 2 + 0.5]
