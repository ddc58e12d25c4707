"""Descriptors, positions, shards and the extract stage's atomicity."""

import numpy as np
import pytest
import torch

from hue import config, datasets, extract, manifest, models, shards, tensors
from tests.conftest import make_image


def test_descriptor_row_order_energy_and_normalisation():
    fmap = torch.rand(2, 3, 2, 4) + 0.1  # (B, C, H, W)
    d = extract.descriptors(fmap)
    assert d["pixel"].shape == (2, 8, 3) and d["energy"].shape == (2, 2, 4)
    for j in range(8):  # row order (y, x)
        y, x = divmod(j, 4)
        v = fmap[1, :, y, x]
        assert torch.allclose(d["pixel"][1, j], v / v.norm())
        assert torch.isclose(d["energy"][1, y, x], v.pow(2).sum())
    assert torch.allclose(d["gap"][0], fmap[0].mean((1, 2)) / fmap[0].mean((1, 2)).norm())
    assert torch.allclose(d["gmp"][0].norm(), torch.tensor(1.0))


def test_flat_is_rebuilt_exactly_from_pixels_and_energy():
    fmap = torch.rand(3, 5, 3, 3)
    d = extract.descriptors(fmap)
    rebuilt = shards.flat_from_pixels(d["pixel"].numpy(), d["energy"].numpy())
    assert np.allclose(rebuilt, extract.flat_descriptor(fmap).numpy(), atol=1e-6)


def test_centred_positions_y_up():
    xs, ys = extract.centred_positions(3, 3)
    assert list(zip(xs, ys))[:3] == [(-1, 1), (0, 1), (1, 1)] and (xs[4], ys[4]) == (0, 0)
    xs, ys = extract.centred_positions(2, 2)
    assert set(xs) == {-0.5, 0.5} and ys[0] == 0.5


@pytest.fixture
def tiny_manifest(in_tmp):
    root = in_tmp / "imgs"
    for c in ("a", "b"):
        for i in range(6):
            make_image(root / c / f"{i}.png", size=(20, 16), seed=i + (50 if c == "b" else 0))
    params = config.build("data", {"datasets": ["t"], "folders": {"t": str(root)}, "folds": 3, "run_folds": [0, 1, 2]})
    frame, _ = manifest.build("t", datasets.read_image_folder(root), params, root)
    shards.write_parquet(in_tmp / "m.parquet", frame)
    return in_tmp / "m.parquet"


PARAMS = config.build("extract", {"image_size": 64, "batch_size": 5, "shard_rows": 8, "workers": 0})


def test_extract_store_matches_a_direct_forward(tiny_manifest, in_tmp):
    out = in_tmp / "act"
    info = extract.run("t", "resnet18", PARAMS, tiny_manifest, out)
    store = shards.ActivationStore(out)
    assert info["grid"] == [2, 2] and info["n_shards"] == 6  # 2 images of 4 pixels per shard
    frame = shards.read_parquet(tiny_manifest)
    net, _ = models.bottleneck("resnet18", "random", 0)
    batch = torch.stack([extract.ImageFiles(frame["path"].tolist(), 64)[i] for i in range(12)])
    with torch.no_grad():
        d = extract.descriptors(net(tensors.normalise(batch)))
    pix = store.vectors("pixel", np.arange(12))
    assert pix.shape == (48, 512)
    assert np.allclose(pix, d["pixel"].reshape(48, 512).numpy(), atol=2e-3)
    assert np.allclose(store.vectors("gap", np.array([3, 7])), d["gap"][[3, 7]].numpy(), atol=2e-3)
    flat = store.vectors("flat", np.array([5]))
    assert np.allclose(flat, extract.flat_descriptor(net(tensors.normalise(batch[5:6]))).detach().numpy(), atol=2e-3)
    pixels = store.pixels()
    assert len(pixels) == 48 and pixels["image"].tolist()[:5] == [0, 0, 0, 0, 1]
    assert np.allclose(pixels["energy"].to_numpy()[:4], d["energy"][0].ravel().numpy(), rtol=1e-4)
    assert (store.images["label"].to_numpy() == frame["label"].to_numpy()).all()


def test_interrupted_extract_leaves_nothing_and_rerun_is_identical(tiny_manifest, in_tmp, monkeypatch):
    out = in_tmp / "act"
    extract.run("t", "resnet18", PARAMS, tiny_manifest, out)
    first = {p.name: p.read_bytes() for p in out.iterdir()}
    calls = {"n": 0}
    real = extract.forward_batch

    def dies_midway(*args):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(extract, "forward_batch", dies_midway)
    import shutil

    shutil.rmtree(out)
    with pytest.raises(KeyboardInterrupt):
        extract.run("t", "resnet18", PARAMS, tiny_manifest, out)
    assert not out.exists() and not list(in_tmp.glob(".act.*"))
    (in_tmp / ".act.killed.tmp").mkdir()  # what a SIGKILL would leave: never trusted, swept
    (in_tmp / ".act.killed.tmp" / "pixel-00000.npy").write_bytes(b"junk")
    monkeypatch.setattr(extract, "forward_batch", real)
    extract.run("t", "resnet18", PARAMS, tiny_manifest, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert not (in_tmp / ".act.killed.tmp").exists()
