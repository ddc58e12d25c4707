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


# --- aggregate: the Table 1 analogue -------------------------------------------------------


def paired_test(onehot: list[float], hue: list[float]) -> float | None:
    """Two-sided paired t-test p-value over folds (None with fewer than two folds)."""
    from scipy.stats import ttest_rel

    if len(onehot) < 2:
        return None
    deltas = [h - o for o, h in zip(onehot, hue)]
    if all(d == deltas[0] for d in deltas):  # zero variance: t is 0 (no change) or infinite
        return 1.0 if deltas[0] == 0 else 0.0
    return float(ttest_rel(hue, onehot).pvalue)


def compare(onehot_runs: dict[int, dict], hue_runs: dict[int, dict]) -> dict:
    """One-hot vs hue on the same folds: mean, std, paired delta and p-value."""
    import numpy as np

    folds = sorted(onehot_runs)
    o = [onehot_runs[f]["test_accuracy"] for f in folds]
    h = [hue_runs[f]["test_accuracy"] for f in folds]
    std = (lambda v: float(np.std(v, ddof=1)) if len(v) > 1 else 0.0)
    return {
        "onehot_mean": float(np.mean(o)), "onehot_std": std(o),
        "hue_mean": float(np.mean(h)), "hue_std": std(h),
        "delta": float(np.mean(h) - np.mean(o)), "delta_std": std([b - a for a, b in zip(o, h)]),
        "p_value": paired_test(o, h), "n_folds": len(folds),
        "onehot_per_fold": {str(f): v for f, v in zip(folds, o)},
        "hue_per_fold": {str(f): v for f, v in zip(folds, h)},
        "onehot_best_val_mean": float(np.mean([onehot_runs[f]["test_accuracy_best_val"] for f in folds])),
        "hue_best_val_mean": float(np.mean([hue_runs[f]["test_accuracy_best_val"] for f in folds])),
        "hue_head_accuracy": float(np.mean([hue_runs[f]["hue_test_accuracy"] for f in folds])),
    }


def aggregate(train_paths: dict[tuple, Path], knn_paths: dict[tuple, Path], summary_out: Path, table_md: Path,
              table_csv: Path, figure: Path) -> dict:
    """The aggregate stage: Table 1 per dataset x arch, plus the kNN summary."""
    runs = read_required({"/".join(map(str, k)): p for k, p in train_paths.items()}, "training metrics")
    knns = read_required({"/".join(k): p for k, p in knn_paths.items()}, "kNN metrics")
    pairs: dict[str, dict] = {}
    for (dataset, arch, loss, fold) in train_paths:
        pairs.setdefault(f"{dataset}/{arch}", {"onehot": {}, "hue": {}})[loss][fold] = \
            runs[f"{dataset}/{arch}/{loss}/{fold}"]
    train = {key: compare(p["onehot"], p["hue"]) for key, p in pairs.items()}
    knn = {key: {d: v["accuracy"] for d, v in m["descriptors"].items()} for key, m in knns.items()}
    summary = {"train": train, "knn": knn}
    shards.write_json(summary_out, summary)
    table = table1(train)
    with shards.atomic_file(table_csv) as tmp:
        table.to_csv(tmp, index=False)
    with shards.atomic_file(table_md) as tmp:
        tmp.write_text(table1_markdown(table, knn))
    plot_pairs(train, figure)
    return summary


def table1(train: dict) -> pd.DataFrame:
    """Rows of the Table 1 analogue."""
    rows = []
    for key, c in train.items():
        dataset, arch = key.split("/")
        rows.append({"dataset": dataset, "arch": arch, "onehot_mean": c["onehot_mean"], "onehot_std": c["onehot_std"],
                     "hue_mean": c["hue_mean"], "hue_std": c["hue_std"], "delta": c["delta"],
                     "p_value": c["p_value"], "n_folds": c["n_folds"], "hue_head_accuracy": c["hue_head_accuracy"]})
    return pd.DataFrame(rows).round(6)


