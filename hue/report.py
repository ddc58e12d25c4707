"""Tables built from stage outputs (Figure 4 data, Table 1, comparisons); each reads exactly the files given."""

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


def figure4_table(details: dict[str, dict]) -> pd.DataFrame:
    """Accuracy by feature source x descriptor: one row each."""
    rows = []
    for source, m in details.items():
        for descriptor, d in m["descriptors"].items():
            rows.append({"name": f"{source}/{descriptor}", "source": source, "descriptor": descriptor,
                         "accuracy": round(d["accuracy"], 6), "accuracy_std": round(d["accuracy_std"], 6),
                         "recall_at_k": round(d["recall_at_k"], 6)})
    order = {d: i for i, d in enumerate(DESCRIPTORS)}
    return pd.DataFrame(rows).sort_values(["source", "descriptor"], key=lambda c: c.map(order) if
                                          c.name == "descriptor" else c, kind="stable").reset_index(drop=True)


def figure4(dataset: str, detail_paths: dict[str, Path], csv_out: Path, png_out: Path) -> pd.DataFrame:
    """The papers' Figure 4: kNN accuracy by source and descriptor, as CSV plot data and PNG."""
    from hue.plot_knn import plot_figure4

    table = figure4_table(read_required(detail_paths, "kNN detail"))
    with shards.atomic_file(csv_out) as tmp:
        table.to_csv(tmp, index=False)
    plot_figure4(dataset, table, png_out)
    return table


def p_text(p: float | None) -> str:
    """A p-value for a table cell."""
    return "n/a" if p is None or p != p else f"{p:.3g}"


def num(value: float | None, digits: int = 4) -> str:
    """A number for a table cell."""
    return "n/a" if value is None or value != value else f"{value:.{digits}f}"


def table1_markdown(train: dict, knn: dict) -> str:
    """Table 1 (one-hot vs hue, paired over folds) and the kNN summary as Markdown."""
    lines = ["# Top-1 test accuracy, training from scratch (mean ± std over folds)", "",
             "| dataset | model | one-hot | + hue | Δ (paired) | 95% CI of Δ | p (paired t) | verdict | folds | hue head |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for key, c in train.items():
        dataset, arch = key.split("/")
        lines.append(f"| {dataset} | {arch} | {num(c['onehot_mean'])} ± {num(c['onehot_std'])} | "
                     f"{num(c['hue_mean'])} ± {num(c['hue_std'])} | {c['delta']:+.4f} | "
                     f"[{num(c['ci_low'])}, {num(c['ci_high'])}] | {p_text(c['p_value'])} | {c['verdict']} | "
                     f"{c['n_folds']} | {num(c['hue_head_mean'])} |")
    if knn:
        descriptors = [d for d in DESCRIPTORS if any(d in v for v in knn.values())]
        lines += ["", "# Memory-based kNN accuracy (Eq. 1-3, mean over folds)", "",
                  "| dataset/source | " + " | ".join(descriptors) + " |", "|---|" + "---|" * len(descriptors)]
        for key, accs in knn.items():
            lines.append(f"| {key} | " + " | ".join(num(accs.get(d)) if d in accs else "" for d in descriptors) + " |")
    return "\n".join(lines) + "\n"


def table1_frame(train: dict) -> pd.DataFrame:
    """Rows of the Table 1 analogue (CSV)."""
    rows = [{"dataset": k.split("/")[0], "arch": k.split("/")[1],
             **{f: c[f] for f in ("onehot_mean", "onehot_std", "hue_mean", "hue_std", "delta", "ci_low", "ci_high",
                                  "p_value", "verdict", "n_folds", "hue_head_mean")}} for k, c in train.items()]
    return pd.DataFrame(rows).round(6)


def comparison_markdown(title: str, rows: list[dict], note: str) -> str:
    """A one-hot vs hue table: one row per measure, mean ± std over folds, paired delta, CI, p and verdict."""
    lines = [f"# {title}", "", note, "",
             "| measure | one-hot | hue | Δ (hue − one-hot) | 95% CI of Δ | p (paired t) | verdict | folds |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if r.get("paired") is None:
            lines.append(f"| {r['name']} | {r['onehot']} | {r['hue']} | n/a | n/a | n/a | n/a | {r['n']} |")
            continue
        c = r["paired"]
        lines.append(f"| {r['name']} | {r['onehot']} | {r['hue']} | {c['delta']:+.4f} | "
                     f"[{num(c['ci_low'])}, {num(c['ci_high'])}] | {p_text(c['p_value'])} | {c['verdict']} | "
                     f"{c['n_folds']} |")
    return "\n".join(lines) + "\n"


def write_radial_csv(energy_map, out: Path) -> None:
    """The radial energy profile of a mean energy map as DVC plot data."""
    import numpy as np

    from hue.observe import radial_profile

    with shards.atomic_file(out) as tmp:
        pd.DataFrame(radial_profile(np.array(energy_map))).to_csv(tmp, index=False)
