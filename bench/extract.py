"""Extract benchmark: the extract stage vs the bare model forward vs thingsvision, one run.

    python bench/extract.py                                   # digits, resnet18, params.yaml sizes
    python bench/extract.py --weights file                    # weights read from a file (pretrained's path)
    python bench/extract.py --weights hue                     # the default pipeline's extract: 5 fold models per batch
    python bench/extract.py --phases                          # also where the stage's time goes, per run
    python bench/extract.py --decode-nice 19                  # the decode thread only where a core is idle
    python bench/extract.py --thingsvision-python /tmp/tvenv/bin/python

The stage number is end to end (model build, decode, resize, forward, descriptors, shards,
tables), with Python imports warmed first as for the others; the bare number is the same model at the same batch size and precision on preloaded tensors.
thingsvision pins its own torch/torchvision/tensorflow, so it runs from its own interpreter
(give its path) on the same image files and layer.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import typer

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)

THINGSVISION_SNIPPET = r"""
import sys, time, json
from thingsvision import get_extractor
from thingsvision.utils.data import ImageDataset, DataLoader
root, size, batch, backbone, node = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
ex = get_extractor(model_name=backbone, source="torchvision", device="cpu", pretrained=False)
ds = ImageDataset(root=root, out_path="/tmp/tv_out", backend=ex.get_backend(),
                  transforms=ex.get_transformations(resize_dim=size, crop_dim=size))
dl = DataLoader(dataset=ds, batch_size=batch, backend=ex.get_backend())
t = time.perf_counter()
feats = ex.extract_features(batches=dl, module_name=node, flatten_acts=False)
dt = time.perf_counter() - t
import torch, torchvision
print(json.dumps({"images": len(feats), "seconds": dt, "shape": list(feats.shape[1:]),
                  "torch": torch.__version__, "torchvision": torchvision.__version__}))
"""


def bare_forward(nets: list, paths: list[str], size: tuple[int, int], batch: int, precision: str) -> float:
    """Images/s of the models alone on preloaded uint8 tensors (normalisation included), each image through each."""
    import torch

    from hue import extract, tensors

    files = extract.ImageFiles(paths, size)
    preloaded = torch.stack([files[i] for i in range(len(files))])  # (N, 3, S, S) uint8
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = tensors.resolve_precision(precision, device)
    nets = [extract.placed(net, device) for net in nets]
    for net in nets:
        extract.forward_batch(net, preloaded[:batch], device, dtype)  # warm-up
    start = time.perf_counter()
    for i in range(0, len(preloaded), batch):
        for net in nets:  # as the stage runs a trained source: every fold's model on each batch
            extract.forward_batch(net, preloaded[i:i + batch], device, dtype)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(preloaded) * len(nets) / (time.perf_counter() - start)


@contextlib.contextmanager
def phase_timers():
    """Time the stage's parts while the block runs: yields {part: [seconds, calls]}.

    "batch wait" is the main thread blocked on the decoded batches (input-bound if large). On
    CUDA each main-thread part synchronises the device when it ends, so a part includes its
    kernels, and the run loses the overlap of host and device work (profile, not throughput).
    Decoding is timed in the decode thread only: extract.workers processes (CUDA) keep theirs.
    """
    import torch

    from hue import extract, shards, sources

    spent = collections.defaultdict(lambda: [0.0, 0])
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def timed_call(name, fn, end=lambda: None):
        def call(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            end()
            spent[name][0] += time.perf_counter() - start
            spent[name][1] += 1
            return out
        return call

    def synced_call(name, fn):
        return timed_call(name, fn, sync)

    def timed_iter(name, fn):
        def call(*args, **kwargs):
            items = fn(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    return
                spent[name][0] += time.perf_counter() - start
                spent[name][1] += 1
                yield item
        return call

    parts = {"model build": (sources, "extractor", synced_call),
             "decode (thread)": (extract.ImageFiles, "__getitems__", timed_call),
             "forward": (extract, "forward_batch", synced_call), "descriptors": (extract, "descriptors", synced_call),
             "to host": (extract, "to_host", synced_call), "shard write": (shards.ShardWriter, "add", timed_call),
             "batch wait": (extract.Prefetch, "__iter__", timed_iter)}
    originals = {name: getattr(owner, attr) for name, (owner, attr, _) in parts.items()}
    for name, (owner, attr, timer) in parts.items():
        setattr(owner, attr, timer(name, originals[name]))
    try:
        yield spent
    finally:
        for name, (owner, attr, _) in parts.items():
            setattr(owner, attr, originals[name])


def niced_decode_thread(nice: int) -> None:
    """Run every later stage's decode thread at `nice` (it then decodes where a core is idle)."""
    from hue import extract

    fill = extract.Prefetch._fill

    def niced(self, batches):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        return fill(self, batches)

    extract.Prefetch._fill = niced


