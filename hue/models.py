"""Backbone registry: torchvision models cut at their spatial bottleneck (docs/method.md §1)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch
from torch import nn

from hue.errors import HueError


class ModelError(HueError):
    """Unknown backbone or unusable weights."""


@dataclasses.dataclass(frozen=True)
class Backbone:
    """A registry entry: which torchvision model and where its bottleneck is."""

    name: str  # torchvision model name, also the params.yaml name
    node: str  # torchvision.models.feature_extraction node of the bottleneck
    input_size: int  # native square input size in pixels
    channels: int  # N, the length of a pixel vector
    post_relu: bool  # the tapped output is after a ReLU (non-negative)
    kwargs: tuple = ()  # extra constructor arguments


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone("densenet201", "relu", 224, 1920, True),  # features -> norm5 -> functional ReLU, 7x7x1920
        Backbone("resnet18", "layer4", 224, 512, True),  # 7x7x512
        Backbone("resnet50", "layer4", 224, 2048, True),  # 7x7x2048
        Backbone("vgg16", "features.29", 224, 512, True),  # relu5_3, 14x14x512 before pool5
        Backbone("inception_v3", "Mixed_7c", 299, 2048, True, (("aux_logits", True), ("init_weights", True))),  # 8x8x2048
        Backbone("efficientnet_b0", "features", 224, 1280, False),  # SiLU output, 7x7x1280
    )
}


def get(name: str) -> Backbone:
    """Registry lookup that fails with the list of known names."""
    if name not in BACKBONES:
        raise ModelError(f"unknown backbone {name!r}; known: {sorted(BACKBONES)}")
    return BACKBONES[name]


def build(name: str, weights: str, seed: int = 0) -> tuple[nn.Module, str]:
    """The full torchvision classifier with `weights` loaded, and a hash identifying them.

    weights: 'imagenet' (torchvision's weights API: downloaded once into $TORCH_HOME, then read
    from there offline), 'random' (seeded init) or a path to a state-dict file.
    """
    from torchvision.models import get_model, get_model_weights

    spec = get(name)
    kwargs = dict(spec.kwargs)
    if weights == "random":
        torch.manual_seed(seed)
        return get_model(name, weights=None, **kwargs), f"random:seed={seed}"
    if weights == "imagenet":
        w = get_model_weights(name).DEFAULT
        try:
            kwargs.pop("init_weights", None)
            model = get_model(name, weights=w, **kwargs)
        except (OSError, RuntimeError) as err:  # urllib errors are OSErrors
            raise ModelError(
                f"{name}: could not get ImageNet weights {w.url} ({type(err).__name__}); download that file into "
                f"{checkpoint_dir()}/ by hand, or set extract.weights to 'random' or a state-dict path"
            ) from None
        return model, "sha256:" + file_sha256(checkpoint_dir() / Path(w.url).name)
    path = Path(weights)
    if not path.is_file():
        raise ModelError(f"extract.weights = {weights!r}: no such file; use 'imagenet', 'random' or a state-dict path")
    try:
        state = read_state(path)
        model = loaded(lambda: get_model(name, weights=None, **kwargs),
                       state.get("state_dict", state) if isinstance(state, dict) else state)
    except Exception as err:  # pickle, shape and key errors alike: one line
        raise ModelError(f"{path}: not a state dict of {name} ({type(err).__name__}: {str(err)[:160]})") from None
    return model, "sha256:" + file_sha256(path)


def read_state(path: Path) -> dict:
    """A torch.save file's contents on the CPU, memory-mapped when the file allows (no copy into RAM).

    Reading a 45 MB resnet18 checkpoint took 45-185 ms, copied; mapped, 8-12 ms (bench/RESULTS.md):
    pages are read when a tensor is first used, and tensors never used are not read. Files of
    torch's legacy format (not zip) cannot be mapped and are read whole.
    """
    import zipfile

    return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))


def loaded(make, state: dict) -> nn.Module:
    """The module `make()` builds, with every tensor taken from `state` and no random init drawn first.

    It is built on the meta device (no memory, no init: the init of resnet18 cost 0.27 s, 5% of
    extracting the digits) and takes the loaded tensors as its own; a tensor the state does not
    hold fails strict loading, or the check for a tensor left on the meta device.
    """
    with torch.device("meta"):
        model = make()
    want = model.state_dict()  # meta tensors: the dtype of each (a half-precision file is cast, as copying did)
    model.load_state_dict({k: v.contiguous().to(want[k].dtype) if k in want and torch.is_tensor(v) else v
                           for k, v in state.items()}, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelError(f"the state dict does not hold {left[:3]}")
    return model


def checkpoint_dir() -> Path:
    """Where torchvision keeps downloaded weights ($TORCH_HOME/hub/checkpoints)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Tapped(Exception):
    """Carries the tapped activation out of a forward that need not go further."""

    def __init__(self, value: torch.Tensor):
        super().__init__()
        self.value = value