def table1_markdown(table: pd.DataFrame, knn: dict) -> str:
    """Table 1 (and the kNN summary) as Markdown."""
    lines = ["# Top-1 test accuracy, training from scratch (mean ± std over folds)", "",
             "| dataset | model | one-hot | + hue | Δ (paired) | p (paired t) | folds | hue head |",
             "|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        p = "n/a" if r.p_value is None or pd.isna(r.p_value) else f"{r.p_value:.3g}"
        lines.append(f"| {r.dataset} | {r.arch} | {r.onehot_mean:.4f} ± {r.onehot_std:.4f} | "
                     f"{r.hue_mean:.4f} ± {r.hue_std:.4f} | {r.delta:+.4f} | {p} | {r.n_folds} | "
                     f"{r.hue_head_accuracy:.4f} |")
    if knn:
        descriptors = [d for d in DESCRIPTORS if any(d in v for v in knn.values())]
        lines += ["", "# Memory-based kNN accuracy (Eq. 1-3, mean over folds)", "",
                  "| dataset/backbone | " + " | ".join(descriptors) + " |",
                  "|---|" + "---|" * len(descriptors)]
        for key, accs in knn.items():
            lines.append(f"| {key} | " + " | ".join(f"{accs[d]:.4f}" if d in accs else "" for d in descriptors) + " |")
    return "\n".join(lines) + "\n"


def plot_pairs(train: dict, out: Path) -> None:
    """One-hot vs hue test accuracy per fold: points above the diagonal favour hue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    with shards.atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# --- observation figures (Fig. 3, 5, 6) ----------------------------------------------------


def _pyplot():
    """matplotlib with the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path) -> None:
    """Write a figure atomically and close it."""
    with shards.atomic_file(out) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    _pyplot().close(fig)


def _extent(grid) -> list[float]:
    """imshow extent so that axes read centred x, y (y up)."""
    h, w = grid
    return [-(w - 1) / 2 - 0.5, (w - 1) / 2 + 0.5, -(h - 1) / 2 - 0.5, (h - 1) / 2 + 0.5]


def plot_energy(title: str, maps: dict, metrics: dict, out: Path) -> None:
    """Mean energy map with a colour bar, and its radial profile (Fig. 3)."""
    import numpy as np

    plt = _pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.6))
    im = a.imshow(np.array(maps["energy_map"]), cmap="inferno", extent=_extent(maps["grid"]))
    fig.colorbar(im, ax=a, label="mean ||I(x, y)||²")
    a.set_title("energy map")
    a.set_xlabel("x (cells from centre)")
    a.set_ylabel("y (cells from centre)")
    prof = metrics["energy"]["radial_profile"]
    b.plot([p["radius"] for p in prof], [p["energy"] for p in prof], marker="o")
    b.set_xlabel("distance from centre (cells)")
    b.set_ylabel("mean energy")
    sym = metrics["energy"]["symmetry"]
    b.set_title(f"radial profile (asymmetry: 180° {sym['rot180']:.3f})")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)


