"""Descriptors, positions, shards and the extract stage's atomicity."""

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hue import config, datasets, extract, images, manifest, models, shards
from hue.tensors import normalise
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
    frame, _, _ = manifest.build("t", datasets.read_image_folder(root), params, root)
    shards.write_parquet(in_tmp / "m.parquet", frame)
    return in_tmp / "m.parquet"


PARAMS = config.build("extract", {"image_size": 64, "batch_size": 5, "shard_rows": 8, "workers": 0, "layer": None,
                                  "weights": ["random"]})


def run_extract(manifest_path, out, params=PARAMS, source="resnet18-random", folds=(0, 1, 2), model_dir=None):
    """The extract stage on a tiny manifest."""
    return extract.run("t", source, params, folds, manifest_path, model_dir or out.parent / "models", out,
                       out.parent / "timings.json")


def as_the_stage_runs(info):
    """(net, uint8 batch) -> float32 map on the CPU, run on the stage's device and precision; and tolerances.

    atol for unit descriptors stored in fp16; rtol for energies. bf16 autocast (GPUs, CPUs with
    AVX512-BF16) rounds to 2^-8 relative, and batches of another size may take other kernels.
    """
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, info["precision"])
    atol, rtol = (2e-3, 1e-4) if dtype == torch.float32 else (1e-2, 1e-2)
    return lambda net, batch: extract.forward_batch(net.to(device), batch, device, dtype).cpu(), atol, rtol


def test_image_batches_come_whole_and_equal_the_images_one_by_one(tmp_path):
    paths = [str(make_image(tmp_path / f"{i}.png", mode=m, size=(9 + i, 6), seed=i)) for i, m in
             enumerate(["L", "RGB", "P", "L", "RGBA"])]
    files = extract.ImageFiles(paths, (8, 5))
    batches = list(DataLoader(files, batch_size=2, collate_fn=extract.as_batch))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 5, 8), (2, 3, 5, 8), (1, 3, 5, 8)]
    assert all(b.dtype == torch.uint8 and b.is_contiguous() for b in batches)
    one_by_one = torch.stack([torch.from_numpy(np.array(images.load_rgb(p).resize((8, 5), resample=2)))
                              .permute(2, 0, 1) for p in map(Path, paths)])
    assert torch.equal(torch.cat(batches), one_by_one)
    assert torch.equal(files[3], one_by_one[3])


