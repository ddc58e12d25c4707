"""The observation figures (Fig. 3, 5, 6) and the one-hot vs hue side-by-side views."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hue.plotting import extent, pyplot, save


def plot_energy(title: str, maps: dict, headline: dict, out: Path) -> None:
    """Mean energy map with a colour bar, and its radial profile (Fig. 3)."""
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(8.4, 3.6))
    im = a.imshow(np.array(maps["energy_map"]), cmap="inferno", extent=extent(maps["grid"]))
    fig.colorbar(im, ax=a, label="mean ||I(x, y)||²")
    a.set_title("energy map")
    a.set_xlabel("x (cells from centre)")
    a.set_ylabel("y (cells from centre)")
    from hue.observe import radial_profile

    prof = radial_profile(np.array(maps["energy_map"]))
    b.plot([p["radius"] for p in prof], [p["energy"] for p in prof], marker="o")
    b.set_xlabel("distance from centre (cells)")
    b.set_ylabel("mean energy")
    b.set_title(f"radial profile (asymmetry: 180° {_num(headline['energy_asymmetry']['mean'])})")
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out)


def plot_matches(title: str, maps: dict, headline: dict, out: Path) -> None:
    """Same- vs different-class match heatmaps; arrows: per-class mean angle, length R (Fig. 5)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 4.0))
    for ax, key, name in ((axes[0], "heatmap_same", "same class"), (axes[1], "heatmap_different", "different class")):
        hm = np.array(maps[key], dtype=float)
        im = ax.imshow(hm / max(hm.sum(), 1), cmap="viridis", extent=extent(maps["grid"]))
        fig.colorbar(im, ax=ax, label="share of matches")
        radius = maps["mean_radius_same" if key == "heatmap_same" else "mean_radius_different"]
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
    save(fig, out)


def plot_polar(title: str, maps: dict, headline: dict, out: Path) -> None:
    """Polar view: per-class mean angle and R of same-class matches and of activation hue."""
    plt = pyplot()
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
    save(fig, out)


def pick_query_positions(keys: list[str], grid) -> list[str]:
    """A few query positions for the conditional maps: centre, an edge and a corner (if present)."""
    pos = {k: tuple(map(float, k.split(","))) for k in keys}
    by_r = sorted(pos, key=lambda k: (pos[k][0] ** 2 + pos[k][1] ** 2, -pos[k][0], -pos[k][1]))
    if len(by_r) <= 3:
        return by_r
    edge = min((k for k in pos if pos[k][1] == 0 and pos[k][0] > 0), key=lambda k: -pos[k][0], default=by_r[1])
    return list(dict.fromkeys([by_r[0], edge, by_r[-1]]))


def plot_conditional(title: str, maps: dict, headline: dict, out: Path) -> None:
    """p(x_match | x_query) for a few query positions, same vs different class (Fig. 6 / 8)."""
    plt = pyplot()
    chosen = pick_query_positions(list(maps["conditional"]), maps["grid"])
    fig, axes = plt.subplots(2, len(chosen), figsize=(3.2 * len(chosen), 6.0), squeeze=False)
    for j, key in enumerate(chosen):
        qx, qy = map(float, key.split(","))
        for i, name in enumerate(("same", "different")):
            ax = axes[i, j]
            im = ax.imshow(np.array(maps["conditional"][key][name]), cmap="magma", extent=extent(maps["grid"]))
            ax.plot([qx], [qy], marker="+", color="cyan", ms=12, mew=2)
            ax.set_title(f"query ({qx:g}, {qy:g}): {name} class", fontsize=9)
            fig.colorbar(im, ax=ax, fraction=0.046)
    ratio = headline["tangential_radial"]["mean"]
    fig.suptitle(f"{title} — tangential/radial variance, same class: {_num(ratio)}")
    fig.tight_layout()
    save(fig, out)


