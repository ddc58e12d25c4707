"""Training figures: paired folds (one-hot vs hue) and training curves side by side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hue.plotting import pyplot, save


def plot_pairs(train: dict, out: Path) -> None:
    """One-hot vs hue test accuracy per fold: points above the diagonal favour hue."""
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    values = []
    for key, c in train.items():
        o, h = list(c["onehot_per_fold"].values()), list(c["hue_per_fold"].values())
        values += o + h
        ax.scatter(o, h, label=f"{key} (Δ {c['delta']:+.3f})", s=28)
    lo, hi = min(values) - 0.02, min(1.0, max(values) + 0.02)
    ax.plot([lo, hi], [lo, hi], color="grey", lw=1, ls="--")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("one-hot test accuracy (per fold)")
    ax.set_ylabel("one-hot + hue test accuracy (same fold)")
    ax.set_title("Paired folds: above the diagonal, hue helps")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    save(fig, out, dpi=120)


def plot_curves(title: str, logs: dict[str, dict[int, pd.DataFrame]], out: Path) -> None:
    """One-hot and hue side by side: validation accuracy and losses per epoch, folds thin, their mean bold."""
    plt = pyplot()
    fig, axes = plt.subplots(2, len(logs), figsize=(4.6 * len(logs), 6.4), squeeze=False, sharex=True)
    for col, (loss, runs) in enumerate(logs.items()):
        acc, ce = axes[0, col], axes[1, col]
        for fold, log in runs.items():
            acc.plot(log["epoch"], log["val_accuracy"], color="tab:blue", lw=0.8, alpha=0.45)
            ce.plot(log["epoch"], log["loss_ce"], color="tab:blue", lw=0.8, alpha=0.45)
            if log["loss_hue"].notna().any():
                ce.plot(log["epoch"], log["loss_hue"], color="tab:orange", lw=0.8, alpha=0.45)
        mean = pd.concat(runs.values()).groupby("epoch").mean(numeric_only=True)
        acc.plot(mean.index, mean["val_accuracy"], color="tab:blue", lw=2.2, label="mean over folds")
        ce.plot(mean.index, mean["loss_ce"], color="tab:blue", lw=2.2, label="cross-entropy")
        if mean["loss_hue"].notna().any():
            ce.plot(mean.index, mean["loss_hue"], color="tab:orange", lw=2.2, label="L_hue")
            ce.axhline(float(mean["log_m"].iloc[0]), color="tab:orange", ls="--", lw=1, label="log M")
        acc.set_title(f"{loss}: validation accuracy ({len(runs)} folds)", fontsize=10)
        ce.set_title(f"{loss}: training losses", fontsize=10)
        ce.set_xlabel("epoch")
        acc.legend(fontsize=7)
        ce.legend(fontsize=7)
    lo = min(a.get_ylim()[0] for a in axes[0])
    for a in axes[0]:
        a.set_ylim(lo, 1.0)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out)
