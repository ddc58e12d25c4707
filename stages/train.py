"""Train stage: one from-scratch run of ARCH on DATASET, held-out FOLD, one-hot or hue loss."""

import sys

import typer

from hue import config, distributed, paths, train
from hue.cli import guarded, keeps_heap

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
@guarded
@keeps_heap
def main(loss: str, dataset: str, arch: str, fold: int) -> None:
    """Train ARCH on DATASET with held-out FOLD; LOSS is 'onehot' (reads no loss.* param) or 'hue'."""
    if loss not in config.TRAIN_LOSSES:
        raise config.ConfigError(f"loss must be one of {list(config.TRAIN_LOSSES)}, not {loss!r}")
    cfg = config.load("train")
    if cfg.devices > 1 and not distributed.launched():  # rerun this very command under torchrun
        distributed.torchrun(cfg.devices, sys.argv)
        return
    loss_cfg = config.load("loss") if loss == "hue" else train.ONEHOT
    out = train.Outputs(paths.checkpoint(dataset, arch, loss, fold), paths.resume_state(dataset, arch, loss, fold),
                        paths.train_log(dataset, arch, loss, fold), paths.train_detail(dataset, arch, loss, fold),
                        paths.timings("train", paths.run_name(dataset, arch, loss, fold)))
    train.run(dataset, arch, fold, loss, cfg, loss_cfg, paths.manifest(dataset), out)


if __name__ == "__main__":
    app()