@pytest.mark.parametrize("backbone", ["resnet18", "densenet201"])  # a hooked node, a traced (functional) one
def test_channels_last_forward_matches_the_plain_layout(backbone):
    x = torch.randint(0, 255, (2, 3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    plain, _ = models.bottleneck(backbone, "random")
    with torch.no_grad():
        want = plain(normalise(x))  # (B, C, H, W) NCHW throughout
    cpu = torch.device("cpu")
    got = extract.forward_batch(extract.placed(models.bottleneck(backbone, "random")[0], cpu), x, cpu, torch.float32)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5 * float(want.abs().max()))  # float rounding only


def test_extract_store_matches_a_direct_forward(tiny_manifest, in_tmp):
    out = in_tmp / "act"
    info = run_extract(tiny_manifest, out)[None]
    store = shards.ActivationStore(out)
    assert info["grid"] == [2, 2] and info["n_shards"] == 6  # 2 images of 4 pixels per shard
    assert info["source"] == "resnet18-random" and info["fold"] is None and info["node"] == "layer4"
    frame = shards.read_parquet(tiny_manifest)
    net = models.bottleneck("resnet18", "random", 0)[0]
    batch = torch.stack([extract.ImageFiles(frame["path"].tolist(), 64)[i] for i in range(12)])
    forward, atol, rtol = as_the_stage_runs(info)
    d = extract.descriptors(forward(net, batch))
    flat_5 = extract.flat_descriptor(forward(net, batch[5:6])).numpy()
    pix = store.vectors("pixel", np.arange(12))
    assert pix.shape == (48, 512)
    assert np.allclose(pix, d["pixel"].reshape(48, 512).numpy(), atol=atol)
    assert np.allclose(store.vectors("gap", np.array([3, 7])), d["gap"][[3, 7]].numpy(), atol=atol)
    assert np.allclose(store.vectors("flat", np.array([5])), flat_5, atol=atol)
    assert np.allclose(store.energy(np.array([0, 11])), d["energy"][[0, 11]].numpy(), rtol=rtol)
    assert (store.images["label"].to_numpy() == frame["label"].to_numpy()).all()
    assert shards.open_store(out, 2).folder == out  # a pretrained store serves every fold


def test_layer_override_taps_an_earlier_node(tiny_manifest, in_tmp):
    params = config.build("extract", {**{k: getattr(PARAMS, k) for k in ("image_size", "batch_size", "workers")},
                                      "layer": "layer3", "weights": ["random"]})
    info = run_extract(tiny_manifest, in_tmp / "act", params)[None]
    assert info["grid"] == [4, 4] and info["channels"] == 256 and info["node"] == "layer3"  # stride 16 at 64 px
    bad = config.build("extract", {"layer": "layer9", "weights": ["random"], "workers": 0})
    with pytest.raises(models.ModelError, match="extract.layer = 'layer9' is not a node of ResNet; top-level nodes"):
        run_extract(tiny_manifest, in_tmp / "bad", bad)


def plant_trained(model_dir, frame, folds, arch="resnet18"):
    """Checkpoints as the train stage writes them: fold k's model and its held-out theta'."""
    from hue.models import HueNet

    for fold in folds:
        torch.manual_seed(fold)
        net = HueNet(arch, 2)
        test = np.flatnonzero(frame["fold"].to_numpy() == fold)
        theta = torch.tensor([[float(i), -float(i)] for i in test])
        model_dir.mkdir(parents=True, exist_ok=True)
        torch.save({"arch": arch, "n_classes": 2, "model": net.state_dict(), "test_index": torch.as_tensor(test),
                    "test_pred": torch.zeros(len(test), dtype=torch.int64), "test_theta": theta},
                   model_dir / f"fold{fold}.pt")


def test_trained_source_gets_one_store_per_fold_from_the_model_that_held_it_out(tiny_manifest, in_tmp):
    frame = shards.read_parquet(tiny_manifest)
    plant_trained(in_tmp / "models", frame, (0, 1, 2))
    params = config.build("extract", {"image_size": 64, "batch_size": 5, "workers": 0, "layer": None})
    infos = run_extract(tiny_manifest, in_tmp / "act", params, "resnet18-hue", (0, 2), in_tmp / "models")
    assert sorted(infos) == [0, 2] and not (in_tmp / "act" / "manifest.json").exists()
    for fold in (0, 2):
        store = shards.open_store(in_tmp / "act", fold)
        assert store.folder == in_tmp / "act" / f"fold{fold}" and store.manifest["fold"] == fold
        # fold discipline: the store of fold k is made by the checkpoint trained with fold k held out
        net, _ = models.trained_bottleneck(in_tmp / "models" / f"fold{fold}.pt", "resnet18")
        batch = torch.stack([extract.ImageFiles(frame["path"].tolist(), 64)[i] for i in range(2)])
        forward, atol, _ = as_the_stage_runs(infos[fold])
        gap = extract.descriptors(forward(net, batch))["gap"].numpy()
        assert np.allclose(store.vectors("gap", np.arange(2)), gap, atol=atol)
        held = frame["fold"].to_numpy() == fold
        theta = store.images[["theta_x", "theta_y"]].to_numpy()
        assert np.isnan(theta[~held]).all() and (theta[held][:, 0] == np.flatnonzero(held)).all()
    other, _ = models.trained_bottleneck(in_tmp / "models" / "fold1.pt", "resnet18")
    wrong = extract.descriptors(forward(other, batch))["gap"].numpy()
    assert not np.allclose(shards.open_store(in_tmp / "act", 2).vectors("gap", np.arange(2)), wrong, atol=atol)


def test_interrupted_extract_leaves_nothing_and_rerun_is_identical(tiny_manifest, in_tmp, monkeypatch):
    out = in_tmp / "act"
    run_extract(tiny_manifest, out)
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
        run_extract(tiny_manifest, out)
    assert not out.exists() and not list(in_tmp.glob(".act.*"))
    (in_tmp / ".act.killed.tmp").mkdir()  # what a SIGKILL would leave: never trusted, swept
    (in_tmp / ".act.killed.tmp" / "pixel-00000.npy").write_bytes(b"junk")
    monkeypatch.setattr(extract, "forward_batch", real)
    run_extract(tiny_manifest, out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    assert not (in_tmp / ".act.killed.tmp").exists()


RSS_PROBE = r"""
import json, resource, sys
from pathlib import Path
from hue import cli, config, datasets, extract, manifest, shards
cli.keep_freed_heap()  # as every stage runs
extract.PREFETCH_BYTES = 1 << 20  # the decode-ahead budget (64 MiB) would hold all 27 MB of the large set's images
root, out = Path(sys.argv[1]), Path(sys.argv[2])
data = config.build("data", {"datasets": ["t"], "folders": {"t": str(root)}, "folds": 2, "run_folds": [0, 1]})
frame, _, _ = manifest.build("t", datasets.read_image_folder(root), data, root)
shards.write_parquet(out / "m.parquet", frame)
params = config.build("extract", {"image_size": 96, "layer": "layer2", "batch_size": 20, "shard_rows": 4096,
                                  "workers": 0, "weights": ["random"], "dtype": "float16"})
info = extract.run("t", "resnet18-random", params, (), out / "m.parquet", out / "models", out / "store", out / "t.json")
print(json.dumps({"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "store_mb": info[None]["n_pixels"] * info[None]["channels"] * 2 / 2**20,
                  "shards": info[None]["n_shards"]}))
"""


def test_extract_peak_rss_does_not_grow_with_the_dataset(tmp_path):
    import json
    import subprocess
    import sys

    peaks = {}
    for n in (50, 1000):  # images; layer2 at 96 px: 12 x 12 x 128 per image, 36 KB at float16
        root, out = tmp_path / f"imgs{n}", tmp_path / f"out{n}"
        out.mkdir()
        for i in range(n):
            make_image(root / ("a" if i % 2 else "b") / f"{i}.png", size=(20, 16), seed=i)
        proc = subprocess.run([sys.executable, "-c", RSS_PROBE, str(root), str(out)], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        peaks[n] = json.loads(proc.stdout.strip().splitlines()[-1])
    small, large = peaks[50], peaks[1000]
    assert large["shards"] > 30 and large["store_mb"] > 30  # the large store is many shards, tens of MB
    # streaming: the 20x larger dataset costs less than a third of its store in extra peak RSS
    # (the bound is the decode-ahead budget plus one batch's descriptors, whatever the dataset)
    assert large["rss_mb"] - small["rss_mb"] < large["store_mb"] / 3, peaks


def test_prefetch_yields_every_batch_in_order_and_holds_at_most_ahead():
    import time

    made = []

    def batches():
        for i in range(12):
            made.append(i)
            yield i

    seen, most_ahead = [], 0
    with extract.Prefetch(batches(), ahead=3) as prefetch:
        for item in prefetch:
            time.sleep(0.01)  # a slow consumer: the thread fills the queue and waits
            most_ahead = max(most_ahead, len(made) - len(seen))
            seen.append(item)
    assert seen == list(range(12))
    # the consumer's batch, the queue's 3, and the one the thread holds while it waits to put it
    assert 3 <= most_ahead <= 3 + 2


def test_prefetch_reraises_the_decoders_error_in_the_consumer():
    def batches():
        yield 0
        yield 1
        raise extract.ExtractError("bad image")

    seen = []
    with extract.Prefetch(batches(), ahead=8) as prefetch, pytest.raises(extract.ExtractError, match="bad image"):
        for item in prefetch:
            seen.append(item)
    assert seen == [0, 1]


def test_prefetch_close_stops_the_thread_early():
    import itertools

    prefetch = extract.Prefetch(itertools.count(), ahead=2)
    assert next(iter(prefetch)) == 0
    prefetch.close()  # as after a failed forward: the producer is blocked on a full queue
    assert not prefetch.thread.is_alive() and prefetch.queue.empty()


def test_decoded_batches_match_the_loader_with_worker_processes(tmp_path, tiny_manifest):
    """The GPU path's worker processes, started from the prefetch thread, give the in-process batches."""
    frame = shards.read_parquet(tiny_manifest)
    params = config.build("extract", {"batch_size": 3, "workers": 2})
    direct = [files for files in DataLoader(extract.ImageFiles(frame["path"].tolist(), (16, 16)), batch_size=3,
                                            collate_fn=extract.as_batch)]
    with extract.decoded_batches(frame, params, (16, 16), torch.device("cpu"), workers=2) as batches:
        threaded = list(batches)
    assert len(threaded) == len(direct) and all(torch.equal(a, b) for a, b in zip(threaded, direct))
    budget = extract.decoded_batches(frame, params, (16, 16), torch.device("cpu"))
    budget.close()
    assert budget.queue.maxsize == extract.PREFETCH_BYTES // (3 * 3 * 16 * 16)


@pytest.mark.parametrize("workers", [0, 2])
def test_decoding_draws_nothing_from_the_global_rng(tiny_manifest, workers):
    """The decode thread starts while a random source's seeded init draws from torch's global RNG."""
    frame = shards.read_parquet(tiny_manifest)
    params = config.build("extract", {"batch_size": 5, "workers": workers})
    torch.manual_seed(7)
    before = torch.get_rng_state()
    with extract.decoded_batches(frame, params, (16, 16), torch.device("cpu"), workers=workers) as batches:
        assert len(list(batches)) == 3
    assert torch.equal(torch.get_rng_state(), before)


def test_an_image_gone_since_the_manifest_fails_the_stage_naming_it(in_tmp, tiny_manifest):
    """A decoding error raised in the prefetch thread reaches the stage as itself; nothing is written."""
    gone = Path(shards.read_parquet(tiny_manifest)["path"].iloc[7])
    gone.unlink()
    out = in_tmp / "act"
    with pytest.raises(FileNotFoundError, match=gone.name):
        run_extract(tiny_manifest, out)
    assert not out.exists() and not list(in_tmp.glob(".act.*"))
