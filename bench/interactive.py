"""InterActive benchmark: activeness features vs plain extraction of the same layers, one run.

    python bench/interactive.py                 # digits, params.yaml interactive section

Both read the same decoded batches (decoding is timed separately and excluded) through the
same truncated backbone; the plain pass pools the layers (ORIG avg/max) under no_grad, the
activeness pass adds one backward per distinct top layer T and p.
"""

from __future__ import annotations

import os
import platform
import time

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


@app.command()
def main(dataset: str = "digits", backbone: str = "", repeats: int = 2) -> None:
    """Time both extractions side by side and print the ratio."""
    import torch

    from hue import config, images, interactive, models, paths, shards, tensors
    from hue.tensors import normalise

    params = config.load("interactive")
    backbone = backbone or params.backbones[0]
    frame = interactive.sample(shards.read_parquet(paths.manifest(dataset)), params.max_per_class, params.seed)
    all_layers, top = models.interactive_layers(backbone)
    layers = params.layers or all_layers
    plan = interactive.targets(layers, all_layers, top, params.activeness)
    model, _ = models.build(backbone, params.weights, params.seed)
    model.eval().requires_grad_(False)
    taps = interactive.Taps(model, sorted(set(layers) | set(plan)))
    sizes = [images.interactive_size(w, h, params.area) for w, h in zip(frame["width"], frame["height"])]
    batches = [interactive.load_batch(frame["path"].iloc[i].tolist(), sizes[i[0]])
               for i in interactive.buckets(sizes, params.batch_size)]
    print(f"{dataset}: {len(frame)} images, {backbone}, layers {list(layers)}, activeness {list(params.activeness)}, "
          f"p {list(params.p)}, area {params.area}, batch {params.batch_size}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")

    def plain():
        with torch.no_grad(), tensors.exact_fp32():  # as interactive.batch_features runs
            for b in batches:
                out = taps(normalise(b))
                for t in layers:
                    out[t].mean((2, 3)), out[t].amax((2, 3))

    def active():
        for b in batches:
            interactive.batch_features(taps, b, layers, plan, params.p)

    times = {}
    for name, fn in (("plain", plain), ("activeness", active)):
        fn()  # warm-up
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        times[name] = best
        print(f"{name:11s} {len(frame) / best:8.1f} img/s ({best:.2f} s)")
    print(f"ratio activeness / plain time: {times['activeness'] / times['plain']:.2f}x")


if __name__ == "__main__":
    app()
