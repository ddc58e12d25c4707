"""Every registered backbone on tiny inputs (random weights, CPU); weights from a planted checkpoint."""

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision

from hue import models

TINY = {"inception_v3": 107}  # smallest inputs that keep a spatial grid; 64 px for the others


@pytest.mark.parametrize("name", sorted(models.BACKBONES))
def test_bottleneck_shape_and_sign(name):
    spec = models.get(name)
    net, weights_id = models.bottleneck(name, "random", seed=0)
    size = TINY.get(name, 64)
    with torch.no_grad():
        fmap = net(torch.randn(2, 3, size, size))
    assert fmap.ndim == 4 and fmap.shape[:2] == (2, spec.channels) and fmap.shape[2] >= 1
    if spec.post_relu:
        assert fmap.min() >= 0  # DenseNet's tap is after norm5 + ReLU
    assert weights_id == "random:seed=0"


def test_densenet_tap_is_after_the_final_relu_not_norm5():
    net, _ = models.bottleneck("densenet201", "random")
    with torch.no_grad():
        fmap = net(torch.randn(1, 3, 64, 64))
    assert fmap.min() >= 0 and (fmap == 0).any()


def test_tap_is_a_copy_not_an_alias():
    net, _ = models.bottleneck("resnet18", "random")
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a = net(x)
        a.zero_()
        assert net(x).abs().sum() > 0


@pytest.mark.parametrize("node", ["layer3", "layer4", "layer1.0.relu", "features.29"])
def test_hooked_tap_equals_the_fx_feature_extractor(node):
    name = "vgg16" if node.startswith("features") else "resnet18"
    hooked = models.Bottleneck(models.build(name, "random", seed=0)[0], node)
    assert hooked.node == node  # a submodule: the forward hook, no trace
    traced = models._traced(models.build(name, "random", seed=0)[0].eval(), node)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # layer1.0.relu runs twice per block: both taps take its first call
        assert torch.equal(hooked(x), traced(x)["bottleneck"])


def test_a_functional_node_goes_through_the_fx_extractor():
    model, _ = models.build("resnet18", "random", seed=0)
    net = models.Bottleneck(model, "flatten")  # torch.flatten in ResNet.forward: no module to hook
    assert net.node is None
    with torch.no_grad():
        assert net(torch.randn(2, 3, 64, 64)).shape == (2, 512)


def test_a_module_the_forward_never_reaches_fails_in_one_line():
    model, _ = models.build("resnet18", "random", seed=0)
    model.spare = torch.nn.ReLU()  # a submodule ResNet.forward never calls
    with pytest.raises(models.ModelError, match="never reached node 'spare'"):
        models.Bottleneck(model, "spare")(torch.randn(1, 3, 64, 64))


def test_the_tap_leaves_the_callers_model_whole():
    model, _ = models.build("resnet18", "random", seed=0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        models.Bottleneck(model, "layer3")(x)
        assert model(x).shape == (1, 1000)  # no hook left behind to end its forward


def test_random_weights_are_seeded():
    a, _ = models.build("resnet18", "random", seed=3)
    b, _ = models.build("resnet18", "random", seed=3)
    assert torch.equal(a.conv1.weight, b.conv1.weight)


def test_unknown_backbone_lists_known_ones():
    with pytest.raises(models.ModelError, match="unknown backbone 'alexnet'; known: \\['densenet201'"):
        models.get("alexnet")


def test_imagenet_weights_load_offline_from_planted_checkpoint(tmp_path, monkeypatch):
    from torchvision.models import get_model_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = get_model_weights("resnet18").DEFAULT.url
    planted, _ = models.build("resnet18", "random", seed=11)
    ckpt = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    ckpt.parent.mkdir(parents=True)
    torch.save(planted.state_dict(), ckpt)
    model, weights_id = models.build("resnet18", "imagenet")
    assert torch.equal(model.conv1.weight, planted.conv1.weight)
    assert weights_id == "sha256:" + hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_imagenet_weights_without_network_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("https_proxy", "http://127.0.0.1:9")
    with pytest.raises(models.ModelError) as err:
        models.build("resnet18", "imagenet")
    assert "could not get ImageNet weights https://download.pytorch.org/models/resnet18" in str(err.value)
    assert "hub/checkpoints" in str(err.value) and "\n" not in str(err.value)


def test_state_dict_path(tmp_path):
    src, _ = models.build("resnet18", "random", seed=5)
    torch.save(src.state_dict(), tmp_path / "w.pt")
    model, weights_id = models.build("resnet18", str(tmp_path / "w.pt"))
    assert torch.equal(model.fc.weight, src.fc.weight) and weights_id.startswith("sha256:")
    with pytest.raises(models.ModelError, match="not a state dict of efficientnet_b0"):
        models.build("efficientnet_b0", str(tmp_path / "w.pt"))
    with pytest.raises(models.ModelError, match="no such file"):
        models.build("resnet18", str(tmp_path / "missing.pt"))


def test_loaded_weights_skip_the_init_and_equal_a_copying_load(tmp_path):
    src, _ = models.build("resnet18", "random", seed=7)
    state = {k: v.half() if v.is_floating_point() else v for k, v in src.state_dict().items()}
    torch.save(state, tmp_path / "half.pt")
    model, _ = models.build("resnet18", str(tmp_path / "half.pt"))
    copied, _ = models.build("resnet18", "random", seed=8)
    copied.load_state_dict(state)  # the copying load casts to float32
    for (name, a), (_, b) in zip(model.state_dict().items(), copied.state_dict().items()):
        assert a.dtype == b.dtype and torch.equal(a, b), name
    partial = {k: v for k, v in src.state_dict().items() if k != "fc.bias"}
    with pytest.raises(RuntimeError, match="fc.bias"):
        models.loaded(lambda: torchvision.models.resnet18(), partial)


def test_read_state_maps_zip_files_and_reads_legacy_ones_whole(tmp_path):
    src, _ = models.build("resnet18", "random", seed=3)
    torch.save(src.state_dict(), tmp_path / "zip.pt")
    torch.save(src.state_dict(), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    mapped, whole = models.read_state(tmp_path / "zip.pt"), models.read_state(tmp_path / "legacy.pt")
    maps = Path("/proc/self/maps")
    if maps.exists():  # Linux: the zip file is mapped into the process, the legacy one is not
        text = maps.read_text()
        assert str(tmp_path / "zip.pt") in text and str(tmp_path / "legacy.pt") not in text
    for name, value in src.state_dict().items():
        assert torch.equal(mapped[name], value) and torch.equal(whole[name], value), name
    model, _ = models.build("resnet18", str(tmp_path / "legacy.pt"))
    assert torch.equal(model.conv1.weight, src.conv1.weight)


def test_loaded_fails_on_a_tensor_no_state_holds():
    class Scaled(torch.nn.Linear):
        def __init__(self):
            super().__init__(2, 2)
            self.register_buffer("scale", torch.ones(2), persistent=False)  # never in a state dict

    with pytest.raises(models.ModelError, match="does not hold \\['scale'\\]"):
        models.loaded(Scaled, torch.nn.Linear(2, 2).state_dict())