def plot_matches(title: str, maps: dict, metrics: dict, out: Path) -> None:
    """Same- vs different-class match heatmaps; arrows: per-class mean angle, length R (Fig. 5)."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.0))
    m = metrics["match_locations"]
    for ax, key, name in ((axes[0], "heatmap_same", "same class"), (axes[1], "heatmap_different", "different class")):
        hm = np.array(maps[key], dtype=float)
        im = ax.imshow(hm / max(hm.sum(), 1), cmap="viridis", extent=_extent(maps["grid"]))
        fig.colorbar(im, ax=ax, label="share of matches")
        radius = m["mean_radius_same" if key == "heatmap_same" else "mean_radius_different"]
        ax.set_title(f"{name}: mean radius {radius if radius is None else round(radius, 2)}", fontsize=10)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    angles = {c: (mean, r) for c, (mean, r) in maps["class_angles"].items() if mean == mean}  # drop nan
    r_max = max((r for _, r in angles.values()), default=0.0) or 1.0
    scale = (min(maps["grid"]) - 1) / 2 or 0.5
    cmap = plt.get_cmap("tab10")
    for i, (cls, (mean, r)) in enumerate(angles.items()):
        axes[0].annotate("", xy=(scale * r / r_max * np.cos(mean), scale * r / r_max * np.sin(mean)), xytext=(0, 0),
                         arrowprops={"arrowstyle": "->", "color": cmap(i % 10), "lw": 1.5})
    axes[0].text(0.02, 0.02, f"arrows: class mean angle, length R / {r_max:.3f}", transform=axes[0].transAxes,
                 fontsize=7, color="white")
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)


def plot_polar(title: str, maps: dict, metrics: dict, out: Path) -> None:
    """Polar view: per-class mean angle and R of same-class matches and of activation hue."""
    import numpy as np

    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 4.2), subplot_kw={"projection": "polar"})
    cmap = plt.get_cmap("tab10")
    for ax, key, name in ((axes[0], "class_angles", "same-class match angle θ"),
                          (axes[1], "hue_class_angles", "activation hue angle")):
        for i, (cls, (mean, r)) in enumerate(maps[key].items()):
            if mean == mean:
                ax.plot([mean, mean], [0, r], color=cmap(i % 10), lw=2, label=cls)
        ax.set_ylim(0, max([r for _, r in maps[key].values() if r == r] + [1e-3]) * 1.1)
        ax.yaxis.set_major_locator(plt.MaxNLocator(3))
        ax.tick_params(axis="y", labelsize=7)
        ax.set_title(f"{name}\n(direction: class mean, length: R)", fontsize=9)
    axes[1].legend(title="class", fontsize=6, loc="upper left", bbox_to_anchor=(1.05, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    _save(fig, out)


def pick_query_positions(keys: list[str], grid) -> list[str]:
    """A few query positions for the conditional maps: centre, an edge and a corner (if present)."""
    pos = {k: tuple(map(float, k.split(","))) for k in keys}
    by_r = sorted(pos, key=lambda k: (pos[k][0] ** 2 + pos[k][1] ** 2, -pos[k][0], -pos[k][1]))
    if len(by_r) <= 3:
        return by_r
    edge = min((k for k in pos if pos[k][1] == 0 and pos[k][0] > 0), key=lambda k: -pos[k][0], default=by_r[1])
    return list(dict.fromkeys([by_r[0], edge, by_r[-1]]))


def plot_conditional(title: str, maps: dict, metrics: dict, out: Path) -> None:
    """p(x_match | x_query) for a few query positions, same vs different class (Fig. 6 / 8)."""
    import numpy as np

    plt = _pyplot()
    chosen = pick_query_positions(list(maps["conditional"]), maps["grid"])
    fig, axes = plt.subplots(2, len(chosen), figsize=(3.2 * len(chosen), 6.0), squeeze=False)
    for j, key in enumerate(chosen):
        qx, qy = map(float, key.split(","))
        for i, name in enumerate(("same", "different")):
            ax = axes[i, j]
            im = ax.imshow(np.array(maps["conditional"][key][name]), cmap="magma", extent=_extent(maps["grid"]))
            ax.plot([qx], [qy], marker="+", color="cyan", ms=12, mew=2)
            ax.set_title(f"query ({qx:g}, {qy:g}): {name} class", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    c = metrics["conditional"]
    ratio = c["same"]["tangential_radial_ratio"]
    fig.suptitle(f"{title} — tangential/radial variance, same class: {ratio if ratio is None else round(ratio, 2)}")
    fig.tight_layout()
    _save(fig, out)


def plot_energy_grid(dataset: str, maps_by_backbone: dict[str, dict], out: Path) -> None:
    """Energy maps of every backbone side by side (Fig. 3)."""
    import numpy as np

    plt = _pyplot()
    n = len(maps_by_backbone)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False)
    for ax, (backbone, maps) in zip(axes[0], maps_by_backbone.items()):
        im = ax.imshow(np.array(maps["energy_map"]), cmap="inferno", extent=_extent(maps["grid"]))
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(backbone)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle(f"{dataset}: mean bottleneck energy ||I(x, y)||² (Fig. 3)")
    fig.tight_layout()
    _save(fig, out)


def write_radial_csv(metrics: dict, out: Path) -> None:
    """The radial energy profile as DVC plot data."""
    with shards.atomic_file(out) as tmp:
        pd.DataFrame(metrics["energy"]["radial_profile"]).to_csv(tmp, index=False)
