"""Figure 4: kNN accuracy by feature source and descriptor."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hue.plotting import pyplot, save


def plot_figure4(dataset: str, table: pd.DataFrame, out: Path) -> None:
    """Grouped bars: descriptors on x, one bar per feature source, std over folds as error bars."""
    plt = pyplot()
    import numpy as np

    descriptors = list(dict.fromkeys(table["descriptor"]))
    backbones = list(dict.fromkeys(table["source"]))
    width = 0.8 / len(backbones)
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(descriptors), 3.6))
    for i, b in enumerate(backbones):
        sub = table[table["source"] == b].set_index("descriptor").reindex(descriptors)
        x = np.arange(len(descriptors)) + (i - (len(backbones) - 1) / 2) * width
        ax.bar(x, sub["accuracy"], width, yerr=sub["accuracy_std"], capsize=3, label=b)
    ax.set_xticks(np.arange(len(descriptors)), descriptors)
    ax.set_ylabel("kNN accuracy (mean ± std over folds)")
    ax.set_xlabel("descriptor")
    lo = max(0.0, float((table["accuracy"] - table["accuracy_std"]).min()) - 0.05)
    ax.set_ylim(lo, 1.0)
    ax.set_title(f"{dataset}: memory-based classification (Fig. 4)")
    ax.legend(title="source", fontsize=8)
    fig.tight_layout()
    save(fig, out, dpi=120)
