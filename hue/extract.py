"""Bottleneck activations to shards: one forward pass per batch yields every descriptor."""

from __future__ import annotations

import platform
import queue
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from hue import images, models, shards
from hue.tensors import IMAGENET_MEAN, IMAGENET_STD, exact_fp32, normalise, resolve_precision
from hue.cli import progress
from hue.config import ExtractParams
from hue.errors import HueError


class ExtractError(HueError):
    """The images cannot be extracted as asked."""


class ImageFiles(Dataset):
    """Decoded, resized uint8 images (3, H, W) from manifest paths; normalisation is on the device."""

    def __init__(self, paths: list[str], size: int | tuple[int, int]):
        self.paths = paths
        self.size = (size, size) if isinstance(size, int) else size  # (W, H)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.__getitems__([i])[0]  # (3, H, W) uint8

    def __getitems__(self, indices: list[int]) -> torch.Tensor:
        """A whole batch (B, 3, H, W) uint8, written in place.

        Per-image tensors, a permuted copy each and a stack took the digits' decoding pass 0.385 s;
        this, with greyscale resized on one band (images.load_resized), 0.289 s.
        """
        w, h = self.size
        out = np.empty((len(indices), 3, h, w), np.uint8)  # (B, 3, H, W)
        for j, i in enumerate(indices):
            img = images.load_resized(self.paths[i], self.size)  # (H, W, 3)
            out[j] = img[..., 0] if img.strides[2] == 0 else img.transpose(2, 0, 1)  # greyscale: its one band
        return torch.from_numpy(out)


def as_batch(batch: torch.Tensor) -> torch.Tensor:
    """The DataLoader's collate for ImageFiles: its batches come whole."""
    return batch


class Prefetch:
    """Iterate `batches` from a background thread holding at most `ahead` batches waiting.

    The extract stage starts it before building its models, so images decode on the core that
    their single-threaded init leaves idle, and in the forward's gaps (bench/RESULTS.md). The
    producer's error is raised in the consumer; `close` stops the thread early.
    """

    _END = object()

    def __init__(self, batches, ahead: int):
        self.queue: queue.Queue = queue.Queue(maxsize=max(1, ahead))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._fill, args=(batches,), daemon=True)
        self.thread.start()

    def _fill(self, batches) -> None:
        """Put every batch, then the end mark (or the error that ended them)."""
        try:
            for batch in batches:
                if not self._put(batch):
                    return
            self._put(self._END)
        except BaseException as err:  # re-raised in the consumer
            self._put(err)

    def _put(self, item) -> bool:
        """Queue `item` unless stopped; False once stopped."""
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self):
        while (item := self.queue.get()) is not self._END:
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop the thread and drop what it holds."""
        self.stop.set()
        self.thread.join()
        while not self.queue.empty():
            self.queue.get_nowait()

    def __enter__(self) -> "Prefetch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


PREFETCH_BYTES = 64 << 20  # decoded images waiting for the forward, at most (2 batches if one is larger)


def decoded_batches(frame: pd.DataFrame, params: ExtractParams, size: tuple[int, int], device: torch.device,
                    workers: int | None = None) -> Prefetch:
    """The manifest's images as uint8 batches (B, 3, H, W), decoded ahead in a thread within PREFETCH_BYTES.

    workers: decoding processes; None = extract.workers on CUDA, none on the CPU, whose forward
    already uses every core (bench/extract.py: stage/bare 0.73-0.82 with 2 workers, 0.86 in-process).
    """
    if workers is None:
        workers = params.workers if device.type == "cuda" else 0
    # its own generator: a DataLoader pass draws its workers' base seed, from torch's global RNG by
    # default, and this one starts in the prefetch thread while a random source's seeded init draws
    loader = DataLoader(ImageFiles(frame["path"].tolist(), size), batch_size=params.batch_size, shuffle=False,
                        num_workers=workers, pin_memory=device.type == "cuda", collate_fn=as_batch,
                        generator=torch.Generator())
    batch_bytes = params.batch_size * 3 * size[0] * size[1]
    return Prefetch(loader, max(2, PREFETCH_BYTES // batch_bytes))


def input_size(frame: pd.DataFrame, params: ExtractParams, native: int) -> tuple[int, int]:
    """(W, H) of every input: square, or InterActive's aspect-kept resize (one grid per dataset)."""
    if params.resize == "square":
        side = params.image_size or native
        return side, side
    sizes = {images.interactive_size(w, h, params.area) for w, h in zip(frame["width"], frame["height"])}
    # (a long side beyond images.side_cap(area) is capped: no single image can ask for an unbounded input)
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
        raise ExtractError(f"extract.resize=interactive gives {len(sizes)} input shapes here ({shown}, ...) but an "
                           "activation store holds one grid per dataset; use extract.resize=square for this dataset, "
                           "or the interactive stage, which pools each image on its own")
    return sizes.pop()


