"""Training from scratch, SPEC section 5: one run = dataset x arch x held-out fold x loss.

Images are decoded once into a uint8 cache at 8/7 of the training size; crops, flips and
normalisation happen on the device (on a GPU the cache stays resident there). Every epoch
ends with an atomic checkpoint, so a killed run resumes from its last finished epoch and
ends with the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image

from hue import images, losses, shards
from hue.cli import progress
from hue.config import LossParams, TrainParams, as_dict
from hue.errors import HueError
from hue.tensors import normalise, resolve_precision

ONEHOT = LossParams(hue_weight=0.0)  # what a one-hot run uses: it reads no loss.* param
CODE = ("train.py", "losses.py", "models.py")  # a change here invalidates checkpoints


class TrainError(HueError):
    """A run diverged or its inputs are unusable."""


@dataclasses.dataclass
class Data:
    """The decoded cache and the split of one run."""

    cache: torch.Tensor  # (N, 3, R, R) uint8, R = crop side * 8/7
    labels: torch.Tensor  # (N,) int64
    train: np.ndarray  # indices into cache
    val: np.ndarray
    test: np.ndarray
    n_classes: int


def split(frame: pd.DataFrame, fold: int, val_fraction: float, seed: int) -> tuple[np.ndarray, ...]:
    """test = the held-out fold; train/val = a stratified split of the other folds."""
    from sklearn.model_selection import train_test_split

    folds = frame["fold"].to_numpy()
    test = np.flatnonzero(folds == fold)
    rest = np.flatnonzero(folds != fold)
    train, val = train_test_split(rest, test_size=val_fraction, random_state=seed,
                                  stratify=frame["label"].to_numpy()[rest])
    return np.sort(train), np.sort(val), test


def decode(paths: list[str], side: int) -> torch.Tensor:
    """Decode every image once, resized to side x side: (N, 3, side, side) uint8."""
    def one(path: str) -> np.ndarray:
        img = images.load_rgb(Path(path)).resize((side, side), resample=Image.BILINEAR)
        return np.asarray(img).transpose(2, 0, 1)

    with ThreadPoolExecutor() as pool:
        return torch.from_numpy(np.stack(list(pool.map(one, paths))))


def load_data(manifest_path: Path, fold: int, params: TrainParams, device: torch.device) -> Data:
    """Read the manifest, split it and build the decoded cache (resident on a GPU)."""
    frame = shards.read_parquet(manifest_path)
    if fold not in set(frame["fold"]):
        raise TrainError(f"{manifest_path} has no fold {fold}; check data.run_folds against data.folds")
    train, val, test = split(frame, fold, params.val_fraction, params.seed)
    side = round(params.image_size * 8 / 7)
    cache = decode(frame["path"].tolist(), side).to(device)
    labels = torch.as_tensor(frame["label"].to_numpy().copy(), dtype=torch.int64, device=device)
    return Data(cache, labels, train, val, test, int(frame["label"].max()) + 1)


def augment(batch: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop of side `size` and horizontal flip per image: (B, 3, R, R) uint8 -> (B, 3, S, S)."""
    b, _, r, _ = batch.shape
    dev = batch.device
    off = torch.randint(0, r - size + 1, (2, b), generator=gen).to(dev)  # (2, B) top, left
    flip = (torch.rand(b, generator=gen) < 0.5).to(dev)  # (B,)
    ar = torch.arange(size, device=dev)
    rows = (off[0][:, None] + ar)[:, :, None]  # (B, S, 1)
    cols = off[1][:, None] + ar  # (B, S)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # (B, 1, S)
    idx = torch.arange(b, device=dev)[:, None, None]
    return batch.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)  # (B, 3, S, S)


