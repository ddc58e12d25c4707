"""The real `dvc repro` on a temporary copy of the repository, with shrunk params."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import copy_repo, run

SHRUNK: dict = {
    "data": {"max_per_class": 30, "run_folds": [0, 1]},
    "extract": {"image_size": 64},  # layer3 at 64 px: a 4x4 grid
    "index": {"n_trees": 5},
    "knn": {"reference_images": 20},
    "train": {"epochs": 1, "image_size": 16, "batch_size": 32},
    "observe": {"n_permutations": 20},
    "interactive": {"area": 4096, "max_per_class": 6, "layers": ["layer3", "layer4"]},
}
SOURCES = ("resnet18-onehot", "resnet18-hue")


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory):
    """One full `dvc repro` shared by the assertions below."""
    repo = copy_repo(tmp_path_factory.mktemp("repo"), SHRUNK)
    run(["dvc", "repro"], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline"], repo)
    return repo


def ran(stdout: str) -> list[str]:
    """Names of the stages a dvc command really ran (not restored from the run cache)."""
    return [line.split("'")[1] for line in stdout.splitlines() if line.startswith("Running stage")]


def test_download_stage_writes_manifest_counts_and_skipped_table(reproduced):
    m = json.loads((reproduced / "metrics/detail/download/digits.json").read_text())
    assert (m["n_images"], m["n_classes"], m["n_skipped"]) == (300, 10, 0)
    frame = pd.read_parquet(reproduced / "data/manifests/digits.parquet")
    assert len(frame) == 300 and sorted(frame["fold"].unique()) == [0, 1, 2, 3, 4]
    assert len(pd.read_parquet(reproduced / "data/manifests/digits-skipped.parquet")) == 0


def test_every_source_is_classified_with_every_descriptor(reproduced):
    for source in SOURCES:
        m = json.loads((reproduced / f"metrics/detail/knn/digits-{source}.json").read_text())
        assert set(m["descriptors"]) == {"pixel", "gap", "gmp", "flat"} and m["source"] == source
        for d in m["descriptors"].values():
            assert 0.1 < d["accuracy"] <= 1 and set(d["accuracy_per_fold"]) == {"0", "1"}
            assert d["recall_at_k"] >= 0.9 and 0 <= d["agreement"] <= 1 and "search_seconds" not in d
        matches = pd.read_parquet(reproduced / f"data/knn/digits/{source}/matches.parquet")
        assert len(matches) == 120 * 16 * 10  # two held-out folds of 60 images, 4x4 pixels, K = 10
    assert json.loads((reproduced / "metrics/timings/knn/digits-resnet18-hue.json").read_text())["descriptors"]
    figure = pd.read_csv(reproduced / "plots/knn/digits-accuracy.csv")
    assert figure["name"].tolist()[:4] == [f"resnet18-hue/{d}" for d in ("pixel", "gap", "gmp", "flat")]


def test_trained_sources_are_extracted_fold_by_fold(reproduced):
    for fold in (0, 1):
        info = json.loads((reproduced / f"data/activations/digits/resnet18-hue/fold{fold}/manifest.json").read_text())
        assert info["fold"] == fold and info["grid"] == [4, 4] and info["node"] == "layer3"
    assert not (reproduced / "data/activations/digits/resnet18-hue/manifest.json").exists()


def test_second_repro_runs_nothing(reproduced):
    out = run(["dvc", "repro"], reproduced).stdout
    assert "Running stage" not in out


def test_headline_metrics_are_few_and_detail_is_plain_output(reproduced):
    train = json.loads((reproduced / "metrics/train.json").read_text())["digits/resnet18"]
    assert set(train) == {"onehot", "hue", "delta", "p_value", "hue_head"}
    knn = json.loads((reproduced / "metrics/knn.json").read_text())
    assert set(knn) == {f"digits/{s}" for s in SOURCES}
    observe = json.loads((reproduced / "metrics/observe.json").read_text())
    assert {"head_error_deg", "hue_label_corr", "at_query_position"} <= set(observe["digits/resnet18-hue"])
    folds = json.loads((reproduced / "metrics/detail/folds.json").read_text())
    assert set(folds["metrics/train.json"]["digits/resnet18"]["delta"]) == {"0", "1"}
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], reproduced).stdout)
    files = {f for rev in shown.values() for f in rev["data"]}
    assert files == {"metrics/train.json", "metrics/knn.json", "metrics/observe.json"}  # nothing else is a metric
    assert "| digits | resnet18 |" in (reproduced / "plots/table1.md").read_text()
    log = pd.read_csv(reproduced / "plots/train/digits-resnet18-hue-fold0.csv")
    assert list(log["epoch"]) == [1] and log[["loss_hue", "grad_ratio", "logit_spread", "log_m"]].notna().all().all()
    curves = pd.read_csv(reproduced / "plots/curves/digits-resnet18.csv")
    assert set(curves["loss"]) == {"onehot", "hue"} and "val_accuracy" in curves


def test_hue_weight_change_reruns_only_the_hue_side(reproduced):
    params = (reproduced / "params.yaml").read_text()
    (reproduced / "params.yaml").write_text(params.replace("hue_weight: 1.0", "hue_weight: 0.5"))
    status = json.loads(run(["dvc", "status", "--json"], reproduced).stdout)
    (reproduced / "params.yaml").write_text(params)
    assert sorted(status) == ["train_hue@digits-resnet18-0", "train_hue@digits-resnet18-1"]
    out = run(["dvc", "exp", "run", "-S", "loss.hue_weight=0.5"], reproduced).stdout
    hue_side = {"train_hue@digits-resnet18-0", "train_hue@digits-resnet18-1", "extract@digits-resnet18-hue",
                "index@digits-resnet18-hue-0", "index@digits-resnet18-hue-1", "knn@digits-resnet18-hue",
                "observe@digits-resnet18-hue"}
    shared = {"figure4@digits", "energy_grid@digits", "compare@digits-resnet18", "curves@digits-resnet18", "aggregate"}
    assert set(ran(out)) == hue_side | shared  # the one-hot branch stays cached
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], reproduced).stdout)
    assert any(k.startswith("digits/resnet18.hue") for k in diff["metrics/train.json"])
    assert not any(k.startswith("digits/resnet18.onehot") for k in diff["metrics/train.json"])
    assert not any("onehot" in k for k in diff.get("metrics/knn.json", {}))
    hue_run = json.loads((reproduced / "metrics/detail/train/digits-resnet18-hue-fold0.json").read_text())
    assert hue_run["hue_weight"] == 0.5
    # the review report of this change: params diff, paired fold statistics and a verdict per headline metric
    proc = run(["hue", "review", "--base", "HEAD", "--out", "review.md"], reproduced)
    report = (reproduced / "review.md").read_text()
    assert "| loss.hue_weight | 1.0 | 0.5 |" in report and "(2 folds)" in report, proc.stdout
    assert "`metrics/train.json:digits/resnet18.onehot` | " in report
    row = next(line for line in report.splitlines() if "`metrics/train.json:digits/resnet18.onehot`" in line)
    assert row.endswith("| unchanged |")
    run(["git", "checkout", "--", "."], reproduced)  # back to the baseline for the tests below
    run(["dvc", "checkout", "-f"], reproduced)


def wait_for_queue(repo, timeout: float = 900) -> None:
    """Poll `dvc queue status` until no experiment is queued or running."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = run(["dvc", "queue", "status"], repo).stdout
        if not any(w in status for w in ("Queued", "Running")):
            return
        time.sleep(5)
    raise AssertionError(f"queue still busy after {timeout} s:\n{status}")


