"""Multi-process training: torchrun + DDP on the CPU (gloo, 2 processes) against one process, same global batch."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from hue import config, datasets, distributed, manifest, paths, shards, train
from tests.conftest import REPO, interrupt_on_call, make_image, run

# batches of 7 and 4 images: uneven slices. lr 1e-5 keeps Adam in its linear regime: at the default lr the
# first, sign-like Adam steps amplify rounding (one process on 1 vs 2 threads already drifts apart by 3%
# after 2 epochs here), which would hide a real difference between 1 and 2 processes.
TRAIN = {"epochs": 2, "batch_size": 7, "image_size": 16, "val_fraction": 0.25, "lr": 1e-5}


@pytest.fixture(autouse=True, scope="module")
def cpu_only():
    """These are gloo-on-CPU tests: hide any GPU from this process and from the ones it starts."""
    patch = pytest.MonkeyPatch()
    patch.setenv("CUDA_VISIBLE_DEVICES", "")
    patch.setattr(torch.cuda, "is_available", lambda: False)
    yield
    patch.undo()


def stage_dir(tmp, devices, images):
    """A working directory the train stage can run in: params.yaml and the manifest."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["data"].update({"datasets": ["t"], "folders": {"t": str(images)}, "folds": 2, "run_folds": [0, 1]})
    raw["train"].update({**TRAIN, "devices": devices})
    tmp.mkdir()
    (tmp / "params.yaml").write_text(yaml.safe_dump(raw))
    data = config.build("data", raw["data"])
    frame, _, _ = manifest.build("t", datasets.read_image_folder(images), data, images)
    shards.write_parquet(tmp / paths.manifest("t"), frame)
    return tmp


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("imgs")
    for c, base in (("a", 0), ("b", 100), ("c", 200)):
        for i in range(10):
            make_image(root / c / f"{i}.png", size=(20, 20), seed=base + i)
    return root


@pytest.fixture(scope="module")
def single(tmp_path_factory, images):
    """The reference: the train stage in one process."""
    one = stage_dir(tmp_path_factory.mktemp("single") / "one", 1, images)
    run(["python", str(REPO / "stages/train.py"), "hue", "t", "resnet18", "0"], one)
    return one


def outputs_of(tmp):
    log = pd.read_csv(tmp / paths.train_log("t", "resnet18", "hue", 0))
    detail = json.loads((tmp / paths.train_detail("t", "resnet18", "hue", 0)).read_text())
    state = torch.load(tmp / paths.checkpoint("t", "resnet18", "hue", 0), weights_only=True)
    return log, detail, state


def test_two_gloo_processes_train_what_one_process_trains(tmp_path, images, single):
    one = single
    two = stage_dir(tmp_path / "two", 2, images)
    proc = run(["python", str(REPO / "stages/train.py"), "hue", "t", "resnet18", "0"], two)  # relaunches under torchrun
    timings = json.loads((two / paths.timings("train", "t-resnet18-hue-fold0")).read_text())
    assert timings["devices"] == 2, proc.stderr
    (log1, d1, s1), (log2, d2, s2) = outputs_of(one), outputs_of(two)
    # same data order and crops, slices of every global batch, synchronised BatchNorm: equal up to float rounding
    for col in ("loss_ce", "loss_hue", "loss_total", "train_accuracy", "val_accuracy", "test_accuracy"):
        assert log2[col].to_numpy() == pytest.approx(log1[col].to_numpy(), rel=1e-4, abs=1e-6), col
    assert d2["test_accuracy"] == d1["test_accuracy"] and d2["n_train"] == d1["n_train"]
    # Adam moves a weight by at most about lr per step whatever its gradient, so a rounding-level gradient that
    # flips sign can separate two runs by up to 2 lr per step, never more (2 epochs x 2 steps here)
    bound = 2 * TRAIN["lr"] * 4
    for name, w1 in s1["model"].items():
        if w1.is_floating_point():
            assert (s2["model"][name] - w1).abs().max() <= bound * 1.5, name
    assert torch.equal(s1["test_index"], s2["test_index"])  # every held-out image predicted once, in order
    assert np.allclose(s1["test_theta"], s2["test_theta"], atol=1e-3)
    assert not (two / paths.resume_state("t", "resnet18", "hue", 0)).exists()  # one checkpoint, by rank 0


