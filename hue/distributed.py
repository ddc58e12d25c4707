"""One training run over several processes: torchrun + DistributedDataParallel, the standard engine.

Every rank sees the same global batch order and augmentation draws and trains on its slice
of each batch; the loss is scaled so that DDP's gradient average is the global batch mean,
and BatchNorm statistics are synchronised, so N processes compute what one process with the
same global batch computes, up to float reduction order. Rank 0 writes every file.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from hue.errors import HueError


class DistributedError(HueError):
    """The multi-process run could not start or a rank failed."""


@dataclasses.dataclass(frozen=True)
class Context:
    """Where this process sits in the run."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the one that writes files."""
        return self.rank == 0

    def local(self, indices: np.ndarray) -> np.ndarray:
        """This rank's contiguous slice of a global batch (sizes differ by at most one)."""
        return np.array_split(indices, self.world)[self.rank]


def launched() -> bool:
    """Whether this process was started by torchrun."""
    return "LOCAL_RANK" in os.environ


def check_devices(per_node: int) -> None:
    """Fail in one line when a node would start more GPU processes than it has GPUs."""
    if torch.cuda.is_available() and per_node > torch.cuda.device_count():
        raise DistributedError(f"train.devices = {per_node} processes per node, but this machine has "
                               f"{torch.cuda.device_count()} CUDA device(s): set train.devices <= "
                               f"{torch.cuda.device_count()}, or hide the GPUs (CUDA_VISIBLE_DEVICES=) "
                               "to train on the CPU with gloo")


def torchrun(devices: int, argv: list[str]) -> int:
    """Rerun this command under torchrun with `devices` processes; returns its exit code."""
    check_devices(devices)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={devices}", *argv]
    code = subprocess.call(cmd)
    if code != 0:
        raise DistributedError(f"training under torchrun with {devices} processes failed (exit {code}); "
                               "the failing rank's message is above")
    return code


def setup() -> Context:
    """Join the process group torchrun set up (gloo on CPU, NCCL on GPUs); one process: no group."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Context(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    check_devices(int(os.environ.get("LOCAL_WORLD_SIZE", world)))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Context(rank, world, device)


def teardown(ctx: Context) -> None:
    """Leave the process group."""
    if ctx.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def wrap(model: nn.Module, ctx: Context) -> nn.Module:
    """DDP with synchronised BatchNorm (torch's on GPUs; an all-reduce version on the CPU, where torch has none)."""
    if ctx.world == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if ctx.device.type == "cuda":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(model, device_ids=[ctx.device.index])
    return DistributedDataParallel(convert_global_batchnorm(model))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (for state dicts and evaluation)."""
    return model.module if hasattr(model, "module") else model


def all_sum(values: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum a tensor over ranks (a host sync point)."""
    if ctx.world > 1:
        values = values.to(ctx.device)
        dist.all_reduce(values)
    return values.cpu()


def gather(array: np.ndarray, ctx: Context) -> np.ndarray:
    """Concatenate every rank's rows in rank order."""
    if ctx.world == 1:
        return array
    parts: list = [None] * ctx.world
    dist.all_gather_object(parts, array)
    return np.concatenate(parts)


def barrier(ctx: Context) -> None:
    """Wait for every rank (after rank 0 wrote a file the others may read)."""
    if ctx.world > 1:
        dist.barrier()


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics span every rank's slice (differentiable all-reduce, any backend)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, C, H, W); plain BatchNorm outside multi-process training."""
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.tensor([x.numel() // c], dtype=x.dtype, device=x.device)
        total = all_reduce(torch.cat([x.sum((0, 2, 3)), count]))  # (C + 1,) global sums and count
        n = total[c]
        mean = total[:c] / n  # (C,)
        centred = x - mean[None, :, None, None]
        var = all_reduce(centred.pow(2).sum((0, 2, 3))) / n  # (C,) biased, two-pass like F.batch_norm
        with torch.no_grad():
            self.num_batches_tracked += 1
            m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        return y * self.weight[None, :, None, None] + self.bias[None, :, None, None]


def convert_global_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d by GlobalBatchNorm2d, keeping parameters and running statistics."""
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, GlobalBatchNorm2d):
        new = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_global_batchnorm(child))
    return module


def local_loss_scale(n_local: int, n_global: int, ctx: Context) -> float:
    """Factor on a rank's mean loss so that DDP's average of gradients is the global batch mean."""
    return n_local * ctx.world / n_global

