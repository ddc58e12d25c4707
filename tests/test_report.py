"""Aggregate: paired statistics, the exact input list, Table 1 and figures."""

import json

import pytest
from scipy.stats import ttest_rel

from hue import report, shards


def planted(tmp_path, onehot, hue):
    runs = {}
    for loss, accs in (("onehot", onehot), ("hue", hue)):
        for fold, acc in enumerate(accs):
            path = tmp_path / f"{loss}{fold}.json"
            shards.write_json(path, {"test_accuracy": acc, "test_accuracy_best_val": acc,
                                     "hue_test_accuracy": None if loss == "onehot" else 0.5})
            runs[("d", "resnet18", loss, fold)] = path
    knn = tmp_path / "knn.json"
    shards.write_json(knn, {"descriptors": {"pixel": {"accuracy": 0.9}, "gap": {"accuracy": 0.8}}})
    return runs, {("d", "resnet18"): knn}


def test_aggregate_pairs_folds_and_writes_table_and_figure(tmp_path):
    onehot, hue = [0.50, 0.60, 0.55, 0.52, 0.58], [0.56, 0.63, 0.61, 0.55, 0.60]
    runs, knns = planted(tmp_path, onehot, hue)
    out = tmp_path / "out"
    summary = report.aggregate(runs, knns, out / "s.json", out / "t.md", out / "t.csv", out / "f.png")
    row = summary["train"]["d/resnet18"]
    assert row["onehot_mean"] == pytest.approx(0.55) and row["hue_mean"] == pytest.approx(0.59)
    assert row["delta"] == pytest.approx(0.04) and row["n_folds"] == 5
    assert row["p_value"] == pytest.approx(ttest_rel(hue, onehot).pvalue)
    assert summary["knn"]["d/resnet18"] == {"pixel": 0.9, "gap": 0.8}
    md = (out / "t.md").read_text()
    assert "| d | resnet18 | 0.5500 ± " in md and "+0.0400" in md and "| d/resnet18 | 0.9000 | 0.8000 |" in md
    assert json.loads((out / "s.json").read_text()) == summary
    assert (out / "f.png").stat().st_size > 1000


def test_missing_run_is_named(tmp_path):
    runs, knns = planted(tmp_path, [0.5, 0.6], [0.5, 0.7])
    runs[("d", "resnet18", "hue", 7)] = tmp_path / "nope.json"
    with pytest.raises(report.ReportError, match="nope.json is missing \\(training metrics of d/resnet18/hue/7\\)"):
        report.aggregate(runs, knns, tmp_path / "s.json", tmp_path / "t.md", tmp_path / "t.csv", tmp_path / "f.png")


def test_paired_test_edge_cases():
    assert report.paired_test([0.5], [0.6]) is None
    assert report.paired_test([0.5, 0.6], [0.5, 0.6]) == 1.0
    assert report.paired_test([0.5, 0.6], [0.6, 0.7]) == 0.0
