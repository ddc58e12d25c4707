"""Hand-worked values of the hue loss, both forms and every label configuration."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hue import losses


def test_circle_labels_are_equally_spaced():
    lab = losses.angular_labels("circle", 4)
    assert torch.allclose(lab, torch.tensor([[1.0, 0], [0, 1], [-1, 0], [0, -1]]), atol=1e-6)


def test_discrete_labels_cycle_through_the_four_corners():
    lab = losses.angular_labels("discrete", 5)
    assert lab.tolist() == [[1, 1], [-1, 1], [-1, -1], [1, -1], [1, 1]]


def test_random_label_kinds_are_seeded_and_in_range():
    a, b = losses.angular_labels("circle_random", 6, seed=1), losses.angular_labels("circle_random", 6, seed=1)
    assert torch.equal(a, b) and torch.allclose(a.norm(dim=1), torch.ones(6))
    assert not torch.equal(a, losses.angular_labels("circle_random", 6, seed=2))
    u = losses.angular_labels("uniform", 50, seed=0)
    assert u.abs().max() <= 1 and u.std() > 0.3
    assert torch.equal(losses.angular_labels("centered", 3), torch.zeros(3, 2))


def test_softmax_form_by_hand_circle():
    # M = 4, theta' = (1, 0), y = 0: d = (0, sqrt2, 2, sqrt2) / 8
    lab = losses.angular_labels("circle", 4)
    got = losses.hue_loss(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), lab, "softmax", 8.0)
    expect = math.log(1 + 2 * math.exp(-math.sqrt(2) / 8) + math.exp(-2 / 8))
    assert got.item() == pytest.approx(expect, rel=1e-6)


def test_l2_form_by_hand():
    lab = losses.angular_labels("circle", 4)
    pred = torch.tensor([[0.0, 0.0], [0.0, 2.0]])
    got = losses.hue_loss(pred, torch.tensor([0, 1]), lab, "l2", 8.0)
    assert got.item() == pytest.approx((1.0 + 1.0) / 2, rel=1e-6)  # ||(1,0)-(0,0)|| = 1, ||(0,1)-(0,2)|| = 1


@pytest.mark.parametrize("kind", losses.LABEL_KINDS)
def test_softmax_form_matches_an_explicit_formula_for_every_label_kind(kind):
    lab = losses.angular_labels(kind, 3, seed=4)
    pred, y = torch.tensor([[0.3, -0.2]]), 2
    d = [math.dist(lab[c].tolist(), pred[0].tolist()) / 6 for c in range(3)]  # scale 2M = 6
    expect = -(-d[y]) + math.log(sum(math.exp(-dc) for dc in d))
    assert losses.hue_loss(pred, torch.tensor([y]), lab, "softmax", 6.0).item() == pytest.approx(expect, rel=1e-6)
    l2 = math.dist(lab[y].tolist(), pred[0].tolist())
    assert losses.hue_loss(pred, torch.tensor([y]), lab, "l2", 6.0).item() == pytest.approx(l2, rel=1e-6)


def test_discrete_at_origin_and_centered_give_log_m():
    for kind in ("discrete", "centered"):
        lab = losses.angular_labels(kind, 4)
        got = losses.hue_loss(torch.zeros(1, 2), torch.tensor([1]), lab, "softmax", 8.0)
        assert got.item() == pytest.approx(math.log(4), rel=1e-6)


def test_zero_weight_is_plain_cross_entropy():
    torch.manual_seed(0)
    logits, theta, y = torch.randn(5, 4), torch.randn(5, 2), torch.tensor([0, 1, 2, 3, 0])
    parts = losses.combined(logits, theta, y, losses.angular_labels("circle", 4), 0.0, "softmax", 8.0)
    assert torch.equal(parts.total, F.cross_entropy(logits, y))
    parts = losses.combined(logits, theta, y, losses.angular_labels("circle", 4), 0.5, "l2", 8.0)
    assert torch.allclose(parts.total, parts.ce + 0.5 * parts.hue)


def test_gradients_reach_the_hue_head_and_centered_labels_give_none():
    from hue.models import HueNet

    torch.manual_seed(0)
    net = HueNet("resnet18", 4)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    logits, theta, _ = net(x)
    losses.combined(logits, theta, y, losses.angular_labels("circle", 4), 1.0, "softmax", 8.0).total.backward()
    assert net.hue_head.weight.grad.abs().sum() > 0
    net.zero_grad()
    logits, theta, _ = net(x)
    losses.combined(logits, theta, y, losses.angular_labels("centered", 4), 1.0, "softmax", 8.0).total.backward()
    assert net.hue_head.weight.grad.abs().max() < 1e-6  # all labels equal: L_hue is constant log M


def test_gradient_is_finite_at_zero_distance():
    theta = torch.tensor([[1.0, 0.0]], requires_grad=True)
    losses.hue_loss(theta, torch.tensor([0]), losses.angular_labels("circle", 4), "l2", 8.0).backward()
    assert torch.isfinite(theta.grad).all()


def test_hue_prediction_is_the_nearest_label():
    lab = losses.angular_labels("circle", 4)
    assert losses.hue_predict(torch.tensor([[0.1, 0.9], [-2.0, 0.1]]), lab).tolist() == [1, 2]


def test_gradient_ratio_matches_the_hand_derived_gradients():
    """Toy heads on fixed features: the ratio of the two gradient norms, derived by hand."""
    rng = np.random.default_rng(0)
    b, f, m, w = 5, 4, 3, 0.7
    feats = torch.tensor(rng.normal(size=(b, f)), requires_grad=True)
    w_cls, w_hue = torch.tensor(rng.normal(size=(m, f))), torch.tensor(rng.normal(size=(2, f)))
    y = torch.tensor([0, 1, 2, 1, 0])
    labels = losses.angular_labels("circle", m)
    logits, theta = feats @ w_cls.T, feats @ w_hue.T
    parts = losses.combined(logits, theta, y, labels, w, "l2", 1.0)
    ratio = losses.gradient_ratio(parts.ce, w * parts.hue, feats)
    p = torch.softmax(logits, 1).detach().numpy()
    p[np.arange(b), y.numpy()] -= 1
    g_ce = p @ w_cls.numpy() / b  # d mean CE / d f
    diff = theta.detach().numpy() - labels.double().numpy()[y.numpy()]
    g_hue = w * (diff / np.linalg.norm(diff, axis=1, keepdims=True)) @ w_hue.numpy() / b  # d w mean ||.|| / d f
    assert float(ratio) == pytest.approx(np.linalg.norm(g_hue) / np.linalg.norm(g_ce), rel=1e-9)


def test_logit_spread_is_bounded_by_one_over_m_for_circle_labels():
    labels = losses.angular_labels("circle", 4)  # unit circle, scale 2M = 8
    at_label = losses.logit_spread(labels[:1].clone(), labels, 8.0)  # theta' on class 0's label
    assert float(at_label[0]) == pytest.approx(2 / 8)  # d ranges over 0 .. 2 (the opposite label)
    origin = losses.logit_spread(torch.zeros(1, 2), labels, 8.0)
    assert float(origin[0]) == pytest.approx(0.0)  # equidistant: no class information at all
    far = losses.logit_spread(torch.tensor([[100.0, 0.0]]), labels, 8.0)
    assert float(far[0]) <= 2 / 8 + 1e-6  # triangle inequality: never more than 2 / scale
