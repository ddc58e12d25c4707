"""Training-loop benchmark: hue's epoch loop vs bare forward+backward on preloaded tensors.

    python bench/train.py                       # digits, params.yaml train section
    python bench/train.py --arch efficientnet_b0 --image-size 224 --batch-size 256   # on a GPU

Same model, batch size, precision, loss (one-hot + hue) and step function (hue.train.train_step);
the loop adds cropping, flipping and normalising from the uint8 cache, the host syncs for
logging and the NaN check.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(dataset: str = "digits", arch: str = "", image_size: int = 0, batch_size: int = 0, fold: int = 0,
         epochs: int = 2,
         keep_heap: bool = typer.Option(True, help="glibc heap policy of every stage (hue.cli.keep_freed_heap)")) -> None:
    """Run both loops side by side and print images/s and their ratio."""
    import torch

    from hue import cli, config, losses, paths, train
    from hue.tensors import deterministic_cudnn, training_precision

    if keep_heap:  # as the train stage runs
        cli.keep_freed_heap()

    params = config.load("train")
    params = dataclasses.replace(params, image_size=image_size or params.image_size,
                                 batch_size=batch_size or params.batch_size)
    arch = arch or params.archs[0]
    loss = config.load("loss")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = training_precision(device)
    data = train.load_data(paths.manifest(dataset), fold, params, device)
    labels_2d = losses.angular_labels(loss.labels, data.n_classes).to(device)
    n = len(data.train) - len(data.train) % params.batch_size
    print(f"{dataset} fold {fold}: {n} training images/epoch, {arch} at {params.image_size}px, batch "
          f"{params.batch_size}, {str(dtype).replace('torch.', '')} on {device}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, torch threads "
          f"{torch.get_num_threads()}")

    with deterministic_cudnn():  # as the train stage runs
        torch.manual_seed(0)
        model = train.placed_net(arch, data.n_classes, device)  # as the train stage places it
        opt = torch.optim.Adam(model.parameters())
        train.train_epoch(model, opt, data, labels_2d, loss, params, 0, device, dtype)  # warm-up
        loop = [train.train_epoch(model, opt, data, labels_2d, loss, params, e, device, dtype)["images_per_second"]
                for e in range(1, epochs + 1)]

        torch.manual_seed(0)
        model = train.placed_net(arch, data.n_classes, device)
        opt = torch.optim.Adam(model.parameters())
        x = torch.randn(params.batch_size, 3, params.image_size, params.image_size, device=device)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, data.n_classes, (params.batch_size,), device=device)
        scale = loss.scale(data.n_classes)

        def step():
            train.train_step(model, opt, x, y, labels_2d, loss, scale, device, dtype)  # the loop's own step

        model.train()
        for _ in range(3):
            step()
        bare = []
        for _ in range(epochs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(n // params.batch_size):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            bare.append(n / (time.perf_counter() - start))
    loop_rate, bare_rate = max(loop), max(bare)
    print(f"training loop       {loop_rate:9.1f} img/s (best of {epochs} epochs)")
    print(f"bare fwd+bwd+step   {bare_rate:9.1f} img/s (preloaded tensors)")
    print(f"ratio loop / bare: {loop_rate / bare_rate:.2f} (target >= 0.9)")


if __name__ == "__main__":
    app()