def descriptors(fmap: torch.Tensor) -> dict[str, torch.Tensor]:
    """docs/method.md §2 descriptors of a (B, C, H, W) float32 map; flat is rebuilt from pixel + energy."""
    b, c, h, w = fmap.shape
    energy = fmap.pow(2).sum(1)  # (B, H, W) ||I(x, y)||^2 before normalisation
    pixel = F.normalize(fmap.permute(0, 2, 3, 1).reshape(b, h * w, c), dim=-1)  # (B, P, C), row order y, x
    gap = F.normalize(fmap.mean((2, 3)), dim=-1)  # (B, C)
    gmp = F.normalize(fmap.amax((2, 3)), dim=-1)  # (B, C)
    return {"pixel": pixel, "gap": gap, "gmp": gmp, "energy": energy}


def to_host(described: dict[str, torch.Tensor], store: torch.dtype) -> dict[str, np.ndarray]:
    """`descriptors` as host arrays; vectors cast to `store` on the device first (numpy's fp16 cast is ~10x slower)."""
    return {k: (v if k == "energy" else v.to(store)).cpu().numpy() for k, v in described.items()}


def flat_descriptor(fmap: torch.Tensor) -> torch.Tensor:
    """The whole map as one unit vector in (y, x, c) order: (B, C, H, W) -> (B, H * W * C)."""
    return F.normalize(fmap.permute(0, 2, 3, 1).reshape(len(fmap), -1), dim=-1)