def test_a_queue_of_two_experiments_never_retrains_onehot_and_feeds_the_sweep(reproduced):
    # 0.5 returns to params the test above ran (restored from the run-cache), 2.0 is new; the test
    # above's experiment is removed first (DVC refuses an experiment identical to an existing one)
    run(["dvc", "exp", "remove", "-A"], reproduced)
    run(["dvc", "exp", "run", "--queue", "-S", "loss.hue_weight=0.5,2.0"], reproduced)
    run(["dvc", "queue", "start", "-j", "1"], reproduced)
    wait_for_queue(reproduced)
    status = run(["dvc", "queue", "status"], reproduced).stdout
    names = [line.split()[1] for line in status.splitlines() if line.split()[-1:] in (["Success"], ["Failed"])]
    logs = {name: run(["dvc", "queue", "logs", name], reproduced).stdout for name in names}
    assert len(logs) == 2 and "Failed" not in status, status
    for name, log in logs.items():
        assert "train_onehot" not in " ".join(ran(log)), (name, log)
    trained = sorted(s for log in logs.values() for s in ran(log) if s.startswith("train_hue"))
    assert trained == ["train_hue@digits-resnet18-0", "train_hue@digits-resnet18-1"]  # 2.0 only; 0.5 restored
    run(["hue", "sweep", "--key", "digits/resnet18", "--out", "sweep"], reproduced)
    lines = [line for line in (reproduced / "sweep/sweep.md").read_text().splitlines() if line.startswith("| ")]
    rows = {r[0]: r for r in ([c.strip() for c in line.strip().strip("|").split("|")] for line in lines[1:])}
    queued = [rows[name] for name in names]  # (the table also has the baseline)
    assert sorted(r[1] for r in queued) == ["0.5", "2.0"] and all(r[-2] == "2" for r in queued), lines
    run(["dvc", "exp", "remove", *names], reproduced)


