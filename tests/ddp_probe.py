"""Run under torchrun (or alone): record what every training step sees on this rank, for tests/test_distributed.py."""

import json
import sys

import torch

from hue import config, distributed, losses, train
from hue.models import HueNet


def main(workdir: str, out: str) -> None:
    """Two epochs of the real loop; each step's labels and per-image input checksums go to `out`.<rank>.json."""
    import os

    os.chdir(workdir)
    ctx = distributed.setup()
    params, loss = config.load("train"), config.load("loss")
    data = train.load_data("data/manifests/t.parquet", 0, params, ctx.device)
    labels_2d = losses.angular_labels(loss.labels, data.n_classes, loss.seed)
    torch.manual_seed(params.seed)
    model = distributed.wrap(HueNet("resnet18", data.n_classes).to(ctx.device), ctx)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    steps, real = [], train.train_step

    def recorded(model_, opt_, x, y, *args, **kwargs):
        parts, logits, diag = real(model_, opt_, x, y, *args, **kwargs)
        grads = [p.grad.double().norm().item() for p in model_.parameters()]  # after DDP's all-reduce: global
        steps.append({"y": y.tolist(), "x": x.double().sum((1, 2, 3)).tolist(), "grad_norm": sum(grads),
                      "loss_x_n": float(parts.ce.detach()) * len(y)})
        return parts, logits, diag

    train.train_step = recorded
    for epoch in range(2):
        train.train_epoch(model, opt, data, labels_2d, loss, params, epoch, ctx.device, torch.float32, ctx)
    with open(f"{out}.{ctx.rank}.json", "w") as f:
        json.dump(steps, f)
    distributed.teardown(ctx)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