class Bottleneck(nn.Module):
    """The backbone truncated at one node; returns (B, C, H, W).

    A node that is a submodule is tapped by a forward hook that ends the forward there; any other
    node (a functional op such as DenseNet's final ReLU) goes through torchvision's FX feature
    extractor, whose two symbolic traces cost 30-50 ms per resnet18 (about 1% of extracting the
    digits, once per fold model) and 0.8 s per densenet201. Both give the node's first output,
    by the same names. The hooked model keeps its layers after the node (never run; vgg16's
    classifier is 0.5 GB), which the trace dropped; the full model was in memory while building
    either way.
    """

    def __init__(self, model: nn.Module, node: str):
        super().__init__()
        model = model.eval()
        try:
            model.get_submodule(node)
        except AttributeError:
            self.body, self.node = _traced(model, node), None
        else:
            self.body, self.node = model, node

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) normalised images -> (B, C, H, W) activations."""
        if self.node is None:
            # clone: an in-place op inside the traced graph may alias the tapped tensor
            return self.body(images)["bottleneck"].clone()
        hook = self.body.get_submodule(self.node).register_forward_hook(_end_forward)  # only for this call:
        try:  # the caller's model stays as it was
            self.body(images)
        except _Tapped as tap:
            return tap.value
        finally:
            hook.remove()
        raise ModelError(f"the forward of {type(self.body).__name__} never reached node {self.node!r}")


def _end_forward(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
    """Forward hook: stop the forward with this module's output (nothing after it runs)."""
    raise _Tapped(output)


def _traced(model: nn.Module, node: str) -> nn.Module:
    """torchvision's FX feature extractor returning {'bottleneck': node's output}; fails naming the nodes."""
    import warnings

    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    with warnings.catch_warnings():  # "traced in eval mode" note: we only ever run eval mode
        warnings.simplefilter("ignore", UserWarning)
        try:
            return create_feature_extractor(model, return_nodes={node: "bottleneck"})
        except ValueError:
            names = [n for n in get_graph_node_names(model)[1] if "." not in n]
            raise ModelError(f"extract.layer = {node!r} is not a node of {type(model).__name__}; "
                             f"top-level nodes: {names} (or null for the bottleneck)") from None


def bottleneck(name: str, weights: str, seed: int = 0, node: str | None = None) -> tuple[Bottleneck, str]:
    """The eval-mode extractor of backbone `name` at `node` (None = its bottleneck) and its weights id."""
    model, weights_id = build(name, weights, seed)
    return Bottleneck(model.eval(), node or get(name).node).eval(), weights_id


def trained_bottleneck(path: Path, arch: str, node: str | None = None) -> tuple[Bottleneck, str]:
    """The extractor of a training checkpoint's body (heads excluded) at `node`, and the file's hash."""
    if not Path(path).is_file():
        raise ModelError(f"{path} not found: the train stages write it (dvc repro)")
    state = read_state(path)
    net = loaded(lambda: HueNet(arch, int(state["n_classes"])), state["model"])
    return Bottleneck(net.body.eval(), node or get(arch).node).eval(), "sha256:" + file_sha256(Path(path))


# --- training from scratch -----------------------------------------------------------------

# arch -> attribute holding its final classifier; adding a torchvision architecture is one line
TRAINABLE: dict[str, str] = {
    "resnet18": "fc",
    "resnet50": "fc",
    "efficientnet_b0": "classifier",
    "densenet201": "classifier",
}


class HueNet(nn.Module):
    """A torchvision classifier (random init) with a hue head beside its class head.

    forward: images (B, 3, S, S) -> logits (B, M), theta' (B, 2), pooled features (B, F).
    """

    def __init__(self, arch: str, num_classes: int):
        super().__init__()
        from torchvision.models import get_model

        if arch not in TRAINABLE:
            raise ModelError(f"unknown training arch {arch!r}; known: {sorted(TRAINABLE)}")
        self.body = get_model(arch, weights=None, num_classes=num_classes)
        attr = TRAINABLE[arch]
        self.classifier = getattr(self.body, attr)  # dropout (EfficientNet) stays in the class head
        setattr(self.body, attr, nn.Identity())  # body now ends at the pooled bottleneck features
        in_features = [m for m in self.classifier.modules() if isinstance(m, nn.Linear)][0].in_features
        self.hue_head = nn.Linear(in_features, 2)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits, predicted hue point and pooled features."""
        features = self.body(images)  # (B, F)
        return self.classifier(features), self.hue_head(features), features


# --- InterActive layers --------------------------------------------------------------------

# backbone -> (ordered layers t to take features from, the top node T of the 'last' configuration).
# 'next' for layer i uses layer i + 1, and the top node after the last listed layer (the paper's
# pool-5 -> fc6 step).
INTERACTIVE_LAYERS: dict[str, tuple[tuple[str, ...], str]] = {
    "resnet18": (("layer1", "layer2", "layer3", "layer4"), "fc"),
    "resnet50": (("layer1", "layer2", "layer3", "layer4"), "fc"),
    "vgg16": (("features.15", "features.22", "features.29"), "classifier.6"),  # conv-3-3, 4-3, 5-3
    "densenet201": (("features.denseblock2", "features.denseblock3", "relu"), "classifier"),
    "efficientnet_b0": (("features.5", "features.6", "features.7", "features.8"), "classifier.1"),
    "inception_v3": (("Mixed_6e", "Mixed_7b", "Mixed_7c"), "fc"),
}


def interactive_layers(name: str) -> tuple[tuple[str, ...], str]:
    """InterActive layer list and top node of a backbone, failing with the known names."""
    if name not in INTERACTIVE_LAYERS:
        raise ModelError(f"no InterActive layer list for backbone {name!r}; known: {sorted(INTERACTIVE_LAYERS)}")
    return INTERACTIVE_LAYERS[name]
