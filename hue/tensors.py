"""Device-side helpers shared by the stages: precision, exact fp32 and cuDNN settings, input normalisation."""

from __future__ import annotations

import contextlib
import functools

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def native_cpu_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); emulated bf16 is slower than fp32.

    torch.backends.cpu.get_cpu_capability() names kernel levels only (AVX512 on a Sapphire Rapids),
    so the ISA flags come from torch.cpu.get_capabilities (a torch without it: False, fp32).
    """
    caps = getattr(torch.cpu, "get_capabilities", dict)()
    return bool(caps.get("avx512_bf16") or caps.get("amx_bf16"))


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """The autocast dtype for `extract.precision` on this device."""
    if precision == "fp32":
        return torch.float32
    if precision == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" or native_cpu_bf16() else torch.float32


def training_precision(device: torch.device) -> torch.dtype:
    """The training autocast dtype: bf16 on CUDA, fp32 on any CPU.

    bf16 training on a CPU with AMX was slower than fp32 (bench/train.py: 493-501 vs 532-534
    img/s, resnet18 at 32 px), unlike extraction, whose forward ran 3x faster (bench/RESULTS.md).
    """
    return torch.bfloat16 if device.type == "cuda" else torch.float32


@contextlib.contextmanager
def _backend_flags(owner, **values: bool):
    """Set process-wide backend flags of `owner` inside; restored on exit, so nesting is safe (threads share them)."""
    saved = {name: getattr(owner, name) for name in values}
    for name, value in values.items():
        setattr(owner, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(owner, name, value)


@contextlib.contextmanager
def exact_fp32():
    """fp32 products in fp32 on CUDA inside: no TF32 in cuBLAS or cuDNN, no reduced fp16 reductions (CPU: no effect)."""
    with _backend_flags(torch.backends.cuda.matmul, allow_tf32=False, allow_fp16_reduced_precision_reduction=False), \
            _backend_flags(torch.backends.cudnn, allow_tf32=False):
        yield


def deterministic_cudnn():
    """cuDNN's deterministic algorithms, none autotuned, inside (reruns and resumes); restored on exit."""
    return _backend_flags(torch.backends.cudnn, deterministic=True, benchmark=False)


@functools.cache
def _imagenet_moments(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """ImageNet mean and std as (1, 3, 1, 1) on `device`, made once (on a GPU each copy waits for the queue)."""
    return (torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1),
            torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1))


def normalise(batch: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) uint8 -> ImageNet-normalised float32."""
    mean, std = _imagenet_moments(batch.device)
    return (batch.float() / 255.0 - mean) / std