def test_observe_stage_writes_statistics_per_fold_and_figures(reproduced):
    m = json.loads((reproduced / "metrics/detail/observe/digits-resnet18-hue.json").read_text())
    assert set(m["folds"]) == {"0", "1"} and set(m["headline"]["hue_R"]["per_fold"]) == {"0", "1"}
    fold = m["folds"]["0"]
    assert len(fold["match_locations"]["per_class"]) == 10 and "permutation_p" in fold["activation_hue"]["per_class"]["0"]
    assert 0 <= fold["hue_head"]["error_deg"] <= 180 and 0 <= fold["headline"]["at_query_position"] <= 1
    for name in ("energy", "matches", "polar", "conditional"):
        assert (reproduced / f"plots/observe/digits-resnet18-hue-{name}.png").stat().st_size > 1000
    assert (reproduced / "plots/observe/digits-energy-grid.png").exists()


def test_compare_stage_pairs_onehot_and_hue_over_folds(reproduced):
    table = (reproduced / "plots/observe/digits-resnet18-trained.md").read_text()
    assert "| kNN accuracy, pixel |" in table and "| share of matches at the query's own position |" in table
    assert "hue head θ′ mean angular error" in table and "(hue − one-hot)" in table
    for name in ("polar", "matches"):
        assert (reproduced / f"plots/observe/digits-resnet18-trained-{name}.png").stat().st_size > 5000


def test_interactive_stage_writes_detail_and_the_paper_table(reproduced):
    m = json.loads((reproduced / "metrics/detail/interactive/digits-resnet18.json").read_text())
    assert set(m["configs"]) == {"orig_avg", "orig_max", "next_p1", "next_p2", "last_p1", "last_p2"}
    cell = m["configs"]["last_p2"]["layer4"]
    assert set(cell["knn_per_fold"]) == {"0", "1"} and 0 <= cell["linear"] <= 1 and m["n_capped"] == 0
    table = (reproduced / "plots/interactive/digits-resnet18.md").read_text()
    assert "| ORIG avg |" in table and "| last, p=2 |" in table and "| configuration | layer3 | layer4 |" in table


def test_a_pretrained_source_with_the_interactive_resize(reproduced):
    out = run(["dvc", "exp", "run", "-S", "extract.weights=[random]", "-S", "observe.compare=[]", "-S",
               "extract.resize=interactive", "-S", "extract.area=4096", "extract@digits-resnet18-random"],
              reproduced).stdout
    assert ran(out) == ["weights@digits-resnet18-random", "extract@digits-resnet18-random"]
    card = json.loads((reproduced / "data/models/digits/resnet18-random/card.json").read_text())
    assert card["id"] == "random:seed=0" and card["kind"] == "pretrained"
    info = json.loads((reproduced / "data/activations/digits/resnet18-random/manifest.json").read_text())
    assert info["transform"] == {**info["transform"], "resize": "interactive", "size": [64, 64]}
    assert info["fold"] is None and info["grid"] == [4, 4]  # one store serves every fold
    run(["git", "checkout", "--", "."], reproduced)
    run(["dvc", "checkout", "-f"], reproduced)


def test_a_reviewer_pulls_outputs_from_a_remote_instead_of_recomputing(reproduced, tmp_path):
    remote = tmp_path / "remote"
    run(["dvc", "remote", "add", "-d", "shared", str(remote)], reproduced)
    run(["dvc", "push"], reproduced)
    run(["git", "add", ".dvc/config"], reproduced)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "remote"], reproduced)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(reproduced), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    status = run(["dvc", "status"], clone).stdout
    assert "Data and pipelines are up to date" in status, status
    assert (clone / "data/models/digits/resnet18-hue/fold0.pt").exists()
    assert "Running stage" not in run(["dvc", "repro"], clone).stdout


def test_offline_registry_dataset_fails_in_one_line(reproduced):
    proc = run(["python", "stages/download.py", "dataset", "dtd"], reproduced, check=False)
    assert proc.returncode == 1
    err = proc.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert "dtd: could not download https://www.robots.ox.ac.uk/~vgg/data/dtd/" in err and "place it under" in err


def test_bad_param_fails_in_one_line(reproduced):
    params = (reproduced / "params.yaml").read_text()
    try:
        (reproduced / "params.yaml").write_text(params.replace("folds: 5", "folds: 1"))
        proc = run(["python", "stages/download.py", "dataset", "digits"], reproduced, check=False)
    finally:
        (reproduced / "params.yaml").write_text(params)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: params.yaml: data.folds = 1 is invalid; allowed: an integer >= 2"


def test_local_folder_dataset_reruns_when_content_changes(reproduced, tmp_path):
    from tests.conftest import make_image

    folder = tmp_path / "hcp"
    for c in ("f", "m"):
        for i in range(5):
            make_image(folder / c / f"{i}.png", seed=i + (9 if c == "m" else 0))
    sets = ["-S", f"++data.folders.hcp_sex={folder}", "-S", "data.datasets=[digits,hcp_sex]"]
    out = run(["dvc", "exp", "run", *sets, "download@hcp_sex"], reproduced).stdout
    assert "snapshot@hcp_sex" in out and "download@hcp_sex" in out
    make_image(folder / "m" / "5.png", seed=77)
    out = run(["dvc", "exp", "run", *sets, "download@hcp_sex"], reproduced).stdout
    assert "Running stage 'download@hcp_sex'" in out
