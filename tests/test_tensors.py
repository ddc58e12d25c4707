import pytest
import torch

from hue import tensors


def test_precision_resolution():
    assert tensors.resolve_precision("fp32", torch.device("cuda")) == torch.float32
    assert tensors.resolve_precision("auto", torch.device("cuda")) == torch.bfloat16
    assert tensors.resolve_precision("bf16", torch.device("cpu")) == torch.bfloat16


def test_normalise_uses_imagenet_statistics():
    x = torch.full((1, 3, 2, 2), 255, dtype=torch.uint8)
    out = tensors.normalise(x)
    assert torch.allclose(out[0, :, 0, 0], (1 - torch.tensor(tensors.IMAGENET_MEAN)) / torch.tensor(tensors.IMAGENET_STD))


def test_native_bf16_is_read_from_the_isa_flags(monkeypatch):
    flags = {"avx512f": True, "avx512_bf16": False, "amx_bf16": False}  # what an AVX-512 CPU without bf16 reports
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: flags, raising=False)
    assert not tensors.native_cpu_bf16()
    assert tensors.resolve_precision("auto", torch.device("cpu")) == torch.float32
    flags["amx_bf16"] = True  # a Sapphire Rapids: torch's kernel level still reads "AVX512"
    assert tensors.native_cpu_bf16()
    assert tensors.resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)  # a torch without the query
    assert tensors.resolve_precision("auto", torch.device("cpu")) == torch.float32


def test_training_is_bf16_on_cuda_only(monkeypatch):
    monkeypatch.setattr(tensors, "native_cpu_bf16", lambda: True)
    assert tensors.training_precision(torch.device("cpu")) == torch.float32
    assert tensors.training_precision(torch.device("cuda")) == torch.bfloat16


def test_exact_fp32_turns_tf32_off_inside_and_restores_the_flags():
    m, c = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = m.allow_tf32, m.allow_fp16_reduced_precision_reduction, c.allow_tf32
    try:
        m.allow_tf32 = m.allow_fp16_reduced_precision_reduction = c.allow_tf32 = True  # what a user may have set
        with pytest.raises(RuntimeError, match="inside"), tensors.exact_fp32():
            assert not (m.allow_tf32 or m.allow_fp16_reduced_precision_reduction or c.allow_tf32)
            raise RuntimeError("inside")
        assert m.allow_tf32 and m.allow_fp16_reduced_precision_reduction and c.allow_tf32
    finally:
        m.allow_tf32, m.allow_fp16_reduced_precision_reduction, c.allow_tf32 = saved


def test_deterministic_cudnn_inside_and_the_flags_restored_after():
    c = torch.backends.cudnn
    saved = c.deterministic, c.benchmark
    try:
        c.deterministic, c.benchmark = False, True  # what a user may have set
        with pytest.raises(RuntimeError, match="inside"), tensors.deterministic_cudnn():
            assert c.deterministic and not c.benchmark
            raise RuntimeError("inside")
        assert not c.deterministic and c.benchmark
    finally:
        c.deterministic, c.benchmark = saved
