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
