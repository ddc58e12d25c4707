"""Training: augmentation, a tiny run end to end, resume after a kill, divergence."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from hue import config, datasets, losses, manifest, models, shards, train
from tests.conftest import interrupt_on_call, make_image

TINY = config.build("train", {"epochs": 2, "batch_size": 8, "image_size": 16, "val_fraction": 0.25})
HUE = config.build("loss", {})


def test_augment_crops_and_flips_exactly():
    batch = torch.arange(2 * 3 * 6 * 6, dtype=torch.int64).reshape(2, 3, 6, 6).to(torch.uint8)
    gen = torch.Generator().manual_seed(0)
    out = train.augment(batch, 4, gen)
    gen = torch.Generator().manual_seed(0)
    off = torch.randint(0, 3, (2, 2), generator=gen)
    flip = torch.rand(2, generator=gen) < 0.5
    for b in range(2):
        t, l = off[0, b].item(), off[1, b].item()
        crop = batch[b, :, t:t + 4, l:l + 4]
        assert torch.equal(out[b], crop.flip(-1) if flip[b] else crop)


def test_center_crop():
    batch = torch.arange(36, dtype=torch.uint8).reshape(1, 1, 6, 6)
    assert train.center(batch, 2)[0, 0].tolist() == [[14, 15], [20, 21]]


def test_split_is_stratified_and_disjoint():
    frame = pd.DataFrame({"label": np.repeat([0, 1], 20), "fold": np.tile(np.arange(4), 10)})
    tr, va, te = train.split(frame, 1, 0.25, seed=0)
    assert set(te) == set(np.flatnonzero(frame["fold"] == 1))
    assert not (set(tr) & set(va)) and len(tr) + len(va) + len(te) == 40
    assert np.bincount(frame["label"].to_numpy()[va]).tolist() == [4, 4]


@pytest.fixture
def tiny(in_tmp):
    root = in_tmp / "imgs"
    for c, base in (("a", 0), ("b", 100), ("c", 200)):
        for i in range(8):
            make_image(root / c / f"{i}.png", size=(20, 20), seed=base + i)
    params = config.build("data", {"datasets": ["t"], "folders": {"t": str(root)}, "folds": 2, "run_folds": [0, 1]})
    frame, _, _ = manifest.build("t", datasets.read_image_folder(root), params, root)
    shards.write_parquet(in_tmp / "m.parquet", frame)
    return in_tmp


def outputs(tmp, kind="hue"):
    return train.Outputs(tmp / f"{kind}.pt", tmp / "resume" / f"{kind}.pt", tmp / f"{kind}.csv", tmp / f"{kind}.json",
                         tmp / f"{kind}-timings.json")


def test_tiny_run_end_to_end(tiny):
    m = train.run("t", "resnet18", 0, "hue", TINY, HUE, tiny / "m.parquet", outputs(tiny))
    log = pd.read_csv(tiny / "hue.csv")
    assert log["epoch"].tolist() == [1, 2] and log["lr"].iloc[0] == pytest.approx(1e-3)
    assert {"loss_ce", "loss_hue", "loss_total", "val_accuracy", "test_accuracy", "grad_ratio", "logit_spread",
            "log_m"} <= set(log)
    assert "images_per_second" not in log  # timings live apart: the log is deterministic
    assert len(json.loads((tiny / "hue-timings.json").read_text())["images_per_second"]) == 2
    assert (log["grad_ratio"] > 0).all() and (log["logit_spread"] <= 1 / 3 + 1e-6).all()  # at most 2/(2M), M = 3
    assert log["log_m"].iloc[0] == pytest.approx(np.log(3))
    assert 0 <= m["test_accuracy"] <= 1 and m["hue_test_accuracy"] is not None and m["n_test"] == 12
    assert m["distance_scale"] == 6.0  # 2M for M = 3
    assert json.loads((tiny / "hue.json").read_text()) == m
    assert not (tiny / "resume" / "hue.pt").exists()  # finished: the model is the output
    ckpt = torch.load(tiny / "hue.pt", weights_only=True)
    assert ckpt["n_classes"] == 3 and ckpt["test_theta"].shape == (12, 2) and len(ckpt["test_index"]) == 12
    onehot = train.run("t", "resnet18", 0, "onehot", TINY, HUE, tiny / "m.parquet", outputs(tiny, "onehot"))
    assert onehot["hue_test_accuracy"] is None and onehot["hue_weight"] == 0.0
    assert pd.read_csv(tiny / "onehot.csv")["grad_ratio"].isna().all()


def test_killed_run_resumes_and_matches_an_uninterrupted_one(tiny, monkeypatch):
    full = train.run("t", "resnet18", 1, "hue", TINY, HUE, tiny / "m.parquet", outputs(tiny, "full"))
    real = train.train_epoch
    interrupt_on_call(monkeypatch, train, "train_epoch", 2)  # killed in epoch two
    with pytest.raises(KeyboardInterrupt):
        train.run("t", "resnet18", 1, "hue", TINY, HUE, tiny / "m.parquet", outputs(tiny, "cut"))
    assert len(torch.load(tiny / "resume" / "cut.pt", weights_only=True)["log"]) == 1  # epoch 1 was kept
    assert not (tiny / "cut.pt").exists()  # no model until the run is complete
    monkeypatch.setattr(train, "train_epoch", real)
    resumed = train.run("t", "resnet18", 1, "hue", TINY, HUE, tiny / "m.parquet", outputs(tiny, "cut"))
    assert resumed == full
    assert (tiny / "cut.csv").read_text() == (tiny / "full.csv").read_text()


def test_a_rerun_writes_the_same_model_file(tiny, monkeypatch):
    one_epoch = dataclasses.replace(TINY, epochs=1)
    train.run("t", "resnet18", 0, "hue", one_epoch, HUE, tiny / "m.parquet", outputs(tiny, "first"))
    monkeypatch.setattr(train, "CODE", train.CODE[:-1])  # as after an edit of the training code: a new fingerprint
    train.run("t", "resnet18", 0, "hue", one_epoch, HUE, tiny / "m.parquet", outputs(tiny, "again"))
    # no wall-clock number, no temp-file name and no code hash inside: DVC's hash of the model holds from run to
    # run and across code edits that leave the weights alone
    assert "images_per_second" not in torch.load(tiny / "first.pt", weights_only=True)["log"][0]
    assert (tiny / "first.pt").read_bytes() == (tiny / "again.pt").read_bytes()


def test_resume_state_of_other_params_is_not_resumed(tiny):
    out = outputs(tiny)
    fp = train.fingerprint("t", "resnet18", 0, "hue", TINY, HUE, tiny / "m.parquet")
    out.resume.parent.mkdir()
    torch.save({"fingerprint": fp, "log": []}, out.resume)
    assert train.load_state(out.resume, fp) is not None
    other = config.build("loss", {"hue_weight": 0.5})
    assert train.load_state(out.resume, train.fingerprint("t", "resnet18", 0, "hue", TINY, other, tiny / "m.parquet")) \
        is None
    out.resume.write_bytes(b"torn")
    assert train.load_state(out.resume, fp) is None


def test_divergence_stops_with_a_clear_message(tiny, monkeypatch):
    from hue import losses

    monkeypatch.setattr(losses, "hue_loss", lambda *a: torch.tensor(float("nan"), device=a[0].device))
    with pytest.raises(train.TrainError, match="loss is not finite at epoch 1, batch 0 .*hue=nan.*lower train.lr"):
        train.run("t", "resnet18", 0, "hue", TINY, HUE, tiny / "m.parquet", outputs(tiny))


# Backward ops of the training graph whose CUDA kernels PyTorch does not list as nondeterministic
# (torch.use_deterministic_algorithms' docs, torch 2.14), convolutions given cuDNN's deterministic
# algorithms (train.run sets them). The global average pooling of the ResNets and EfficientNet
# (AdaptiveAvgPool2d to 1x1) runs as a mean, so no AdaptiveAvgPool2DBackward0, which is listed;
# NLLLoss is listed for its per-pixel form (ATen alerts in nll_loss2d only), NllLossBackward0 is per image.
# A new architecture or loss op that adds a node here must be checked against that list first.
VETTED_BACKWARD = {
    "AccumulateGrad", "AddBackward0", "AddmmBackward0", "AsStridedBackward0", "AsStridedBackward1",
    "AvgPool2DBackward0", "CatBackward0", "ClampMinBackward0", "ConvolutionBackward0", "CopySlices", "DivBackward0",
    "LogSoftmaxBackward0", "MaxPool2DWithIndicesBackward0", "MeanBackward0", "MeanBackward1", "MulBackward0",
    "NativeBatchNormBackward0", "NegBackward0", "NllLossBackward0", "PowBackward0", "ReluBackward0",
    "SigmoidBackward0", "SiluBackward0", "SqrtBackward0", "SubBackward0", "SumBackward1", "TBackward0",
    "ToCopyBackward0", "UnsqueezeBackward0", "ViewBackward0",
}


def backward_ops(root) -> set[str]:
    """Names of every autograd node reachable from `root` (a grad_fn)."""
    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if node is not None and node not in seen:
            seen.add(node)
            stack += [n for n, _ in node.next_functions]
    return {type(n).__name__ for n in seen}


@pytest.mark.parametrize("arch", sorted(models.TRAINABLE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_graph_uses_only_vetted_backward_ops(arch, dtype):
    torch.manual_seed(0)
    net = models.HueNet(arch, 10)
    x = torch.randn(4, 3, 32, 32).contiguous(memory_format=torch.channels_last)  # (B, 3, S, S) as on a GPU
    y, labels = torch.tensor([0, 1, 2, 3]), losses.angular_labels("circle", 10)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
        logits, theta, _ = net(x)
    ops = set()
    for form in losses.FORMS:
        ops |= backward_ops(losses.combined(logits.float(), theta.float(), y, labels, 1.0, form, 20.0).total.grad_fn)
    assert "MeanBackward1" in ops and ops <= VETTED_BACKWARD, sorted(ops - VETTED_BACKWARD)