@app.command()
def main(dataset: str = "digits", backbone: str = "resnet18", images: int = 0, repeats: int = 3,
         tile: int = typer.Option(1, help="repeat the manifest's images this many times (amortises start-up)"),
         workers: int = typer.Option(-1, help="override extract.workers (-1: params.yaml)"),
         image_size: int = typer.Option(0, help="override extract.image_size (0: params.yaml)"),
         precision: str = typer.Option("", help="override extract.precision: auto, fp32 or bf16 ('': params.yaml)"),
         keep_heap: bool = typer.Option(True, help="glibc heap policy of every stage (hue.cli.keep_freed_heap)"),
         weights: str = typer.Option("random", help="random: seeded init inside the stage; file: the same weights "
                                     "from a state-dict file, loaded as imagenet or weight_files weights are; "
                                     "onehot / hue: the pipeline's trained checkpoints (after dvc repro), one "
                                     "model per run fold on every batch, as the default extract stages run"),
         phases: bool = typer.Option(False, help="also print where each stage run's time went (timers around its parts)"),
         decode_nice: int = typer.Option(0, help="nice value of the stage's decode thread (Linux; 0: as the stage runs)"),
         thingsvision_python: str = typer.Option("", help="interpreter of a venv with thingsvision")) -> None:
    """Run the three extractions side by side and print the ratios."""
    import torch

    from hue import cli, config, extract, models, paths, shards, sources, tensors

    heap = "kept (as every stage)" if keep_heap and cli.keep_freed_heap() else "glibc default"
    import torchvision.models  # noqa: F401  one-time import cost (~3 s here) is start-up, not throughput

    params = config.load("extract")
    if workers >= 0:
        params = dataclasses.replace(params, workers=workers)
    if image_size:
        params = dataclasses.replace(params, image_size=image_size)
    if precision:
        params = dataclasses.replace(params, precision=precision)
    frame = shards.read_parquet(paths.manifest(dataset))
    if images:
        frame = frame.iloc[:images]
    if tile > 1:
        import pandas as pd

        frame = pd.concat([frame] * tile, ignore_index=True)
    size = extract.input_size(frame, params, models.get(backbone).input_size)  # (W, H)
    if weights not in ("random", "file", *sources.TRAINED):
        raise typer.BadParameter(f"--weights is random, file, onehot or hue, not {weights!r}")
    files = tempfile.TemporaryDirectory()
    source, folds, model_dir = f"{backbone}-random", (), Path(files.name) / "models"
    if weights == "file":  # the seeded init, saved: loading it skips the init (hue.models.loaded)
        saved = str(Path(files.name) / "weights.pt")
        torch.save(models.build(backbone, "random", params.seed)[0].state_dict(), saved)
        params = dataclasses.replace(params, weight_files={"bench": saved})
        source = f"{backbone}-bench"
    if weights in sources.TRAINED:  # the pipeline's own checkpoints, as the default extract stages run them
        if images:
            raise typer.BadParameter("--images cuts the manifest, which the trained checkpoints' held-out "
                                     "images index whole; leave it out with --weights onehot or hue")
        source, folds = f"{backbone}-{weights}", config.load("data").run_folds
        model_dir = paths.model_dir(dataset, source)
        missing = [path for path in (sources.checkpoint(model_dir, f) for f in folds) if not path.is_file()]
        if missing:
            raise typer.BadParameter(f"--weights {weights} reads the pipeline's checkpoints; missing {missing[0]}: "
                                     "run `dvc repro` first")
    resolved = tensors.resolve_precision(params.precision, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    print(f"{dataset}: {len(frame)} images at {size[0]}x{size[1]} px through {backbone}, batch {params.batch_size}, "
          f"precision {params.precision} ({resolved}), workers {params.workers}, heap {heap}, weights {weights}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"cuda {torch.cuda.is_available()}")
    if decode_nice:
        niced_decode_thread(decode_nice)
    n_images = len(frame) * max(1, len(folds))  # a trained source runs each image through every fold's model
    ratios = []
    for r in range(repeats):  # interleaved, so drift of the machine hits both sides alike
        with tempfile.TemporaryDirectory() as tmp:
            shards.write_parquet(Path(tmp) / "m.parquet", frame)
            with phase_timers() if phases else contextlib.nullcontext({}) as spent:
                start = time.perf_counter()
                extract.run(dataset, source, params, folds, Path(tmp) / "m.parquet", model_dir,
                            Path(tmp) / "out", Path(tmp) / "timings.json")
                seconds = time.perf_counter() - start
            stage = n_images / seconds
        # the models as the stage builds them
        nets = [sources.extractor(sources.parse(source), params, model_dir, f)[0] for f in folds or [None]]
        bare = bare_forward(nets, frame["path"].tolist(), size, params.batch_size, params.precision)
        ratios.append(stage / bare)
        print(f"run {r}: extract stage {stage:7.1f} img/s, bare forward {bare:7.1f} img/s, "
              f"ratio stage / bare {stage / bare:.2f}")
        if spent:
            print(f"  stage {seconds:.3f} s: " + ", ".join(f"{name} {t:.3f} s / {n}" for name, (t, n) in spent.items())
                  + f"; bare forward of the same images {n_images / bare:.3f} s")
    print(f"ratio stage / bare over {repeats} runs: min {min(ratios):.2f}, max {max(ratios):.2f} (target >= 0.9)")
    if thingsvision_python:
        root = Path(frame["path"].iloc[0]).parents[1]
        out = subprocess.run([thingsvision_python, "-c", THINGSVISION_SNIPPET, str(root), str(size[0]),
                              str(params.batch_size), backbone, params.layer or models.get(backbone).node],
                             capture_output=True, text=True)
        if out.returncode != 0:
            print(f"thingsvision failed: {out.stderr.strip().splitlines()[-1]}")
            sys.exit(1)
        tv = json.loads(out.stdout.strip().splitlines()[-1])
        tv_rate = tv["images"] / tv["seconds"]
        print(f"thingsvision       {tv_rate:8.1f} img/s  ({tv['images']} images of {root}, output {tv['shape']}, "
              f"torch {tv['torch']}, torchvision {tv['torchvision']})")
        print(f"ratio stage / thingsvision: {stage / tv_rate:.2f} (target > 1)")


if __name__ == "__main__":
    app()