def plot_energy_grid(dataset: str, maps_by_backbone: dict[str, dict], out: Path) -> None:
    """Energy maps of every feature source side by side (Fig. 3)."""
    plt = pyplot()
    n = len(maps_by_backbone)
    fig, axes = plt.subplots(1, n, figsize=(3.4 * n, 3.2), squeeze=False)
    for ax, (backbone, maps) in zip(axes[0], maps_by_backbone.items()):
        im = ax.imshow(np.array(maps["energy_map"]), cmap="inferno", extent=extent(maps["grid"]))
        fig.colorbar(im, ax=ax, fraction=0.046)
        ax.set_title(backbone)
        ax.set_xlabel("x")
        ax.set_ylabel("y")
    fig.suptitle(f"{dataset}: mean bottleneck energy ||I(x, y)||² (Fig. 3)")
    fig.tight_layout()
    save(fig, out)


def _num(value, digits: int = 3) -> str:
    """A number for a title, or 'n/a'."""
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def _polar_panel(ax, angles: dict, reference: dict | None, title: str) -> None:
    """Per-class mean angle (direction) and R (length); dashed: the trained label angle of each class."""
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    top = max([r for _, r in (angles or {}).values() if r == r] + [1e-3])
    for i, (cls, (mean, r)) in enumerate((angles or {}).items()):
        if mean == mean:
            ax.plot([mean, mean], [0, r], color=cmap(i % 10), lw=2, label=cls)
        if reference is not None:
            ax.plot([reference[cls]] * 2, [0, top * 1.05], color=cmap(i % 10), lw=0.8, ls="--")
    ax.set_ylim(0, top * 1.1)
    ax.yaxis.set_major_locator(plt.MaxNLocator(3))
    ax.tick_params(axis="y", labelsize=6)
    ax.set_title(title, fontsize=8)


def plot_compare_polar(title: str, maps: dict[str, dict], phi: dict[str, float], out: Path) -> None:
    """One row per model (one-hot, hue): same-class match angle, activation hue and the hue head's theta'."""
    plt = pyplot()
    fig, axes = plt.subplots(len(maps), 3, figsize=(10.5, 3.6 * len(maps)), subplot_kw={"projection": "polar"},
                             squeeze=False)
    for row, (model, m) in zip(axes, maps.items()):
        _polar_panel(row[0], m["class_angles"], None, f"{model}: same-class match angle θ\n(pooled over folds)")
        _polar_panel(row[1], m["hue_class_angles"], phi, f"{model}: activation hue per class\n(fold {m['hue_fold']}; "
                     "dashed: label angle; plane orientation arbitrary)")
        _polar_panel(row[2], m["head_class_angles"], phi, f"{model}: hue head θ' per class\n(fold {m['hue_fold']}; "
                     "dashed: label angle)")
    axes[0, 2].legend(title="class", fontsize=6, loc="upper left", bbox_to_anchor=(1.1, 1.0))
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out)


def plot_compare_matches(title: str, maps: dict[str, dict], out: Path) -> None:
    """Same- and different-class match heatmaps of each model, one row per model, shared colour scale per column."""
    plt = pyplot()
    fig, axes = plt.subplots(len(maps), 2, figsize=(8.6, 3.8 * len(maps)), squeeze=False)
    for col, key in enumerate(("heatmap_same", "heatmap_different")):
        shares = {m: np.array(v[key], dtype=float) / max(np.sum(v[key]), 1) for m, v in maps.items()}
        top = max(float(a.max()) for a in shares.values()) or 1.0
        for row, (model, share) in zip(axes[:, col], shares.items()):
            im = row.imshow(share, cmap="viridis", vmin=0, vmax=top, extent=extent(maps[model]["grid"]))
            fig.colorbar(im, ax=row, fraction=0.046, label="share of matches")
            row.set_title(f"{model}: {'same' if col == 0 else 'different'} class", fontsize=9)
            row.set_xlabel("x")
            row.set_ylabel("y")
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, out)
