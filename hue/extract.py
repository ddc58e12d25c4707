"""Bottleneck activations to shards: one forward pass per batch yields every descriptor."""

from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from hue import images, models, shards
from hue.tensors import IMAGENET_MEAN, IMAGENET_STD, normalise, resolve_precision
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
        img = images.load_rgb(Path(self.paths[i])).resize(self.size, resample=2)  # 2 = bilinear
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)  # (3, H, W) uint8


def input_size(frame: pd.DataFrame, params: ExtractParams, native: int) -> tuple[int, int]:
    """(W, H) of every input: square, or InterActive's aspect-kept resize (one grid per dataset)."""
    if params.resize == "square":
        side = params.image_size or native
        return side, side
    sizes = {images.interactive_size(w, h, params.area) for w, h in zip(frame["width"], frame["height"])}
    if len(sizes) > 1:
        shown = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:3])
        raise ExtractError(f"extract.resize=interactive gives {len(sizes)} input shapes here ({shown}, ...) but an "
                           "activation store holds one grid per dataset; use extract.resize=square for this dataset, "
                           "or the interactive stage, which pools each image on its own")
    return sizes.pop()


def descriptors(fmap: torch.Tensor) -> dict[str, torch.Tensor]:
    """SPEC section 2 descriptors of a (B, C, H, W) float32 map; flat is rebuilt from pixel + energy."""
    b, c, h, w = fmap.shape
    energy = fmap.pow(2).sum(1)  # (B, H, W) ||I(x, y)||^2 before normalisation
    pixel = F.normalize(fmap.permute(0, 2, 3, 1).reshape(b, h * w, c), dim=-1)  # (B, P, C), row order y, x
    gap = F.normalize(fmap.mean((2, 3)), dim=-1)  # (B, C)
    gmp = F.normalize(fmap.amax((2, 3)), dim=-1)  # (B, C)
    return {"pixel": pixel, "gap": gap, "gmp": gmp, "energy": energy}


def flat_descriptor(fmap: torch.Tensor) -> torch.Tensor:
    """The whole map as one unit vector in (y, x, c) order: (B, C, H, W) -> (B, H * W * C)."""
    return F.normalize(fmap.permute(0, 2, 3, 1).reshape(len(fmap), -1), dim=-1)


def centred_positions(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Centred (x, y) of each grid cell in row order; (0, 0) at the centre, y up."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return (cols - (w - 1) / 2).ravel(), ((h - 1) / 2 - rows).ravel()


def forward_batch(model: torch.nn.Module, batch: torch.Tensor, device: torch.device,
                  dtype: torch.dtype) -> torch.Tensor:
    """uint8 batch -> float32 bottleneck map on `device`."""
    x = normalise(batch.to(device, non_blocking=True))
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        return model(x).float()


def tables(frame: pd.DataFrame, grid: tuple[int, int], images_per_shard: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The image-level and pixel-level metadata tables of an extract output."""
    n, (h, w) = len(frame), grid
    image = np.arange(n)
    img = pd.DataFrame({"image": image, "image_id": frame["image_id"].to_numpy(), "label": frame["label"].to_numpy(),
                        "fold": frame["fold"].to_numpy(), "shard": image // images_per_shard,
                        "row": image % images_per_shard})
    xs, ys = centred_positions(h, w)
    p = h * w
    pix = pd.DataFrame({
        "image": np.repeat(image, p), "label": np.repeat(img["label"].to_numpy(), p),
        "fold": np.repeat(img["fold"].to_numpy(), p), "x": np.tile(xs, n), "y": np.tile(ys, n),
        "shard": np.repeat(img["shard"].to_numpy(), p),
        "row": np.repeat(img["row"].to_numpy(), p) * p + np.tile(np.arange(p), n),
    })
    return img, pix


def run(dataset: str, backbone: str, params: ExtractParams, manifest_path: Path, out: Path) -> dict:
    """The extract stage: write the activation store of DATASET through BACKBONE to `out`."""
    frame = shards.read_parquet(manifest_path)
    spec = models.get(backbone)
    size = input_size(frame, params, spec.input_size)  # (W, H)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_precision(params.precision, device)
    model, weights_id = models.bottleneck(backbone, params.weights, params.seed)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    loader = DataLoader(ImageFiles(frame["path"].tolist(), size), batch_size=params.batch_size, shuffle=False,
                        num_workers=params.workers, pin_memory=device.type == "cuda")
    with shards.atomic_dir(out) as tmp:
        writer, grid, channels, start = None, None, None, time.perf_counter()
        energies = []
        for batch in progress(loader, desc=f"extract {dataset}/{backbone}", unit="batch"):
            fmap = forward_batch(model, batch, device, dtype)  # (B, C, H, W)
            if writer is None:
                channels, grid = fmap.shape[1], tuple(fmap.shape[2:])
                writer = shards.ShardWriter(tmp, params.dtype, max(1, params.shard_rows // (grid[0] * grid[1])))
            d = {k: v.cpu().numpy() for k, v in descriptors(fmap).items()}  # host sync point
            writer.add(d["pixel"], d["gap"], d["gmp"], d["energy"])
            energies.append(d["energy"].reshape(len(batch), -1))
        n_shards = writer.close()
        img, pix = tables(frame, grid, writer.images_per_shard)
        pix["energy"] = np.concatenate(energies).ravel().astype(np.float32)
        shards.write_parquet(tmp / "images.parquet", img)
        shards.write_parquet(tmp / "pixels.parquet", pix)
        info = {
            "dataset": dataset, "backbone": backbone, "node": spec.node, "post_relu": spec.post_relu,
            "grid": list(grid), "channels": int(channels), "weights": params.weights, "weights_id": weights_id,
            "transform": {"resize": params.resize, "size": list(size), "interpolation": "bilinear",
                          "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
            "dtype": params.dtype, "precision": str(dtype).replace("torch.", ""), "n_images": len(frame),
            "n_pixels": len(pix), "n_shards": n_shards, "images_per_shard": writer.images_per_shard,
            "versions": {"torch": torch.__version__, "torchvision": _tv_version(), "numpy": np.__version__,
                         "python": platform.python_version()},
        }
        shards.write_json(tmp / "manifest.json", info)
    return {**info, "seconds": time.perf_counter() - start}


def _tv_version() -> str:
    """torchvision's version string."""
    import torchvision

    return torchvision.__version__
