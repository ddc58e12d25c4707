"""The spatial grid of trained models: what each way of getting >= 5x5 positions costs and does to accuracy.

    python bench/grid.py                        # digits, after `dvc repro` (uses its fold-0 checkpoints)
    python bench/grid.py --dataset dtd10dev --train-size 64
    python bench/grid.py --parts B --epochs 2 --per-class 30  # only the training options

A ResNet-18 trained at 32 px has a 1x1 bottleneck. Options, measured side by side in one run:
  A. extraction-side, on the pipeline's own checkpoint (trained at --train-size):
     the bottleneck at a larger input, or an earlier layer at a moderate input;
  B. training-side: train at the size that gives the grid natively (standard stem at 5 x 32 px,
     or a CIFAR-style stem: 3x3 stride-1 conv, no max-pool, at 40 px), on a class-balanced
     subset for a few epochs, against the 32 px baseline trained the same way.
Accuracy = pixel and gap kNN (Eq. 1-3, exact search) on fold 0, and the classifier's test accuracy.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

import numpy as np
import torch
import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def knn_accuracy(fmap: torch.Tensor, labels: np.ndarray, folds: np.ndarray, fold: int = 0) -> dict[str, float]:
    """Pixel and gap kNN accuracy (Eq. 1-3, exact search) of held-out `fold` from a (N, C, H, W) map."""
    from hue import extract, knn, search

    d = extract.descriptors(fmap)
    q, m = np.flatnonzero(folds == fold), np.flatnonzero(folds != fold)
    out = {}
    for name in ("pixel", "gap"):
        v = d[name].numpy()
        p = v.shape[1] if name == "pixel" else 1
        mem_labels = np.repeat(labels[m], p)
        dist, idx = search.exact_search(v[q].reshape(-1, v.shape[-1]), v[m].reshape(-1, v.shape[-1]), 10)
        scores = knn.kernel_vote(dist, mem_labels[idx], knn.query_groups(name, len(q), p), len(q),
                                 np.bincount(mem_labels, minlength=labels.max() + 1), 1e-6)
        out[name] = float((knn.predict(scores) == labels[q]).mean())
    return out


def extract_map(body: torch.nn.Module, node: str, paths: list[str], size: int) -> tuple[torch.Tensor, float]:
    """The (N, C, H, W) map of every image at `node` and the images/s of getting it."""
    from hue import extract, models

    net = models.Bottleneck(body, node)
    files = extract.ImageFiles(paths, size)
    batch = torch.stack([files[i] for i in range(len(files))])
    start = time.perf_counter()
    parts = [extract.forward_batch(net, batch[i:i + 64], torch.device("cpu"), torch.float32)
             for i in range(0, len(batch), 64)]
    return torch.cat(parts), len(batch) / (time.perf_counter() - start)


def cifar_stem(net) -> None:
    """3x3 stride-1 first conv and no max-pool: output stride 8 instead of 32."""
    net.body.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.body.maxpool = torch.nn.Identity()


def train_variant(frame, params, stem: str, fold: int = 0) -> tuple[torch.nn.Module, float, float]:
    """Train fold `fold` as the pipeline does (one-hot): (model, training images/s, test accuracy)."""
    from hue import losses, train
    from hue.models import HueNet

    device = torch.device("cpu")
    data = train.load_data(params["manifest"], fold, params["train"], device)
    labels_2d = losses.angular_labels("circle", data.n_classes)
    torch.manual_seed(0)
    net = HueNet("resnet18", data.n_classes)
    if stem == "cifar":
        cifar_stem(net)
    opt = torch.optim.Adam(net.parameters(), lr=params["train"].lr)
    rates = [train.train_epoch(net, opt, data, labels_2d, train.ONEHOT, params["train"], e, device,
                               torch.float32)["images_per_second"] for e in range(params["train"].epochs)]
    pred, theta = train.predict(net, data, data.test, params["train"], device, torch.float32)
    acc, _ = train.accuracies(data, data.test, pred, theta, labels_2d)
    return net, float(np.median(rates)), acc


@app.command()
def main(dataset: str = "digits", fold: int = 0, train_size: int = 32, per_class: int = 40, epochs: int = 4,
         parts: str = "AB") -> None:
    """Print cost and accuracy of every grid option, and the cost ratios against the defaults."""
    from hue import paths, shards

    frame = shards.read_parquet(paths.manifest(dataset))
    labels, folds = frame["label"].to_numpy(), frame["fold"].to_numpy()
    print(f"{dataset}: {len(frame)} images; machine {platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")

    if "A" in parts:
        extraction_options(frame, labels, folds, dataset, fold, train_size)
    if "B" in parts:
        training_options(frame, fold, train_size, per_class, epochs)


def extraction_options(frame, labels, folds, dataset: str, fold: int, train_size: int) -> None:
    """A: the pipeline's checkpoint at other nodes and inputs: grid, img/s, kNN accuracy."""
    from hue import paths
    from hue.models import HueNet

    print("\nA. extraction options on the pipeline's checkpoint (fold "
          f"{fold}, one-hot and hue, trained at {train_size} px)")
    print(f"{'model':8s} {'node':7s} {'input':>6s} {'grid':>6s} {'C':>5s} {'img/s':>8s} {'pixel kNN':>10s} {'gap kNN':>8s}")
    options = [("layer4", train_size), ("layer4", 5 * 32), ("layer3", 5 * 16), ("layer2", 5 * 8)]
    base_rate = {}
    for loss in ("onehot", "hue"):
        state = torch.load(paths.checkpoint(dataset, "resnet18", loss, fold), map_location="cpu", weights_only=True)
        net = HueNet("resnet18", int(state["n_classes"]))
        net.load_state_dict(state["model"])
        for node, size in options:
            fmap, rate = extract_map(net.body.eval(), node, frame["path"].tolist(), size)
            acc = knn_accuracy(fmap, labels, folds, fold)
            base_rate.setdefault((node, size), rate)
            print(f"{loss:8s} {node:7s} {size:6d} {fmap.shape[2]}x{fmap.shape[3]:<4d} {fmap.shape[1]:5d} {rate:8.1f} "
                  f"{acc['pixel']:10.4f} {acc['gap']:8.4f}")
    ref = base_rate[("layer3", 80)]
    print("extraction time relative to layer3 @ 80 px: " + ", ".join(
        f"{n}@{s}: {ref / r:.2f}x" for (n, s), r in base_rate.items()))


