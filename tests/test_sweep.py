"""The sweep report on a fixture of `dvc exp show --json`: a good grid, a failed experiment, missing folds."""

import json

from hue import sweep

KEY = "d/resnet18"


def exp_entry(name, rev, params, state="success", error=None):
    return {"name": name, "executor": {"state": state, "local": {"returncode": 0 if state == "success" else 255}},
            "revs": [{"rev": rev, "name": name, "error": error, "experiments": None,
                      "data": {"params": {"params.yaml": {"data": params}},
                               # a failed experiment's metrics in exp show are its parent's: never read
                               "metrics": {"metrics/train.json": {"data": {KEY: {"hue": 0.99}}}}}}]}


def params(w, scale=None, labels="circle", form="softmax"):
    return {"data": {"run_folds": [0, 1, 2]}, "loss": {"hue_weight": w, "distance_scale": scale, "labels": labels,
                                                       "form": form}}


def fixture():
    shown = [{"rev": "workspace", "data": {}},
             {"rev": "base000", "name": "main", "data": {"params": {"params.yaml": {"data": params(1.0)}}},
              "experiments": [exp_entry("big-gain", "rev111", params(10.0, 1.0)),
                              exp_entry("two-folds", "rev222", params(0.1, 1.0, "uniform")),
                              exp_entry("broken", "rev333", params(1.0, 0.25, form="l2"), "failed",
                                        {"msg": "Experiment run failed", "type": ""})]}]
    onehot = {"0": 0.50, "1": 0.60, "2": 0.55}
    results = [("base000", {"0": 0.51, "1": 0.59, "2": 0.56}), ("rev111", {"0": 0.60, "1": 0.70, "2": 0.66}),
               ("rev222", {"0": 0.52, "1": 0.61})]  # rev222 lost fold 2
    store = {}
    for rev, hue in results:
        diagnostics = {f: {"final_grad_ratio": 0.01 if rev != "rev111" else 0.5, "final_loss_hue": 2.30,
                           "log_m": 2.302585, "distance_scale": 20.0 if rev == "base000" else 1.0} for f in hue}
        folds = {"metrics/train.json": {KEY: {"onehot": onehot, "hue": hue, "hue_head": {f: 0.3 for f in hue}}},
                 "diagnostics": {KEY: diagnostics}}
        store[(rev, "metrics/detail/folds.json")] = json.dumps(folds).encode()
    return shown, lambda rev, path: store.get((rev, path))


def test_report_rows_verdicts_notes_and_figures(tmp_path):
    shown, read = fixture()
    experiments = {e.name: e for e in sweep.report(shown, read, KEY, tmp_path)}
    assert set(experiments) == {"main", "big-gain", "two-folds", "broken"}
    assert experiments["big-gain"].paired["verdict"] == "changed" and experiments["big-gain"].grad_ratio == 0.5
    assert experiments["main"].paired["verdict"] == "within fold noise" and experiments["main"].scale == 20.0
    assert experiments["two-folds"].paired["n_folds"] == 2 and "missing folds ['2']" in experiments["two-folds"].note
    assert experiments["broken"].paired is None and experiments["broken"].note.startswith("failed")
    md = (tmp_path / "sweep.md").read_text()
    assert "| loss.distance_scale | loss.form | loss.hue_weight | loss.labels |" in md.replace("experiment | ", "")
    assert "| broken | 0.25 | l2 | 1.0 | circle | – | – | – | – | – |" in md  # reported, with no numbers
    row = next(line for line in md.splitlines() if line.startswith("| big-gain |"))
    assert "+0.1033 [" in row and "| changed |" in row and "| 0.500 |" in row
    assert "missing folds" in md and "(exp show's metrics for it are its parent's" in md
    for name in ("delta_vs_scale.png", "delta_vs_weight.png", "delta_by_labels.png"):
        assert (tmp_path / name).stat().st_size > 3000 and f"({name})" in md


def test_entries_read_baseline_and_experiments():
    shown, _ = fixture()
    rows = sweep.entries(shown)
    assert [(n, s) for n, _, s, _ in rows] == [("main", "baseline"), ("big-gain", "success"), ("two-folds", "success"),
                                               ("broken", "failed")]
    assert rows[1][3]["loss.hue_weight"] == 10.0 and rows[1][3]["data.run_folds"] == [0, 1, 2]


def test_differing_params_only():
    a = sweep.Experiment("a", "r", "success", {"x": 1, "y": 2})
    b = sweep.Experiment("b", "r", "success", {"x": 1, "y": 3})
    assert sweep.differing([a, b]) == ["y"]


def test_queued_and_running_experiments_are_listed_without_numbers(tmp_path):
    shown = [{"rev": "b", "name": "main", "data": {}, "experiments": [
        exp_entry("waiting", "q1", params(2.0), "queued"), exp_entry("busy", "q2", params(3.0), "running")]}]
    rows = {e.name: e for e in sweep.report(shown, lambda rev, path: None, KEY, tmp_path)}
    assert rows["waiting"].note.startswith("queued") and rows["busy"].note.startswith("running")
    assert rows["main"].note.startswith("no per-fold training results")


def test_commits_without_results_for_the_key_are_dropped_when_others_have_them(tmp_path):
    shown, read = fixture()
    shown.append({"rev": "other99", "name": "other", "data": {"params": {"params.yaml": {"data": params(1.0)}}}})
    names = {e.name for e in sweep.report(shown, read, KEY, tmp_path)}
    assert "other" not in names and {"main", "big-gain", "broken"} <= names