def centred_positions(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred (x, y) of each grid cell in row order; (0, 0) at the centre, y up."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return (cols - (w - 1) / 2).ravel(), ((h - 1) / 2 - rows).ravel()


def placed(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """The model on `device` in channels-last layout, as forward_batch feeds it.

    Channels-last on the CPU too: resnet18 to layer3 at 80 px ran a batch of 64 in 81 ms instead
    of 106 ms on a 2-core Sapphire Rapids (NCHW max-pooling and batch norm were the difference);
    its maps differ from the NCHW forward's by float rounding (0.4% of the fp16 pixel entries one
    step apart, bench/RESULTS.md).
    """
    return model.to(device=device, memory_format=torch.channels_last)


def forward_batch(model: torch.nn.Module, batch: torch.Tensor, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """uint8 batch -> float32 bottleneck map on `device` (model from `placed`); fp32 is fp32 on CUDA too (no TF32)."""
    x = normalise(batch.to(device, non_blocking=True)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), exact_fp32(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model(x).float()


def image_table(frame: pd.DataFrame, images_per_shard: int) -> pd.DataFrame:
    """One row per image: its id, label, fold and where its vectors are (shard, row)."""
    image = np.arange(len(frame))
    return pd.DataFrame({"image": image, "image_id": frame["image_id"].to_numpy(), "label": frame["label"].to_numpy(),
                         "fold": frame["fold"].to_numpy(), "shard": image // images_per_shard,
                         "row": image % images_per_shard})


def held_out_theta(checkpoint: Path, n_images: int) -> np.ndarray:
    """The hue head's theta' (N, 2) on the run's held-out images, NaN elsewhere (from the training run itself)."""
    state = models.read_state(checkpoint)  # mapped: the weights it also holds are not read
    theta = np.full((n_images, 2), np.nan, dtype=np.float32)
    theta[state["test_index"].numpy()] = state["test_theta"].numpy()
    return theta


def write_stores(frame: pd.DataFrame, batches, nets: dict, params: ExtractParams, folders: dict,
                 device: torch.device, desc: str) -> dict:
    """Stream every image once through every model in `nets` into that model's shards under `folders`.

    Images are decoded once per batch however many models there are (a trained source has one per
    fold); memory is the decoded batches `batches` holds (decoded_batches: PREFETCH_BYTES) plus
    one batch's descriptors: shards stream to disk as batches arrive (shards.ShardWriter).
    """
    dtype, store = resolve_precision(params.precision, device), getattr(torch, params.dtype)
    nets = {key: placed(net, device) for key, net in nets.items()}
    writers, grid, channels = {}, None, None
    for batch in progress(batches, desc=desc, unit="batch", total=-(-len(frame) // params.batch_size)):
        for key, net in nets.items():
            fmap = forward_batch(net, batch, device, dtype)  # (B, C, H, W)
            if key not in writers:
                channels, grid = fmap.shape[1], tuple(fmap.shape[2:])
                folders[key].mkdir(parents=True, exist_ok=True)
                writers[key] = shards.ShardWriter(folders[key], params.dtype,
                                                  max(1, params.shard_rows // (grid[0] * grid[1])))
            d = to_host(descriptors(fmap), store)
            writers[key].add(d["pixel"], d["gap"], d["gmp"], d["energy"])
    return {key: {"grid": list(grid), "channels": int(channels), "precision": str(dtype).replace("torch.", ""),
                  "n_images": len(frame), "n_pixels": len(frame) * grid[0] * grid[1], "n_shards": w.close(),
                  "images_per_shard": w.images_per_shard} for key, w in writers.items()}


def run(dataset: str, source_name: str, params: ExtractParams, run_folds: tuple[int, ...], manifest_path: Path,
        model_dir: Path, out: Path, timings_out: Path) -> dict:
    """The extract stage: the activation store of DATASET through a feature source.

    A pretrained source writes one store; a trained source one store per run fold, each made
    by the model that held that fold out (`fold<k>/`), with the hue head's theta' on it.
    """
    from hue import sources

    source = sources.parse(source_name)
    frame = shards.read_parquet(manifest_path)
    spec = models.get(source.backbone)
    size = input_size(frame, params, spec.input_size)  # (W, H)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    folds = list(run_folds) if source.trained else [None]
    start, infos = time.perf_counter(), {}
    with shards.atomic_dir(out) as tmp, decoded_batches(frame, params, size, device) as batches:
        built = {fold: sources.extractor(source, params, model_dir, fold) for fold in folds}  # (model, weights id)
        folders = {fold: tmp if fold is None else tmp / f"fold{fold}" for fold in folds}
        stores = write_stores(frame, batches, {f: m for f, (m, _) in built.items()}, params, folders, device,
                              f"extract {dataset}/{source.name}")
        for fold, info in stores.items():
            table = image_table(frame, info["images_per_shard"])
            if fold is not None:
                theta = held_out_theta(sources.checkpoint(model_dir, fold), len(frame))
                table["theta_x"], table["theta_y"] = theta[:, 0], theta[:, 1]
            shards.write_parquet(folders[fold] / "images.parquet", table)
            info = {"dataset": dataset, "source": source.name, "backbone": source.backbone, "weights": source.weights,
                    "weights_id": built[fold][1], "fold": fold, "node": params.layer or spec.node,
                    "post_relu": spec.post_relu and params.layer is None, **info,
                    "n_capped": int(sum(images.capped(w, h, params.area) for w, h in zip(frame["width"], frame["height"])))
                    if params.resize == "interactive" else 0,
                    "transform": {"resize": params.resize, "size": list(size), "interpolation": "bilinear",
                                  "mean": IMAGENET_MEAN, "std": IMAGENET_STD}, "dtype": params.dtype,
                    "versions": {"torch": torch.__version__, "torchvision": _tv_version(), "numpy": np.__version__,
                                 "python": platform.python_version()}}
            shards.write_json(folders[fold] / "manifest.json", info)
            infos[fold] = info
    seconds = time.perf_counter() - start
    shards.write_json(timings_out, {"seconds": seconds, "images_per_second": len(frame) * len(folds) / seconds,
                                    "device": device.type})
    return infos


def _tv_version() -> str:
    """torchvision's version string."""
    import torchvision

    return torchvision.__version__