def training_options(frame, fold: int, train_size: int, per_class: int, epochs: int) -> None:
    """B: train at the size (or with the stem) that gives the grid natively, against the 32 px baseline."""
    from hue import config, shards

    print(f"\nB. training options on {per_class} images per class, {epochs} epochs, fold {fold} "
          "(grid = bottleneck at the training input)")
    import tempfile

    sub = frame.groupby("label").head(per_class).reset_index(drop=True)

    with tempfile.TemporaryDirectory() as tmp:
        manifest = os.path.join(tmp, "m.parquet")
        shards.write_parquet(manifest, sub)
        rows = []
        for name, stem, size in (("standard stem", "standard", train_size), ("standard stem", "standard", 5 * 32),
                                 ("CIFAR stem", "cifar", 5 * 8)):
            params = {"manifest": manifest, "train": dataclasses.replace(
                config.build("train", {"epochs": epochs, "image_size": size}), batch_size=32)}
            net, rate, test_acc = train_variant(sub, params, stem, fold)
            fmap, _ = extract_map(net.body.eval(), "layer4", sub["path"].tolist(), size)
            acc = knn_accuracy(fmap, sub["label"].to_numpy(), sub["fold"].to_numpy(), fold)
            rows.append((name, size, tuple(fmap.shape[2:]), rate, test_acc, acc))
        base = rows[0][3]
        print(f"{'variant':15s} {'input':>6s} {'grid':>6s} {'train img/s':>12s} {'cost x':>7s} {'test acc':>9s} "
              f"{'pixel kNN':>10s} {'gap kNN':>8s}")
        for name, size, grid, rate, test_acc, acc in rows:
            print(f"{name:15s} {size:6d} {grid[0]}x{grid[1]:<4d} {rate:12.1f} {base / rate:7.1f} {test_acc:9.4f} "
                  f"{acc['pixel']:10.4f} {acc['gap']:8.4f}")


if __name__ == "__main__":
    app()
