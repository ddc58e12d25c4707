"""The real `dvc repro` on a temporary copy of the repository, with shrunk params."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import copy_repo, run

SHRUNK: dict = {
    "data": {"max_per_class": 40, "run_folds": [0, 1]},
    "extract": {"image_size": 64},
    "index": {"n_trees": 5},
    "knn": {"reference_images": 20},
    "train": {"epochs": 1, "image_size": 16, "batch_size": 32},
    "observe": {"n_permutations": 20},
    "interactive": {"area": 4096, "max_per_class": 6, "layers": ["layer3", "layer4"]},
}


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


def test_download_stage_writes_manifest_and_metrics(reproduced):
    m = json.loads((reproduced / "metrics/download/digits.json").read_text())
    assert (m["n_images"], m["n_classes"], m["n_skipped"]) == (400, 10, 0)
    frame = pd.read_parquet(reproduced / "data/manifests/digits.parquet")
    assert len(frame) == 400 and sorted(frame["fold"].unique()) == [0, 1, 2, 3, 4]


def test_knn_stage_reports_every_descriptor_with_recall(reproduced):
    m = json.loads((reproduced / "metrics/knn/digits-resnet18.json").read_text())
    assert set(m["descriptors"]) == {"pixel", "gap", "gmp", "flat"}
    for d in m["descriptors"].values():
        assert 0.5 < d["accuracy"] <= 1 and set(d["accuracy_per_fold"]) == {"0", "1"}
        assert d["recall_at_k"] >= 0.9 and 0 <= d["agreement"] <= 1
    matches = pd.read_parquet(reproduced / "data/knn/digits/resnet18/matches.parquet")
    assert len(matches) == 160 * 4 * 10  # two held-out folds of 80 images, 2x2 pixels, K = 10
    assert (reproduced / "plots/knn/digits-accuracy.png").stat().st_size > 1000
    figure = pd.read_csv(reproduced / "plots/knn/digits-accuracy.csv")
    assert figure["descriptor"].tolist() == ["pixel", "gap", "gmp", "flat"]


def test_second_repro_runs_nothing(reproduced):
    out = run(["dvc", "repro"], reproduced).stdout
    assert "Running stage" not in out


def test_aggregate_writes_table1_with_paired_comparison(reproduced):
    summary = json.loads((reproduced / "metrics/summary.json").read_text())
    row = summary["train"]["digits/resnet18"]
    assert row["n_folds"] == 2 and set(row["onehot_per_fold"]) == set(row["hue_per_fold"]) == {"0", "1"}
    assert "p_value" in row and "delta" in row and set(summary["knn"]["digits/resnet18"]) == {"pixel", "gap", "gmp", "flat"}
    assert "| digits | resnet18 |" in (reproduced / "plots/table1.md").read_text()
    log = pd.read_csv(reproduced / "plots/train/digits-resnet18-hue-fold0.csv")
    assert list(log["epoch"]) == [1] and log["loss_hue"].notna().all()


def test_hue_weight_change_reruns_only_train_hue_and_aggregate(reproduced):
    out = run(["dvc", "exp", "run", "-S", "loss.hue_weight=0.5"], reproduced).stdout
    assert sorted(ran(out)) == ["aggregate", "train_hue@digits-resnet18-0", "train_hue@digits-resnet18-1"]
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], reproduced).stdout)
    changed = diff["metrics/summary.json"]
    assert any(k.startswith("train.digits/resnet18.hue") for k in changed)
    assert not any(k.startswith("train.digits/resnet18.onehot") for k in changed)
    hue_run = json.loads((reproduced / "metrics/train/digits-resnet18-hue-fold0.json").read_text())
    assert hue_run["hue_weight"] == 0.5
    run(["git", "checkout", "--", "."], reproduced)  # back to the baseline for the tests below
    run(["dvc", "checkout", "-f"], reproduced)


def test_observe_stage_writes_statistics_and_figures(reproduced):
    m = json.loads((reproduced / "metrics/observe/digits-resnet18.json").read_text())
    assert set(m) >= {"energy", "match_locations", "conditional", "activation_hue"}
    assert len(m["match_locations"]["per_class"]) == 10 and "permutation_p" in m["match_locations"]["per_class"]["0"]
    assert 0 <= m["activation_hue"]["pooled"]["R"] <= 1
    for name in ("energy", "matches", "polar", "conditional"):
        assert (reproduced / f"plots/observe/digits-resnet18-{name}.png").stat().st_size > 1000
    assert (reproduced / "plots/observe/digits-energy-grid.png").exists()


def test_interactive_stage_writes_metrics_and_the_paper_table(reproduced):
    m = json.loads((reproduced / "metrics/interactive/digits-resnet18.json").read_text())
    assert set(m["configs"]) == {"orig_avg", "orig_max", "next_p1", "next_p2", "last_p1", "last_p2"}
    cell = m["configs"]["last_p2"]["layer4"]
    assert set(cell["knn_per_fold"]) == {"0", "1"} and 0 <= cell["linear"] <= 1
    table = (reproduced / "plots/interactive/digits-resnet18.md").read_text()
    assert "| ORIG avg |" in table and "| last, p=2 |" in table and "| configuration | layer3 | layer4 |" in table


def test_interactive_resize_in_the_main_extract(reproduced):
    out = run(["dvc", "exp", "run", "-S", "extract.resize=interactive", "-S", "extract.area=4096",
               "knn@digits-resnet18"], reproduced).stdout
    assert "extract@digits-resnet18" in " ".join(ran(out))
    info = json.loads((reproduced / "data/activations/digits/resnet18/manifest.json").read_text())
    assert info["transform"] == {**info["transform"], "resize": "interactive", "size": [64, 64]}
    run(["git", "checkout", "--", "."], reproduced)
    run(["dvc", "checkout", "-f"], reproduced)


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
