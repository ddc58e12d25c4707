"""One-hot vs hue trained comparison: paired rows, the Markdown table and the side-by-side figures."""

import numpy as np
import pytest

from hue import compare, shards, stats


def test_row_pairs_only_folds_finite_on_both_sides():
    r = compare.row("m", {"0": 0.1, "1": 0.2, "2": None, "3": 0.4}, {"0": 0.3, "1": 0.4, "2": 0.5, "3": float("nan")})
    assert r["n"] == 2 and r["paired"]["delta"] == pytest.approx(0.2) and r["paired"]["verdict"] == stats.CHANGED
    assert r["onehot"].startswith("0.2333 ± ") and r["hue"] == "0.4000 ± 0.1000"
    empty = compare.row("m", {"0": None}, {"0": None})
    assert empty["paired"] is None and empty["onehot"] == "n/a"


def detail(offset):
    keys = [k for k, _ in compare.OBSERVE_ROWS]
    return {"headline": {k: {"mean": 0.5 + offset, "std": 0.0, "per_fold": {"0": 0.5 + offset, "1": 0.6 + offset}}
                         for k in keys}}


def maps(grid=(3, 3), n_classes=3):
    angles = {str(c): [0.3 * c, 0.5] for c in range(n_classes)}
    return {"grid": list(grid), "heatmap_same": np.eye(3).tolist(), "heatmap_different": np.ones(grid).tolist(),
            "heatmap_same_by_class": [np.eye(3).tolist()] * n_classes, "class_angles": angles,
            "hue_class_angles": angles, "head_class_angles": angles, "hue_fold": 0}


def test_run_writes_the_paired_table_and_both_figures(tmp_path):
    paths = {}
    for model, offset in (("onehot", 0.0), ("hue", 0.1)):
        shards.write_json(tmp_path / f"obs-{model}.json", detail(offset))
        shards.write_json(tmp_path / f"knn-{model}.json", {"descriptors": {
            "pixel": {"accuracy_per_fold": {"0": 0.9, "1": 0.8 + offset}}}})
        shards.write_json(tmp_path / f"maps-{model}.json", maps())
        paths[model] = model
    out = tmp_path / "out"
    table = compare.run("d", "resnet18", {m: tmp_path / f"obs-{m}.json" for m in paths},
                        {m: tmp_path / f"knn-{m}.json" for m in paths}, {m: tmp_path / f"maps-{m}.json" for m in paths},
                        "circle", 0, out / "t.md", out / "polar.png", out / "matches.png")
    assert table[0]["name"] == "kNN accuracy, pixel" and len(table) == 1 + len(compare.OBSERVE_ROWS)
    md = (out / "t.md").read_text()
    assert "| kNN accuracy, pixel | 0.8500 ± 0.0707 | 0.9000 ± 0.0000 | +0.0500 |" in md
    assert "| share of matches at the query's own position | 0.5500 ± 0.0707 | 0.6500 ± 0.0707 | +0.1000 |" in md
    assert "| changed | 2 |" in md and "held out" in md
    assert (out / "polar.png").stat().st_size > 5000 and (out / "matches.png").stat().st_size > 5000
