"""Training from scratch, docs/method.md §5: one run = dataset x arch x held-out fold x loss.

Images are decoded once into a uint8 cache at 8/7 of the training size; crops, flips and
normalisation happen on the device (on a GPU the cache stays resident there). Every epoch
ends with an atomic resume state outside DVC's outputs, so a killed run resumes from its
last finished epoch and ends with the same numbers as an uninterrupted one, while the model
itself is a plain output that DVC's run-cache can restore. With train.devices > 1 the run is
spread over torchrun processes (hue.distributed).
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

from hue import distributed, images, losses, paths, shards
from hue.cli import progress
from hue.config import LossParams, TrainParams, as_dict
from hue.errors import HueError
from hue.tensors import deterministic_cudnn, normalise, training_precision

ONEHOT = LossParams(hue_weight=0.0)  # what a one-hot run uses: it reads no loss.* param
CODE = ("train.py", "losses.py", "models.py", "distributed.py")  # a change here invalidates resume states
SINGLE = distributed.Context()


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
        return images.load_resized(Path(path), (side, side)).transpose(2, 0, 1)  # (3, side, side)

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


def crop_draws(n: int, side: int, size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop offsets (2, n) (top, left) and flips (n,) of a whole global batch, in one fixed order."""
    off = torch.randint(0, side - size + 1, (2, n), generator=gen)
    flip = torch.rand(n, generator=gen) < 0.5
    return off, flip


