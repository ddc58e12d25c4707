"""Aggregate: Table 1 paired over folds, headline metrics and their per-fold mirror, the exact input list."""

import json

import pytest
from scipy.stats import ttest_rel

from hue import aggregate, report, shards


def planted(tmp_path, onehot, hue):
    runs = {}
    for loss, accs in (("onehot", onehot), ("hue", hue)):
        for fold, acc in enumerate(accs):
            path = tmp_path / f"{loss}{fold}.json"
            shards.write_json(path, {"test_accuracy": acc, "test_accuracy_best_val": acc,
                                     "hue_test_accuracy": None if loss == "onehot" else 0.5,
                                     "final_grad_ratio": None if loss == "onehot" else 0.1 * (fold + 1)})
            runs[("d", "resnet18", loss, fold)] = path
    knn = tmp_path / "knn.json"
    shards.write_json(knn, {"descriptors": {"pixel": {"accuracy": 0.9, "accuracy_per_fold": {"0": 0.8, "1": 1.0}},
                                            "gap": {"accuracy": 0.8, "accuracy_per_fold": {"0": 0.7, "1": 0.9}}}})
    obs = tmp_path / "obs.json"
    headline = {k: {"mean": None, "std": None, "per_fold": {"0": None, "1": None}}
                for k in ("at_query_position", "match_R", "tangential_radial", "hue_R", "hue_label_corr",
                          "head_error_deg", "energy_asymmetry")}
    headline["hue_R"] = {"mean": 0.3, "std": 0.1, "per_fold": {"0": 0.2, "1": 0.4}}
    shards.write_json(obs, {"headline": headline})
    return runs, {("d", "resnet18-hue"): knn}, {("d", "resnet18-hue"): obs}


def outputs(tmp_path):
    o = tmp_path / "out"
    return aggregate.Outputs(o / "train.json", o / "knn.json", o / "observe.json", o / "folds.json", o / "t.md",
                             o / "t.csv", o / "f.png")


def test_aggregate_pairs_folds_and_writes_headline_metrics_table_and_figure(tmp_path):
    onehot, hue = [0.50, 0.60, 0.55, 0.52, 0.58], [0.56, 0.63, 0.61, 0.55, 0.60]
    out = outputs(tmp_path)
    summary = aggregate.run(*planted(tmp_path, onehot, hue), out)
    row = summary["train"]["d/resnet18"]
    assert row["onehot"] == pytest.approx(0.55) and row["hue"] == pytest.approx(0.59)
    assert row["delta"] == pytest.approx(0.04) and row["hue_head"] == 0.5
    assert row["p_value"] == pytest.approx(ttest_rel(hue, onehot).pvalue)
    assert set(row) == {"onehot", "hue", "delta", "p_value", "hue_head"}  # headline only
    assert summary["knn"]["d/resnet18-hue"] == {"pixel": 0.9, "gap": 0.8}
    assert summary["observe"]["d/resnet18-hue"] == {"hue_R": 0.3}  # only the numbers that exist for a source
    folds = json.loads(out.folds.read_text())
    assert folds[str(out.train)]["d/resnet18"]["delta"]["2"] == pytest.approx(0.06)
    assert folds[str(out.knn)]["d/resnet18-hue"]["pixel"] == {"0": 0.8, "1": 1.0}
    assert folds[str(out.observe)]["d/resnet18-hue"]["hue_R"] == {"0": 0.2, "1": 0.4}
    # the hue runs' diagnostics, for `hue sweep` (the per-run detail files are not in git)
    assert folds["diagnostics"]["d/resnet18"]["1"]["final_grad_ratio"] == pytest.approx(0.2)
    md = out.table_md.read_text()
    assert "| d | resnet18 | 0.5500 ± " in md and "+0.0400" in md and "| changed |" in md
    assert "| d/resnet18-hue | 0.9000 | 0.8000 |" in md
    assert json.loads(out.train.read_text()) == summary["train"]
    assert out.figure.stat().st_size > 1000


def test_missing_run_is_named(tmp_path):
    runs, knns, obs = planted(tmp_path, [0.5, 0.6], [0.5, 0.7])
    runs[("d", "resnet18", "hue", 7)] = tmp_path / "nope.json"
    with pytest.raises(report.ReportError, match="nope.json is missing \\(training detail of d/resnet18/hue/7\\)"):
        aggregate.run(runs, knns, obs, outputs(tmp_path))


def test_curves_average_folds_per_loss(tmp_path):
    import pandas as pd

    logs = {}
    for loss in ("onehot", "hue"):
        logs[loss] = {}
        for fold in (0, 1):
            path = tmp_path / f"{loss}{fold}.csv"
            pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.1 * (fold + 1), 0.2 * (fold + 1)],
                          "loss_ce": [2.0, 1.0], "loss_hue": [float("nan")] * 2 if loss == "onehot" else [2.3, 2.2],
                          "log_m": 2.3}).to_csv(path, index=False)
            logs[loss][fold] = path
    aggregate.curves("t", logs, tmp_path / "c.csv", tmp_path / "c.png")
    c = pd.read_csv(tmp_path / "c.csv")
    assert c["loss"].tolist() == ["onehot", "onehot", "hue", "hue"] and c["epoch"].tolist() == [1, 2, 1, 2]
    assert c["val_accuracy"].tolist()[:2] == pytest.approx([0.15, 0.3]) and c["loss_hue"].isna().tolist()[:2] == [1, 1]
    assert c["loss_hue"].tolist()[2:] == pytest.approx([2.3, 2.2]) and (tmp_path / "c.png").stat().st_size > 1000
    logs["hue"][1] = tmp_path / "gone.csv"
    with pytest.raises(report.ReportError, match="gone.csv is missing"):
        aggregate.curves("t", logs, tmp_path / "c.csv", tmp_path / "c.png")
