"""The aggregate stage: Table 1 (one-hot vs hue, paired over folds) and the headline DVC metrics.

Headline metrics are a few small files a reviewer reads in `dvc metrics diff` / `dvc exp show`;
`metrics/detail/folds.json` mirrors their keys with the per-fold values behind each one, which
is what `hue review` pairs across revisions; its `diagnostics` key holds each hue run's final
loss diagnostics, which `hue sweep` reads (the per-run detail files are DVC-cached, not in git).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hue import report, shards, stats

# the per-run numbers `hue sweep` needs from every hue run
DIAGNOSTICS = ("final_grad_ratio", "final_loss_hue", "log_m", "distance_scale")

# the observation numbers a reviewer reads first (every one is in the per-fold detail too)
OBSERVE_HEADLINE = ("at_query_position", "match_R", "tangential_radial", "hue_R", "hue_label_corr",
                    "head_error_deg", "energy_asymmetry")


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Everything the aggregate stage writes."""

    train: Path
    knn: Path
    observe: Path
    folds: Path
    table_md: Path
    table_csv: Path
    figure: Path


def table1_cell(onehot: dict[int, dict], hue: dict[int, dict]) -> dict:
    """One-hot vs hue on the same folds: means, stds, the paired delta with its CI, p and verdict."""
    folds = sorted(onehot)
    o = [onehot[f]["test_accuracy"] for f in folds]
    h = [hue[f]["test_accuracy"] for f in folds]
    head = [hue[f]["hue_test_accuracy"] for f in folds]
    (om, osd), (hm, hsd) = stats.mean_std(o), stats.mean_std(h)
    return {"onehot_mean": om, "onehot_std": osd, "hue_mean": hm, "hue_std": hsd, **stats.paired(o, h),
            "hue_head_mean": stats.mean_std(head)[0],
            "onehot_per_fold": dict(zip(map(str, folds), o)), "hue_per_fold": dict(zip(map(str, folds), h)),
            "hue_head_per_fold": dict(zip(map(str, folds), head))}


def train_headline(cells: dict[str, dict]) -> tuple[dict, dict]:
    """Table 1 cells as metrics, and their per-fold values under the same keys."""
    metrics, folds = {}, {}
    for key, c in cells.items():
        metrics[key] = {"onehot": c["onehot_mean"], "hue": c["hue_mean"], "delta": c["delta"],
                        "p_value": c["p_value"], "hue_head": c["hue_head_mean"]}
        delta = {f: c["hue_per_fold"][f] - c["onehot_per_fold"][f] for f in c["onehot_per_fold"]}
        folds[key] = {"onehot": c["onehot_per_fold"], "hue": c["hue_per_fold"], "delta": delta,
                      "hue_head": c["hue_head_per_fold"]}
    return metrics, folds


def diagnostics(pairs: dict[str, dict]) -> dict:
    """{dataset/arch: {fold: {final_grad_ratio, final_loss_hue, log_m, distance_scale}}} of the hue runs."""
    return {key: {str(f): {k: run.get(k) for k in DIAGNOSTICS} for f, run in sorted(p["hue"].items())}
            for key, p in pairs.items()}


def knn_headline(details: dict[str, dict]) -> tuple[dict, dict]:
    """kNN accuracy per source and descriptor, and per fold."""
    metrics = {k: {d: v["accuracy"] for d, v in m["descriptors"].items()} for k, m in details.items()}
    folds = {k: {d: v["accuracy_per_fold"] for d, v in m["descriptors"].items()} for k, m in details.items()}
    return metrics, folds


def observe_headline(details: dict[str, dict]) -> tuple[dict, dict]:
    """The observation headline numbers per source (those that exist for it), and per fold."""
    metrics, folds = {}, {}
    for key, m in details.items():
        h = {name: m["headline"][name] for name in OBSERVE_HEADLINE if m["headline"][name]["mean"] is not None}
        metrics[key] = {name: v["mean"] for name, v in h.items()}
        folds[key] = {name: v["per_fold"] for name, v in h.items()}
    return metrics, folds


def run(train_paths: dict[tuple, Path], knn_paths: dict[tuple, Path], observe_paths: dict[tuple, Path],
        out: Outputs) -> dict:
    """Read exactly the files the params imply; write headline metrics, their per-fold mirror and Table 1."""
    from hue.plot_train import plot_pairs

    runs = report.read_required({"/".join(map(str, k)): p for k, p in train_paths.items()}, "training detail")
    pairs: dict[str, dict] = {}
    for (dataset, arch, loss, fold) in train_paths:
        pairs.setdefault(f"{dataset}/{arch}", {"onehot": {}, "hue": {}})[loss][fold] = \
            runs[f"{dataset}/{arch}/{loss}/{fold}"]
    cells = {key: table1_cell(p["onehot"], p["hue"]) for key, p in pairs.items()}
    knn = report.read_required({"/".join(k): p for k, p in knn_paths.items()}, "kNN detail")
    observe = report.read_required({"/".join(k): p for k, p in observe_paths.items()}, "observation detail")
    train_m, train_f = train_headline(cells)
    knn_m, knn_f = knn_headline(knn)
    obs_m, obs_f = observe_headline(observe)
    for path, metrics in ((out.train, train_m), (out.knn, knn_m), (out.observe, obs_m)):
        shards.write_json(path, metrics)
    shards.write_json(out.folds, {str(out.train): train_f, str(out.knn): knn_f, str(out.observe): obs_f,
                                  "diagnostics": diagnostics(pairs)})
    with shards.atomic_file(out.table_csv) as tmp:
        report.table1_frame(cells).to_csv(tmp, index=False)
    with shards.atomic_file(out.table_md) as tmp:
        tmp.write_text(report.table1_markdown(cells, knn_m))
    plot_pairs(cells, out.figure)
    return {"train": train_m, "knn": knn_m, "observe": obs_m}


def curves(title: str, log_paths: dict[str, dict[int, Path]], csv_out: Path, png_out: Path) -> None:
    """The curves stage: mean validation curves of one-hot and hue (DVC plot data) and the side-by-side figure."""
    import pandas as pd

    from hue.plot_train import plot_curves

    missing = [p for runs in log_paths.values() for p in runs.values() if not Path(p).exists()]
    if missing:
        raise report.ReportError(f"{missing[0]} is missing (a training log); run `dvc repro` to produce it")
    logs = {loss: {f: pd.read_csv(p) for f, p in runs.items()} for loss, runs in log_paths.items()}
    long = []  # one row per loss x epoch: the template colours by `loss` and dashes by revision
    for loss, runs in logs.items():
        stacked = pd.concat(runs.values()).groupby("epoch")
        means, stds = stacked.mean(numeric_only=True), stacked.std(numeric_only=True, ddof=1)
        long.append(pd.DataFrame({"epoch": means.index, "loss": loss, "val_accuracy": means["val_accuracy"].to_numpy(),
                                  "val_accuracy_std": stds["val_accuracy"].fillna(0).to_numpy(),
                                  "loss_ce": means["loss_ce"].to_numpy(), "loss_hue": means["loss_hue"].to_numpy()}))
    with shards.atomic_file(csv_out) as tmp:
        pd.concat(long).round(6).to_csv(tmp, index=False)
    plot_curves(title, logs, png_out)