def apply_crops(batch: torch.Tensor, off: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop and flip each image as drawn: (B, 3, R, R) uint8 -> (B, 3, S, S)."""
    b, dev = len(batch), batch.device
    off, flip = off.to(dev), flip.to(dev)
    ar = torch.arange(size, device=dev)
    rows = (off[0][:, None] + ar)[:, :, None]  # (B, S, 1)
    cols = off[1][:, None] + ar  # (B, S)
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, :]  # (B, 1, S)
    idx = torch.arange(b, device=dev)[:, None, None]
    return batch.permute(0, 2, 3, 1)[idx, rows, cols].permute(0, 3, 1, 2)  # (B, 3, S, S)


def augment(batch: torch.Tensor, size: int, gen: torch.Generator) -> torch.Tensor:
    """Random crop of side `size` and horizontal flip per image: (B, 3, R, R) uint8 -> (B, 3, S, S)."""
    return apply_crops(batch, *crop_draws(len(batch), batch.shape[-1], size, gen), size)


def center(batch: torch.Tensor, size: int) -> torch.Tensor:
    """Centre crop: (B, 3, R, R) -> (B, 3, S, S)."""
    o = (batch.shape[-1] - size) // 2
    return batch[..., o:o + size, o:o + size]


def to_input(batch: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 crops -> normalised float input (channels_last on a GPU)."""
    x = normalise(batch)
    return x.contiguous(memory_format=torch.channels_last) if device.type == "cuda" else x


def train_step(model, opt, x: torch.Tensor, y: torch.Tensor, labels_2d: torch.Tensor, loss: LossParams, scale: float,
               device: torch.device, dtype: torch.dtype, loss_scale: float = 1.0,
               diagnose: bool = False) -> tuple[losses.LossParts, torch.Tensor, torch.Tensor | None]:
    """One forward, backward and Adam step on a ready batch: x (B, 3, S, S), y (B,) -> (loss parts, logits, diag).

    diag (with `diagnose`): (hue/CE gradient-norm ratio at the pooled features, mean hue-logit spread).
    `loss_scale` turns a rank's mean loss into its share of the global batch mean (DDP averages).
    """
    with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
        logits, theta, features = model(x)
    parts = losses.combined(logits.float(), theta.float(), y, labels_2d, loss.hue_weight, loss.form, scale)
    diag = None
    if diagnose:
        ratio = losses.gradient_ratio(parts.ce, loss.hue_weight * parts.hue, features)
        spread = losses.logit_spread(theta.float(), labels_2d, scale).mean() if loss.form == "softmax" \
            else torch.tensor(math.nan)
        diag = torch.stack([ratio.detach().float().cpu(), spread.detach().float().cpu()])
    opt.zero_grad(set_to_none=True)
    (parts.total * loss_scale).backward()
    opt.step()
    return parts, logits, diag


def train_epoch(model, opt, data: Data, labels_2d: torch.Tensor, loss: LossParams, params: TrainParams,
                epoch: int, device: torch.device, dtype: torch.dtype, ctx: distributed.Context = SINGLE,
                diagnose: bool = False) -> dict:
    """One pass over the training split; returns mean loss parts, accuracy, diagnostics and images/s.

    Every rank draws the same order and crops for the whole global batch, then trains on its slice.
    """
    model.train()
    gen = torch.Generator().manual_seed(params.seed * 100_003 + epoch)  # order + augmentation
    torch.manual_seed(params.seed * 100_003 + epoch)  # dropout
    order = data.train[torch.randperm(len(data.train), generator=gen).numpy()]
    sums = torch.zeros(8, dtype=torch.float64)  # ce, hue, total, correct, ratio, spread (n-weighted), n, n_diag
    side = data.cache.shape[-1]
    start = time.perf_counter()
    scale = loss.scale(data.n_classes)
    for i in range(0, len(order) - 1, params.batch_size):
        batch = order[i:i + params.batch_size]
        if len(batch) < max(2, ctx.world):  # BatchNorm needs two samples; every rank needs one
            continue
        off, flip = crop_draws(len(batch), side, params.image_size, gen)
        mine = ctx.local(np.arange(len(batch)))
        idx = torch.as_tensor(batch[mine], device=device)
        x = to_input(apply_crops(data.cache[idx], off[:, mine], flip[mine], params.image_size), device)
        y = data.labels[idx]
        parts, logits, diag = train_step(model, opt, x, y, labels_2d, loss, scale, device, dtype,
                                         distributed.local_loss_scale(len(mine), len(batch), ctx), diagnose)
        values = torch.stack([parts.ce, parts.hue, parts.total]).detach().double().cpu()  # host sync point
        if not torch.isfinite(values).all():
            raise TrainError(f"loss is not finite at epoch {epoch + 1}, batch {i // params.batch_size} "
                             f"(ce={values[0]:.4g}, hue={values[1]:.4g}); lower train.lr or check loss.* params")
        n = len(mine)
        sums[:3] += values * n
        sums[3] += int((logits.argmax(1) == y).sum())
        if diag is not None:
            sums[4:6] += diag.double() * n
            sums[7] += n
        sums[6] += n
    sums = distributed.all_sum(sums, ctx)
    seconds = time.perf_counter() - start
    n, n_diag = float(sums[6]), float(sums[7]) or math.nan
    return {"loss_ce": float(sums[0]) / n, "loss_hue": float(sums[1]) / n, "loss_total": float(sums[2]) / n,
            "train_accuracy": float(sums[3]) / n, "grad_ratio": float(sums[4]) / n_diag,
            "logit_spread": float(sums[5]) / n_diag, "images_per_second": n / seconds}


@torch.no_grad()
def predict(model, data: Data, split_idx: np.ndarray, params: TrainParams, device: torch.device, dtype: torch.dtype,
            ctx: distributed.Context = SINGLE) -> tuple[np.ndarray, np.ndarray]:
    """Class predictions (n,) and hue points theta' (n, 2) on centre crops of a split, shared out over ranks."""
    model.eval()
    preds, thetas = [np.zeros(0, np.int64)], [np.zeros((0, 2), np.float32)]
    mine = ctx.local(split_idx)
    for i in range(0, len(mine), 4 * params.batch_size):
        idx = torch.as_tensor(mine[i:i + 4 * params.batch_size], device=device)
        x = to_input(center(data.cache[idx], params.image_size), device)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            logits, theta, _ = model(x)
        preds.append(logits.argmax(1).cpu().numpy())  # host sync point
        thetas.append(theta.float().cpu().numpy())
    return distributed.gather(np.concatenate(preds), ctx), distributed.gather(np.concatenate(thetas), ctx)


def accuracies(data: Data, split_idx: np.ndarray, pred: np.ndarray, theta: np.ndarray,
               labels_2d: torch.Tensor) -> tuple[float, float]:
    """(class-head accuracy, hue-head accuracy: nearest angular label to theta')."""
    truth = data.labels[torch.as_tensor(split_idx)].cpu().numpy() if len(split_idx) else np.zeros(0, np.int64)
    hue_pred = losses.hue_predict(torch.from_numpy(theta), labels_2d.cpu()).numpy()
    n = max(len(split_idx), 1)
    return float((pred == truth).sum() / n), float((hue_pred == truth).sum() / n)


def fingerprint(dataset: str, arch: str, fold: int, kind: str, params: TrainParams, loss: LossParams,
                manifest_path: Path) -> str:
    """What a resume state must match to be resumed: params, data and training code.

    train.devices is left out: N processes train what one does (up to float rounding), so a run
    may resume on another number of devices.
    """
    run_params = {k: v for k, v in as_dict(params).items() if k != "devices"}
    h = hashlib.sha256(json.dumps([dataset, arch, fold, kind, run_params, as_dict(loss)], sort_keys=True,
                                  default=str).encode())
    h.update(Path(manifest_path).read_bytes())
    for name in CODE:
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def load_state(path: Path, expected: str) -> dict | None:
    """A resume state of this exact run, or None (missing, unreadable or from other params)."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file is never trusted
        return None
    return state if isinstance(state, dict) and state.get("fingerprint") == expected else None


@dataclasses.dataclass(frozen=True)
class Outputs:
    """Where one run writes: the model (DVC output), its resume state (not an output) and its logs."""

    checkpoint: Path
    resume: Path
    log_csv: Path
    detail_json: Path
    timings_json: Path


def run(dataset: str, arch: str, fold: int, kind: str, params: TrainParams, loss: LossParams, manifest_path: Path,
        out: Outputs) -> dict:
    """The train stage: train (or resume) one run, then write its model, log and numbers (rank 0)."""
    ctx = distributed.setup()
    try:
        with deterministic_cudnn():  # reruns and resumes on a GPU pick the same convolution algorithms
            return _run(dataset, arch, fold, kind, params, ONEHOT if kind == "onehot" else loss, manifest_path, out,
                        ctx)
    finally:
        distributed.teardown(ctx)


def _run(dataset: str, arch: str, fold: int, kind: str, params: TrainParams, loss: LossParams, manifest_path: Path,
         out: Outputs, ctx: distributed.Context) -> dict:
    """Train every remaining epoch, checkpointing each one, then predict the held-out fold."""
    device = ctx.device
    dtype = training_precision(device)
    data = load_data(manifest_path, fold, params, device)
    labels_2d = losses.angular_labels(loss.labels, data.n_classes, loss.seed).to(device)  # (M, 2)
    torch.manual_seed(params.seed + fold)  # same init for the one-hot and hue runs of a fold
    model = distributed.wrap(placed_net(arch, data.n_classes, device), ctx)
    opt = torch.optim.Adam(model.parameters(), lr=params.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=params.epochs)
    fp = fingerprint(dataset, arch, fold, kind, params, loss, manifest_path)
    log: list[dict] = []
    state = load_state(out.resume, fp)
    if state is not None:
        distributed.unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        log = state["log"]
    diagnose = kind == "hue"
    for epoch in progress(range(len(log), params.epochs), desc=f"train {dataset}/{arch}/{kind}/fold{fold}",
                          disable=not ctx.main):
        row = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
               **train_epoch(model, opt, data, labels_2d, loss, params, epoch, device, dtype, ctx, diagnose)}
        sched.step()
        for name, idx in (("val", data.val), ("test", data.test)):
            pred, theta = predict(model, data, idx, params, device, dtype, ctx)
            row[f"{name}_accuracy"], row[f"{name}_hue_accuracy"] = accuracies(data, idx, pred, theta, labels_2d)
        if kind == "onehot":
            row["loss_hue"] = row["val_hue_accuracy"] = row["test_hue_accuracy"] = math.nan  # no hue term
        log.append(row)
        if ctx.main:
            save({"fingerprint": fp, "model": distributed.unwrap(model).state_dict(), "opt": opt.state_dict(),
                  "sched": sched.state_dict(), "log": log}, out.resume)
        distributed.barrier(ctx)
    pred, theta = predict(model, data, data.test, params, device, dtype, ctx)
    metrics = None
    if ctx.main:
        # no fingerprint here (it hashes the code files): an edit that leaves the weights alone leaves the
        # model file, and so every DVC hash downstream of it, alone
        save({"arch": arch, "n_classes": data.n_classes,
              "model": distributed.unwrap(model).state_dict(), "log": without_timings(log),
              "test_index": torch.as_tensor(data.test), "test_pred": torch.as_tensor(pred),
              "test_theta": torch.as_tensor(theta)}, out.checkpoint)
        metrics = write_outputs(dataset, arch, fold, kind, params, loss, log, data, out)
        out.resume.unlink(missing_ok=True)  # the run is complete: its model is the output now
    distributed.barrier(ctx)
    return metrics


TIMING_COLUMNS = ("images_per_second",)


def placed_net(arch: str, n_classes: int, device: torch.device) -> torch.nn.Module:
    """A fresh HueNet (init from torch's global RNG) on `device`: channels-last on CUDA, NCHW on the CPU (faster)."""
    from hue.models import HueNet

    net = HueNet(arch, n_classes).to(device)
    return net.to(memory_format=torch.channels_last) if device.type == "cuda" else net


def save(state: dict, path: Path) -> None:
    """torch.save atomically, through a file object: given a path, torch names the archive inside
    after the (random) temp file, so the same state would hash differently run after run."""
    with shards.atomic_file(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def without_timings(log: list[dict]) -> list[dict]:
    """The per-epoch log without wall-clock numbers, so that a rerun writes the same bytes."""
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in log]


def write_outputs(dataset: str, arch: str, fold: int, kind: str, params: TrainParams, loss: LossParams,
                  log: list[dict], data: Data, out: Outputs) -> dict:
    """The per-epoch CSV, the run's numbers and its timings (apart: they vary from run to run)."""
    frame = pd.DataFrame(log)
    frame["log_m"] = math.log(data.n_classes)  # L_hue's value when theta' carries no class information
    with shards.atomic_file(out.log_csv) as tmp:
        frame.drop(columns=list(TIMING_COLUMNS)).round(6).to_csv(tmp, index=False)
    shards.write_json(out.timings_json, {"run": paths.run_name(dataset, arch, kind, fold), "devices": params.devices,
                                         "images_per_second": [r["images_per_second"] for r in log]})
    best = int(frame["val_accuracy"].to_numpy().argmax())  # first best epoch
    last = log[-1]
    hue = kind != "onehot"
    metrics = {
        "dataset": dataset, "arch": arch, "fold": fold, "loss": kind, "epochs": params.epochs,
        "n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
        "test_accuracy": last["test_accuracy"],
        "test_accuracy_best_val": log[best]["test_accuracy"], "best_val_epoch": best + 1,
        "val_accuracy_best": log[best]["val_accuracy"],
        "hue_test_accuracy": last["test_hue_accuracy"] if hue else None,
        "final_loss_ce": last["loss_ce"], "final_loss_hue": last["loss_hue"] if hue else None,
        "final_grad_ratio": last["grad_ratio"] if hue else None, "log_m": math.log(data.n_classes),
        "hue_weight": loss.hue_weight, "form": loss.form if hue else None, "labels": loss.labels if hue else None,
        "distance_scale": loss.scale(data.n_classes) if hue else None,
    }
    shards.write_json(out.detail_json, metrics)
    return metrics
