"""InterActive: resize properties, activeness against finite differences, plumbing, registry."""

import numpy as np
import pytest
import torch
from torch import nn

from hue import config, datasets, extract, images, interactive, manifest, models, shards
from tests.conftest import make_image

AREA = 512 * 512


@pytest.mark.parametrize("seed", range(5))
def test_resize_keeps_aspect_area_and_multiples_of_32(seed):
    rng = np.random.default_rng(seed)
    for w, h in rng.integers(20, 4000, size=(200, 2)):
        W, H = images.interactive_size(int(w), int(h), AREA)
        assert W % 32 == 0 and H % 32 == 0 and W >= 32 and H >= 32
        assert max(W, H) <= images.side_cap(AREA)
        if images.capped(int(w), int(h), AREA):  # extreme aspect: the long side is capped, see the test below
            continue
        s = np.sqrt(AREA / (w * h))
        if w * s >= 32 and h * s >= 32:  # not clamped: each side within half a step of the exact one
            assert abs(W - w * s) <= 16 and abs(H - h * s) <= 16
            aspect_error = abs(np.log((W / H) / (w / h)))
            assert aspect_error <= np.log((w * s + 16) / (w * s - 16)) + np.log((h * s + 16) / (h * s - 16)) + 1e-9
            assert abs(W * H - AREA) <= 16 * (W + H) + 256


def test_square_and_paper_sizes():
    assert images.interactive_size(300, 300, AREA) == (512, 512)
    assert images.interactive_size(640, 480, AREA) == (576, 448)  # 591x443 exactly
    assert images.interactive_size(8, 8, 160 * 160) == (160, 160)


@pytest.mark.parametrize("w, h, area", [(4000, 12, 160 * 160), (100000, 10, 160 * 160), (12, 4000, AREA)])
def test_extreme_aspect_images_are_capped_and_counted(w, h, area):
    # uncapped these ask for 2912 x 32 (3.6x the area) and 16000 x 32 (20x): no single image may do that
    W, H = images.interactive_size(w, h, area)
    cap = images.side_cap(area)
    assert max(W, H) == cap == int(4 * np.sqrt(area)) // 32 * 32 and W * H <= area
    assert images.capped(w, h, area)
    assert not images.capped(640, 480, AREA) and not images.capped(300, 40, 160 * 160)


def test_buckets_group_equal_shapes_only():
    sizes = [(64, 32), (32, 32), (64, 32), (32, 32), (64, 32)]
    groups = interactive.buckets(sizes, batch_size=2)
    assert all(len({sizes[i] for i in g}) == 1 for g in groups)
    assert sorted(np.concatenate(groups).tolist()) == list(range(5)) and max(map(len, groups)) == 2


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x_t):
        return self.b(torch.tanh(self.a(x_t)))  # x_t -> x_T


