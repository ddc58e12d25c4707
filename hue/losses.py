"""One-hot + activation hue loss, docs/method.md §4 (main paper Eq. 4-5, extended paper's L2 form)."""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

LABEL_KINDS = ("circle", "circle_random", "discrete", "uniform", "centered")
FORMS = ("softmax", "l2")
DISCRETE_POINTS = ((1.0, 1.0), (-1.0, 1.0), (-1.0, -1.0), (1.0, -1.0))


def angular_labels(kind: str, n_classes: int, seed: int = 0) -> torch.Tensor:
    """theta_c for every class: (M, 2)."""
    gen = torch.Generator().manual_seed(seed)
    if kind == "circle":  # main paper: phi_c = 2 pi c / M
        phi = 2 * math.pi * torch.arange(n_classes, dtype=torch.float64) / n_classes
    elif kind == "circle_random":  # extended paper: phi_c drawn per class
        phi = 2 * math.pi * torch.rand(n_classes, generator=gen, dtype=torch.float64)
    elif kind == "discrete":  # the four points (+-1, +-1), assigned in turn
        return torch.tensor([DISCRETE_POINTS[c % 4] for c in range(n_classes)], dtype=torch.float32)
    elif kind == "uniform":  # uniform in [-1, 1]^2 per class
        return (2 * torch.rand(n_classes, 2, generator=gen, dtype=torch.float64) - 1).float()
    elif kind == "centered":  # all (0, 0): one-hot alone in effect
        return torch.zeros(n_classes, 2)
    else:
        raise ValueError(f"unknown label kind {kind!r}; known: {list(LABEL_KINDS)}")
    return torch.stack([phi.cos(), phi.sin()], 1).float()


def _distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Euclidean distance over the last axis, with a finite gradient at zero."""
    return (a - b).pow(2).sum(-1).clamp_min(1e-12).sqrt()


def hue_distances(theta_pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """||theta_c - theta'|| for every class: (B, 2), (M, 2) -> (B, M)."""
    return _distance(labels[None, :, :], theta_pred[:, None, :])


def hue_loss(theta_pred: torch.Tensor, target: torch.Tensor, labels: torch.Tensor, form: str,
             distance_scale: float) -> torch.Tensor:
    """L_hue: softmax (Eq. 4-5) = CE(-d / scale, y); l2 = mean ||theta_y - theta'||."""
    if form == "softmax":
        d = hue_distances(theta_pred, labels) / distance_scale  # (B, M)
        return F.cross_entropy(-d, target)
    if form == "l2":
        return _distance(labels[target], theta_pred).mean()
    raise ValueError(f"unknown loss form {form!r}; known: {list(FORMS)}")


@dataclasses.dataclass(frozen=True)
class LossParts:
    """The loss and its parts, for logging."""

    ce: torch.Tensor
    hue: torch.Tensor
    total: torch.Tensor


def combined(logits: torch.Tensor, theta_pred: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
             hue_weight: float, form: str, distance_scale: float) -> LossParts:
    """L = CE(x, y) + w * L_hue; with w = 0 the total is plain cross-entropy."""
    ce = F.cross_entropy(logits, target)
    hue = hue_loss(theta_pred, target, labels, form, distance_scale)
    total = ce + hue_weight * hue if hue_weight else ce
    return LossParts(ce, hue, total)


def hue_predict(theta_pred: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The hue head's class: the nearest angular label to theta'; (B, 2) -> (B,)."""
    return hue_distances(theta_pred, labels).argmin(1)


def logit_spread(theta_pred: torch.Tensor, labels: torch.Tensor, distance_scale: float) -> torch.Tensor:
    """max_c - min_c of the hue logits -d_c / scale, per sample: (B, 2), (M, 2) -> (B,).

    With scale = 2M and labels on the unit circle it is at most 2 / (2M) = 1 / M (triangle
    inequality), which bounds how far softmax can move L_hue away from log M.
    """
    logits = -hue_distances(theta_pred, labels) / distance_scale  # (B, M)
    return logits.amax(1) - logits.amin(1)


def gradient_ratio(ce: torch.Tensor, hue_term: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
    """||d(w L_hue)/df|| / ||dCE/df|| at the shared pooled features f: can the hue term steer them at all?

    Both gradients only pass through their heads (two small linear maps), so this is cheap next to
    the full backward pass; the graph is kept for it.
    """
    (g_ce,) = torch.autograd.grad(ce, features, retain_graph=True)  # (B, F)
    if not hue_term.requires_grad:  # a constant term (w = 0) steers nothing
        return torch.zeros((), device=features.device)
    (g_hue,) = torch.autograd.grad(hue_term, features, retain_graph=True)  # (B, F)
    return g_hue.norm() / g_ce.norm().clamp_min(1e-30)
