"""`hue review` on a tiny git + DVC repo: changed, within fold noise, added, removed, a base without metrics."""

import json
import subprocess

import pytest
from typer.testing import CliRunner

from hue import review
from hue.app import app
from tests.conftest import make_image, run


def write(repo, rel, obj):
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj) if not isinstance(obj, str) else obj)


def commit(repo, message):
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], repo)


def headline(repo, train, knn, folds):
    write(repo, "metrics/train.json", train)
    write(repo, "metrics/knn.json", knn)
    write(repo, "metrics/detail/folds.json", folds)


BASE_HUE = [0.50, 0.60, 0.55, 0.52, 0.58]


def per_fold(values):
    return {str(i): v for i, v in enumerate(values)}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """Commit 1: params only (no metrics). 2: baseline metrics. 3: hue_weight changed, metrics moved."""
    repo = tmp_path_factory.mktemp("rev")
    run(["git", "init", "-q"], repo)
    run(["dvc", "init", "-q"], repo)
    write(repo, "params.yaml", "loss:\n  hue_weight: 1.0\n")
    write(repo, "dvc.yaml", "stages:\n  s:\n    cmd: echo\n    params: [loss.hue_weight]\n")
    commit(repo, "no metrics yet")
    make_image(repo / "plots" / "fig.png", size=(30, 20), seed=1)
    make_image(repo / "plots" / "same.png", size=(30, 20), seed=2)
    headline(repo, {"d/r": {"hue": sum(BASE_HUE) / 5, "p_value": 0.5, "old_only": 1.0}},
             {"d/r-hue": {"pixel": 0.9, "gap": 0.8}},
             {"metrics/train.json": {"d/r": {"hue": per_fold(BASE_HUE)}},
              "metrics/knn.json": {"d/r-hue": {"pixel": per_fold([0.9] * 5), "gap": per_fold([0.8, 0.7, 0.9, 0.8, 0.8])}}})
    write(repo, "metrics/timings/x.json", {"seconds": 3.0})
    commit(repo, "baseline")
    write(repo, "params.yaml", "loss:\n  hue_weight: 0.5\n")
    new_hue = [v + 0.05 + 0.002 * i for i, v in enumerate(BASE_HUE)]  # every fold up by ~0.05: a change
    new_gap = [0.81, 0.69, 0.91, 0.79, 0.8 + 1e-3]  # tiny, mixed-sign moves: fold noise
    headline(repo, {"d/r": {"hue": sum(new_hue) / 5, "p_value": 0.01, "new_only": 2.0}},
             {"d/r-hue": {"pixel": 0.9, "gap": sum(new_gap) / 5}},
             {"metrics/train.json": {"d/r": {"hue": per_fold(new_hue)}},
              "metrics/knn.json": {"d/r-hue": {"pixel": per_fold([0.9] * 5), "gap": per_fold(new_gap)}}})
    write(repo, "metrics/timings/x.json", {"seconds": 9.0})  # timings never count as a metric
    make_image(repo / "plots" / "fig.png", size=(30, 20), seed=5)
    commit(repo, "hue_weight 0.5")
    return repo


def rows_of(repo, monkeypatch, base, new=None):
    monkeypatch.chdir(repo)
    out = repo / "out" / "review.md"
    rows = {r["metric"]: r for r in review.review(base, new, out)}
    return rows, out.read_text()


def test_changed_noise_added_removed_and_unchanged(repo, monkeypatch):
    rows, md = rows_of(repo, monkeypatch, "HEAD~1")
    hue = rows["metrics/train.json:d/r.hue"]
    assert hue["verdict"] == "changed" and hue["paired"]["n_folds"] == 5 and hue["paired"]["ci_low"] > 0
    assert hue["delta"] == pytest.approx(0.054)
    assert rows["metrics/knn.json:d/r-hue.gap"]["verdict"] == "within fold noise"
    assert rows["metrics/knn.json:d/r-hue.pixel"]["verdict"] == "unchanged"
    assert rows["metrics/train.json:d/r.new_only"]["verdict"] == "added"
    assert rows["metrics/train.json:d/r.old_only"]["verdict"] == "removed"
    assert rows["metrics/train.json:d/r.p_value"]["verdict"] == "changed (no folds to judge noise)"
    assert not any("timings" in k for k in rows)
    assert "| loss.hue_weight | 1.0 | 0.5 |" in md  # from dvc params diff
    assert "`metrics/train.json:d/r.hue`" in md and "[+0.0" in md and "(5 folds)" in md
    assert "### `plots/fig.png`" in md and "same.png" not in md  # only the figure that changed
    assert "![base](review/plots__fig.base.png)" in md
    assert (repo / "out" / "review" / "plots__fig.new.png").read_bytes() == (repo / "plots" / "fig.png").read_bytes()


def test_base_without_metrics_lists_everything_as_added(repo, monkeypatch):
    rows, md = rows_of(repo, monkeypatch, "HEAD~2", "HEAD")
    assert {r["verdict"] for r in rows.values()} == {"added"} and "has no headline metrics" in md


def test_same_revision_is_all_unchanged(repo, monkeypatch):
    rows, md = rows_of(repo, monkeypatch, "HEAD")
    assert {r["verdict"] for r in rows.values()} == {"unchanged"} and "No param changed." in md
    assert "No figure changed." in md


def test_unknown_base_fails_in_one_line(repo, monkeypatch):
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(app, ["review", "--base", "nope", "--out", "r.md"])
    assert result.exit_code == 1
    assert "'nope' is neither a git revision nor a DVC experiment name" in result.output


def test_experiment_names_resolve(repo, monkeypatch):
    monkeypatch.chdir(repo)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    run(["git", "update-ref", "refs/exps/ab/cdef/lucky-gnat", sha], repo)
    assert review.resolve("lucky-gnat").rev == sha


def test_cli_review_writes_the_report(repo, monkeypatch):
    monkeypatch.chdir(repo)
    result = CliRunner().invoke(app, ["review", "--base", "HEAD~1", "--out", "cli.md"])
    assert result.exit_code == 0 and "changed beyond fold noise" in result.output
    assert (repo / "cli.md").read_text().startswith("# hue review: workspace vs HEAD~1")
