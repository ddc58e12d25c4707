"""Tables and figures built from stage metrics; each reads exactly the files it is given."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from hue import shards
from hue.config import DESCRIPTORS
from hue.errors import HueError


class ReportError(HueError):
    """An input a report needs is missing."""


def read_required(paths: dict[str, Path], what: str) -> dict[str, dict]:
    """Read every JSON file named; fail naming the first one missing (never glob stale files)."""
    out = {}
    for key, path in paths.items():
        if not Path(path).exists():
            raise ReportError(f"{path} is missing ({what} of {key}); run `dvc repro` to produce it")
        out[key] = shards.read_json(path)
    return out


def figure4_table(metrics: dict[str, dict]) -> pd.DataFrame:
    """Accuracy by backbone x descriptor: one row each."""
    rows = []
    for backbone, m in metrics.items():
        for descriptor, d in m["descriptors"].items():
            rows.append({"name": f"{backbone}/{descriptor}", "backbone": backbone, "descriptor": descriptor,
                         "accuracy": round(d["accuracy"], 6), "accuracy_std": round(d["accuracy_std"], 6),
                         "recall_at_k": round(d["recall_at_k"], 6)})
    order = {d: i for i, d in enumerate(DESCRIPTORS)}
    return pd.DataFrame(rows).sort_values(["backbone", "descriptor"], key=lambda c: c.map(order) if
                                          c.name == "descriptor" else c, kind="stable").reset_index(drop=True)


def figure4(dataset: str, metric_paths: dict[str, Path], csv_out: Path, png_out: Path) -> pd.DataFrame:
    """The papers' Figure 4: kNN accuracy by backbone and descriptor, as CSV plot data and PNG."""
    table = figure4_table(read_required(metric_paths, "kNN metrics"))
    with shards.atomic_file(csv_out) as tmp:
        table.to_csv(tmp, index=False)
    plot_figure4(dataset, table, png_out)
    return table


def plot_figure4(dataset: str, table: pd.DataFrame, out: Path) -> None:
    """Grouped bars: descriptors on x, one bar per backbone, std over folds as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    descriptors = list(dict.fromkeys(table["descriptor"]))
    backbones = list(dict.fromkeys(table["backbone"]))
    width = 0.8 / len(backbones)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(descriptors), 3.6))
    for i, b in enumerate(backbones):
        sub = table[table["backbone"] == b].set_index("descriptor").reindex(descriptors)
        x = np.arange(len(descriptors)) + (i - (len(backbones) - 1) / 2) * width
        ax.bar(x, sub["accuracy"], width, yerr=sub["accuracy_std"], capsize=3, label=b)
    ax.set_xticks(np.arange(len(descriptors)), descriptors)
    ax.set_ylabel("kNN accuracy (mean ± std over folds)")
    ax.set_xlabel("descriptor")
    lo = max(0.0, float((table["accuracy"] - table["accuracy_std"]).min()) - 0.05)
    ax.set_ylim(lo, 1.0)
    ax.set_title(f"{dataset}: memory-based classification (Fig. 4)")
    ax.legend(title="backbone", fontsize=8)
    fig.tight_layout()
    with shards.atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