def test_every_step_sees_the_global_batch_split_across_ranks(tmp_path, images):
    one = stage_dir(tmp_path / "one", 1, images)
    two = stage_dir(tmp_path / "two", 2, images)
    run(["python", str(REPO / "tests/ddp_probe.py"), str(one), str(tmp_path / "one")], REPO)
    run(["python", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "tests/ddp_probe.py"), str(two), str(tmp_path / "two")], REPO)
    single = json.loads((tmp_path / "one.0.json").read_text())
    ranks = [json.loads((tmp_path / f"two.{r}.json").read_text()) for r in (0, 1)]
    assert len(single) == len(ranks[0]) == len(ranks[1]) == 4  # 2 epochs x (7 + 4): the 1-image tail is skipped
    for step, (s, r0, r1) in enumerate(zip(single, *ranks)):
        assert r0["y"] + r1["y"] == s["y"], step  # same order, rank r takes slice r of every global batch
        assert len(r0["y"]) - len(r1["y"]) in (0, 1)
        assert r0["x"] + r1["x"] == pytest.approx(s["x"], rel=1e-6)  # the same crops and flips, image by image
        # the loss is the global batch mean and DDP's averaged gradient is the full-batch gradient
        assert (r0["loss_x_n"] + r1["loss_x_n"]) == pytest.approx(s["loss_x_n"], rel=1e-5 if step == 0 else 1e-3)
        assert r0["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-6)  # all-reduced: identical on both ranks
    assert ranks[0][0]["grad_norm"] == pytest.approx(single[0]["grad_norm"], rel=1e-4)  # first step: float noise only


def test_ddp_resumes_a_single_process_state(tmp_path, images, single, monkeypatch):
    cut = stage_dir(tmp_path / "cut", 1, images)
    monkeypatch.chdir(cut)
    interrupt_on_call(monkeypatch, train, "train_epoch", 2)  # killed in epoch two
    with pytest.raises(KeyboardInterrupt):
        train.run("t", "resnet18", 0, "hue", config.load("train"), config.load("loss"), paths.manifest("t"),
                  train.Outputs(paths.checkpoint("t", "resnet18", "hue", 0),
                                paths.resume_state("t", "resnet18", "hue", 0), paths.train_log("t", "resnet18", "hue", 0),
                                paths.train_detail("t", "resnet18", "hue", 0),
                                paths.timings("train", "t-resnet18-hue-fold0")))
    monkeypatch.undo()
    first_epoch = torch.load(cut / paths.resume_state("t", "resnet18", "hue", 0), weights_only=True)["log"][0]
    raw = yaml.safe_load((cut / "params.yaml").read_text())
    raw["train"]["devices"] = 2
    (cut / "params.yaml").write_text(yaml.safe_dump(raw))
    run(["python", str(REPO / "stages/train.py"), "hue", "t", "resnet18", "0"], cut)
    log, _, _ = outputs_of(cut)
    assert log["epoch"].tolist() == [1, 2] and log["loss_ce"].iloc[0] == pytest.approx(first_epoch["loss_ce"], rel=1e-6)
    assert log["loss_ce"].to_numpy() == pytest.approx(outputs_of(single)[0]["loss_ce"].to_numpy(), rel=1e-4)


def test_global_batchnorm_matches_batchnorm_on_one_process():
    bn, gbn = torch.nn.BatchNorm2d(3), distributed.convert_global_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(3)))
    x = torch.randn(4, 3, 5, 5)
    assert torch.allclose(bn(x), gbn(x)) and isinstance(gbn[0], distributed.GlobalBatchNorm2d)
    ctx = distributed.Context(rank=1, world=3)
    assert ctx.local(np.arange(7)).tolist() == [3, 4] and distributed.local_loss_scale(2, 7, ctx) == pytest.approx(6 / 7)


def test_more_processes_than_gpus_fails_in_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(distributed.DistributedError, match=r"train.devices = 2 .* has 1 CUDA device\(s\)"):
        distributed.torchrun(2, ["stages/train.py"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    with pytest.raises(distributed.DistributedError, match="set train.devices <= 1"):
        distributed.setup()  # started by hand under torchrun