@pytest.mark.parametrize("p", [1, 2])
def test_gamma_matches_finite_differences(p):
    net = Tiny().double()
    x_t = torch.randn(2, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    (gamma,) = interactive.activeness(net(x_t), [x_t], p)
    eps, numeric = 1e-6, torch.zeros_like(x_t)
    with torch.no_grad():
        for idx in np.ndindex(*x_t.shape):
            plus, minus = x_t.clone(), x_t.clone()
            plus[idx] += eps
            minus[idx] -= eps
            lnf = lambda z: interactive.log_score(net(z), p)[idx[0]]  # image idx[0]'s score only
            numeric[idx] = (lnf(plus) - lnf(minus)) / (2 * eps)
    assert torch.allclose(gamma, numeric.abs(), atol=1e-6)


def test_gamma_one_gives_orig_average_pooling_exactly(monkeypatch):
    model, _ = models.build("resnet18", "random")
    model.eval().requires_grad_(False)
    layers, top = models.INTERACTIVE_LAYERS["resnet18"]
    plan = interactive.targets(layers, layers, top, ("next", "last"))
    taps = interactive.Taps(model, sorted(set(layers) | set(plan)))
    batch = torch.randint(0, 255, (2, 3, 64, 96), dtype=torch.uint8)
    monkeypatch.setattr(interactive, "activeness", lambda top, xs, p: [torch.ones_like(x) for x in xs])
    feats = interactive.batch_features(taps, batch, layers, plan, (1, 2))
    for t in layers:
        for config_name in ("next_p1", "next_p2", "last_p1", "last_p2"):
            assert torch.equal(feats[(config_name, t)], feats[("orig_avg", t)])
    monkeypatch.undo()
    real = interactive.batch_features(taps, batch, layers, plan, (1,))
    assert not torch.equal(real[("last_p1", "layer3")], real[("orig_avg", "layer3")])


def test_plan_uses_one_backward_per_top_layer():
    plan = interactive.targets(("layer2", "layer4"), ("layer1", "layer2", "layer3", "layer4"), "fc", ("next", "last"))
    assert plan == {"layer3": [("next", "layer2")], "fc": [("last", "layer2"), ("next", "layer4"), ("last", "layer4")]}


@pytest.mark.parametrize("name", sorted(models.INTERACTIVE_LAYERS))
def test_registry_layers_can_be_tapped_in_order(name):
    model, _ = models.build(name, "random")
    layers, top = models.INTERACTIVE_LAYERS[name]
    taps = interactive.Taps(model.eval(), list(layers) + [top])
    with torch.no_grad():
        out = taps(torch.randn(1, 3, 107, 107))
    assert out[top].ndim == 2 and all(out[t].ndim == 4 for t in layers)
    assert [out[t].shape[-1] for t in layers] == sorted((out[t].shape[-1] for t in layers), reverse=True)


@pytest.fixture
def mixed_shapes(in_tmp):
    root = in_tmp / "imgs"
    for c in ("a", "b"):
        for i in range(4):
            make_image(root / c / f"{i}.png", size=(40, 20) if i % 2 else (20, 20), seed=i + (9 if c == "b" else 0))
    params = config.build("data", {"datasets": ["t"], "folders": {"t": str(root)}, "folds": 2, "run_folds": [0, 1]})
    frame, _, _ = manifest.build("t", datasets.read_image_folder(root), params, root)
    shards.write_parquet(in_tmp / "m.parquet", frame)
    return frame


def test_features_come_back_in_manifest_order(mixed_shapes):
    params = config.build("interactive", {"area": 64 * 64, "batch_size": 3, "layers": ["layer3"], "p": [2],
                                          "activeness": ["last"]})
    feats = interactive.extract_features(mixed_shapes, "resnet18", params)
    one = interactive.extract_features(mixed_shapes.iloc[[5]].reset_index(drop=True), "resnet18", params)
    assert feats[("last_p2", "layer3")].shape == (8, 256)
    assert np.allclose(feats[("last_p2", "layer3")][5], one[("last_p2", "layer3")][0], atol=1e-5)


def test_main_extract_rejects_mixed_grids_with_one_line(mixed_shapes, in_tmp):
    params = config.build("extract", {"resize": "interactive", "area": 64 * 64, "workers": 0, "weights": ["random"],
                                      "layer": None})
    with pytest.raises(extract.ExtractError, match="gives 2 input shapes here \\(64x64, 96x32"):
        extract.run("t", "resnet18-random", params, (0, 1), in_tmp / "m.parquet", in_tmp / "models", in_tmp / "out",
                    in_tmp / "t.json")


def test_main_extract_with_interactive_resize_on_one_shape(in_tmp):
    root = in_tmp / "imgs"
    for c in ("a", "b"):
        for i in range(2):
            make_image(root / c / f"{i}.png", size=(30, 10), seed=i + (5 if c == "b" else 0))
    params = config.build("data", {"datasets": ["t"], "folders": {"t": str(root)}, "folds": 2, "run_folds": [0, 1]})
    frame, _, _ = manifest.build("t", datasets.read_image_folder(root), params, root)
    shards.write_parquet(in_tmp / "m.parquet", frame)
    ex = config.build("extract", {"resize": "interactive", "area": 96 * 32, "workers": 0, "weights": ["random"],
                                  "layer": None})
    info = extract.run("t", "resnet18-random", ex, (0, 1), in_tmp / "m.parquet", in_tmp / "models", in_tmp / "out",
                       in_tmp / "t.json")[None]
    assert info["transform"]["size"] == [96, 32] and info["grid"] == [1, 3]  # aspect 3:1 kept exactly
    assert info["n_capped"] == 0