def center(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop: (B, 3, R, R) -> (B, 3, S, S)."""
    o = (batch.shape[-1] - size) // 2
    return batch[..., o:o + size, o:o + size]


def to_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 crops -> normalised float input (channels_last on a GPU)."""
    x = normalise(batch)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def train_step(model, opt, x: torch.Tensor, y: torch.Tensor, labels_2d: torch.Tensor, loss: LossParams, scale: float,
               device: torch.device, dtype: torch.dtype) -> tuple[losses.LossParts, torch.Tensor]:
    """One forward, backward and Adam step on a ready batch: x (B, 3, S, S), y (B,) -> (loss parts, logits)."""
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits, theta, _ = model(x)
    parts = losses.combined(logits.float(), theta.float(), y, labels_2d, loss.hue_weight, loss.form, scale)
    opt.zero_grad(set_to_none=True)
    parts.total.backward()
    opt.step()
    return parts, logits


def train_epoch(model, opt, data: Data, labels_2d: torch.Tensor, loss: LossParams, params: TrainParams,
                epoch: int, device: torch.device, dtype: torch.dtype) -> dict:
    """One pass over the training split; returns mean loss parts, accuracy and images/s."""
    model.train()
    gen = torch.Generator().manual_seed(params.seed * 100_003 + epoch)  # order + augmentation
    torch.manual_seed(params.seed * 100_003 + epoch)  # dropout
    order = data.train[torch.randperm(len(data.train), generator=gen).numpy()]
    sums = {"ce": 0.0, "hue": 0.0, "total": 0.0, "correct": 0}
    start = time.perf_counter()
    scale = loss.scale(data.n_classes)
    for i in range(0, len(order) - 1, params.batch_size):
        idx = torch.as_tensor(order[i:i + params.batch_size], device=device)
        if len(idx) < 2:  # BatchNorm needs two samples
            continue
        x, y = to_input(augment(data.cache[idx], params.image_size, gen), device), data.labels[idx]
        parts, logits = train_step(model, opt, x, y, labels_2d, loss, scale, device, dtype)
        n = len(idx)
        values = torch.stack([parts.ce, parts.hue, parts.total]).detach().cpu()  # host sync point
        if not torch.isfinite(values).all():
            raise TrainError(f"loss is not finite at epoch {epoch + 1}, batch {i // params.batch_size} "
                             f"(ce={values[0]:.4g}, hue={values[1]:.4g}); lower train.lr or check loss.* params")
        sums["ce"] += float(values[0]) * n
        sums["hue"] += float(values[1]) * n
        sums["total"] += float(values[2]) * n
        sums["correct"] += int((logits.argmax(1) == y).sum())
    seconds = time.perf_counter() - start
    n = len(order)
    return {"loss_ce": sums["ce"] / n, "loss_hue": sums["hue"] / n, "loss_total": sums["total"] / n,
            "train_accuracy": sums["correct"] / n, "images_per_second": n / seconds}


@torch.no_grad()
def evaluate(model, data: Data, split_idx: np.ndarray, labels_2d: torch.Tensor, params: TrainParams,
             device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """(class-head accuracy, hue-head accuracy) on a split, centre crops."""
    model.eval()
    correct = hue_correct = 0
    for i in range(0, len(split_idx), 4 * params.batch_size):
        idx = torch.as_tensor(split_idx[i:i + 4 * params.batch_size], device=device)
        x, y = to_input(center(data.cache[idx], params.image_size), device), data.labels[idx]
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits, theta, _ = model(x)
        correct += int((logits.argmax(1) == y).sum())
        hue_correct += int((losses.hue_predict(theta.float(), labels_2d) == y).sum())
    n = max(len(split_idx), 1)
    return correct / n, hue_correct / n


def fingerprint(dataset: str, arch: str, fold: int, kind: str, params: TrainParams, loss: LossParams,
                manifest_path: Path) -> str:
    """What a checkpoint must match to be resumed: params, data and training code."""
    h = hashlib.sha256(json.dumps([dataset, arch, fold, kind, as_dict(params), as_dict(loss)], sort_keys=True,
                                  default=str).encode())
    h.update(Path(manifest_path).read_bytes())
    for name in CODE:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def load_checkpoint(path: Path, expected: str) -> dict | None:
    """A checkpoint of this exact run, or None (missing, unreadable or from other params)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # a torn or foreign file is never trusted
        return None
    return state if state.get("fingerprint") == expected else None


def run(dataset: str, arch: str, fold: int, kind: str, params: TrainParams, loss: LossParams, manifest_path: Path,
        checkpoint: Path, log_csv: Path, metrics_json: Path) -> dict:
    """The train stage: train (or resume) one run, then write its log and metrics."""
    from hue.models import HueNet

    loss = ONEHOT if kind == "onehot" else loss
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_precision("auto", device)
    data = load_data(manifest_path, fold, params, device)
    labels_2d = losses.angular_labels(loss.labels, data.n_classes, loss.seed).to(device)  # (M, 2)
    torch.manual_seed(params.seed + fold)  # same init for the one-hot and hue runs of a fold
    model = HueNet(arch, data.n_classes).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=params.epochs)
    fp = fingerprint(dataset, arch, fold, kind, params, loss, manifest_path)
    log: list[dict] = []
    state = load_checkpoint(checkpoint, fp)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        log = state["log"]
    for epoch in progress(range(len(log), params.epochs), desc=f"train {dataset}/{arch}/{kind}/fold{fold}"):
        lr = opt.param_groups[0]["lr"]
        row = {"epoch": epoch + 1, "lr": lr,
               **train_epoch(model, opt, data, labels_2d, loss, params, epoch, device, dtype)}
        sched.step()
        row["val_accuracy"], row["val_hue_accuracy"] = evaluate(model, data, data.val, labels_2d, params, device, dtype)
        row["test_accuracy"], row["test_hue_accuracy"] = evaluate(model, data, data.test, labels_2d, params, device,
                                                                  dtype)
        if kind == "onehot":
            row["loss_hue"] = row["val_hue_accuracy"] = row["test_hue_accuracy"] = math.nan  # no hue term
        log.append(row)
        with shards.atomic_file(checkpoint) as tmp:
            torch.save({"fingerprint": fp, "model": model.state_dict(), "opt": opt.state_dict(),
                        "sched": sched.state_dict(), "log": log}, tmp)
    return write_outputs(dataset, arch, fold, kind, params, loss, log, data, log_csv, metrics_json)


def write_outputs(dataset: str, arch: str, fold: int, kind: str, params: TrainParams, loss: LossParams,
                  log: list[dict], data: Data, log_csv: Path, metrics_json: Path) -> dict:
    """The per-epoch CSV (DVC plots) and the run's metrics JSON."""
    frame = pd.DataFrame(log)
    with shards.atomic_file(log_csv) as tmp:
        frame.round(6).to_csv(tmp, index=False)
    best = int(frame["val_accuracy"].to_numpy().argmax())  # first best epoch
    last = log[-1]
    metrics = {
        "dataset": dataset, "arch": arch, "fold": fold, "loss": kind, "epochs": params.epochs,
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
        "test_accuracy": last["test_accuracy"],
        "test_accuracy_best_val": log[best]["test_accuracy"], "best_val_epoch": best + 1,
        "val_accuracy_best": log[best]["val_accuracy"],
        "hue_test_accuracy": None if kind == "onehot" else last["test_hue_accuracy"],
        "final_loss_ce": last["loss_ce"], "final_loss_hue": None if kind == "onehot" else last["loss_hue"],
        "images_per_second": float(np.mean([r["images_per_second"] for r in log])),
        "hue_weight": loss.hue_weight, "form": None if kind == "onehot" else loss.form,
        "labels": None if kind == "onehot" else loss.labels,
        "distance_scale": None if kind == "onehot" else loss.scale(data.n_classes),
    }
    shards.write_json(metrics_json, metrics)
    return metrics
