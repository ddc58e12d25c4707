"""One-hot vs hue, looked inside: the observations of both trained models of a backbone, paired over folds.

Fold k of each model is the network trained with fold k held out, so the pairing is exact:
same images, same memory, same init; only the loss differs.
"""

from __future__ import annotations

import math
from pathlib import Path

from hue import report, shards, stats
from hue.config import DESCRIPTORS

OBSERVE_ROWS = (
    ("at_query_position", "share of matches at the query's own position"),
    ("match_R", "same-class match angle R, mean over classes"),
    ("match_R_shuffled", "… the same with shuffled labels (baseline)"),
    ("match_significant", "share of classes with match-angle permutation p < 0.05"),
    ("tangential_radial", "tangential / radial variance of same-class matches"),
    ("hue_R", "activation hue R, mean over classes"),
    ("hue_R_shuffled", "… the same with shuffled labels (baseline)"),
    ("hue_significant", "share of classes with activation-hue permutation p < 0.05"),
    ("hue_label_corr", "|circular corr.| of class activation-hue means with label angles θ_c"),
    ("hue_label_corr_p", "… its permutation p"),
    ("energy_asymmetry", "energy map asymmetry under 180° rotation"),
    ("head_R", "hue head θ′ R, mean over classes"),
    ("head_error_deg", "hue head θ′ mean angular error to θ_c (degrees)"),
    ("head_label_corr", "|circular corr.| of class θ′ means with label angles θ_c"),
)
NOTE = ("Mean ± std over held-out folds. Fold k of both models is the network trained with fold k held out "
        "(memory = the other folds), so Δ is paired. With a handful of folds a paired t-test is coarse: read the CI "
        "and the verdict, not the p-value alone.")


def _cell(values: list[float]) -> str:
    """mean ± std of finite values."""
    if not values:
        return "n/a"
    m, s = stats.mean_std(values)
    return f"{m:.4f} ± {s:.4f}"


def row(name: str, onehot: dict[str, float | None], hue: dict[str, float | None]) -> dict:
    """One measure: per-fold values of both models, paired where both are finite."""
    ok = lambda v: v is not None and not (isinstance(v, float) and math.isnan(v))  # noqa: E731
    folds = sorted(f for f in onehot if f in hue and ok(onehot[f]) and ok(hue[f]))
    o, h = [onehot[f] for f in folds], [hue[f] for f in folds]
    return {"name": name, "onehot": _cell([v for v in onehot.values() if ok(v)]),
            "hue": _cell([v for v in hue.values() if ok(v)]), "n": len(folds),
            "paired": stats.paired(o, h) if folds else None}


def rows(observe: dict[str, dict], knn: dict[str, dict]) -> list[dict]:
    """Every measure of the comparison, kNN accuracy first."""
    out = [row(f"kNN accuracy, {d}", knn["onehot"]["descriptors"][d]["accuracy_per_fold"],
               knn["hue"]["descriptors"][d]["accuracy_per_fold"])
           for d in DESCRIPTORS if d in knn["onehot"]["descriptors"] and d in knn["hue"]["descriptors"]]
    for key, name in OBSERVE_ROWS:
        out.append(row(name, observe["onehot"]["headline"][key]["per_fold"],
                       observe["hue"]["headline"][key]["per_fold"]))
    return out


def run(dataset: str, backbone: str, observe_paths: dict[str, Path], knn_paths: dict[str, Path],
        maps_paths: dict[str, Path], labels_kind: str, labels_seed: int, table_out: Path, polar_out: Path,
        matches_out: Path) -> list[dict]:
    """The compare stage: the paired table and the side-by-side figures."""
    from hue.observe import label_angles
    from hue.plot_observe import plot_compare_matches, plot_compare_polar

    observe = report.read_required(observe_paths, "observation detail")
    knn = report.read_required(knn_paths, "kNN detail")
    maps = {f"{backbone}-{m}": shards.read_json(p) for m, p in maps_paths.items()}
    table = rows(observe, knn)
    title = f"{dataset} / {backbone}: one-hot vs hue-trained models, observed fold by fold"
    with shards.atomic_file(table_out) as tmp:
        tmp.write_text(report.comparison_markdown(title, table, NOTE))
    n_classes = len(next(iter(maps.values()))["heatmap_same_by_class"])
    phi = {str(c): float(a) for c, a in enumerate(label_angles(labels_kind, n_classes, labels_seed))}
    plot_compare_polar(title, maps, phi, polar_out)
    plot_compare_matches(title, maps, matches_out)
    return table

