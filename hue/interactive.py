"""InterActive features (docs/method.md §6): aspect-preserving ~area resize and activeness.

Activeness of layer t under a top layer T: ln f = ln C_p - ||mean_xy x^(T)||_p^p; gamma is the
magnitude of d ln f / d x^(t) (C_p drops out); the feature is mean_xy (x^(t) * gamma). ORIG
average and max pooling of the same layers are the baselines.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from hue import images, knn, models, search, shards
from hue.images import capped, interactive_size
from hue.cli import progress
from hue.config import InteractiveParams
from hue.tensors import exact_fp32, normalise

CONFIG_ROWS = (("orig_avg", "ORIG avg"), ("orig_max", "ORIG max"), ("next_p1", "next, p=1"), ("next_p2", "next, p=2"),
               ("last_p1", "last, p=1"), ("last_p2", "last, p=2"))


# --- resize --------------------------------------------------------------------------------


def buckets(sizes: list[tuple[int, int]], batch_size: int) -> list[np.ndarray]:
    """Batches of image indices that share one target size (no padding, no distortion)."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, size in enumerate(sizes):
        groups[size].append(i)
    out = []
    for size in sorted(groups):
        idx = np.array(groups[size])
        out += [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
    return out


def load_batch(paths: list[str], size: tuple[int, int]) -> torch.Tensor:
    """Decode and resize a batch of one target size: -> (B, 3, H, W) uint8."""
    arrays = [images.load_resized(Path(p), size) for p in paths]  # (H, W, 3) each
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)


# --- activeness ----------------------------------------------------------------------------


def spatial_mean(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C); a (B, C) top layer is already one vector per image."""
    return x.mean((2, 3)) if x.ndim == 4 else x


def log_score(top: torch.Tensor, p: int) -> torch.Tensor:
    """ln f(x^(T)) up to the constant ln C_p: -||mean_xy x^(T)||_p^p per image, (B,)."""
    return -spatial_mean(top).abs().pow(p).sum(1)


def activeness(top: torch.Tensor, layers: list[torch.Tensor], p: int) -> list[torch.Tensor]:
    """gamma = |d ln f / d x^(t)| for every tensor in `layers` (images are independent in eval mode)."""
    grads = torch.autograd.grad(log_score(top, p).sum(), layers, retain_graph=True)
    return [g.abs() for g in grads]


def pooled(x: torch.Tensor, gamma: torch.Tensor | None = None) -> torch.Tensor:
    """Spatial mean of x * gamma (gamma = 1: ORIG average pooling): (B, C, H, W) -> (B, C)."""
    return (x if gamma is None else x * gamma).mean((2, 3))


def targets(layers: tuple[str, ...], all_layers: tuple[str, ...], top: str, modes: tuple[str, ...]) -> dict:
    """T -> [(mode, t)] for the configurations asked for, so each T needs one backward pass."""
    plan: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for t in layers:
        i = all_layers.index(t)
        for mode in modes:
            big_t = top if mode == "last" or i + 1 == len(all_layers) else all_layers[i + 1]
            plan[big_t].append((mode, t))
    return dict(plan)


class Taps(nn.Module):
    """The backbone truncated after the nodes it returns: {node: tensor}."""

    def __init__(self, model: nn.Module, nodes: list[str]):
        super().__init__()
        import warnings

        from torchvision.models.feature_extraction import create_feature_extractor

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            self.body = create_feature_extractor(model, return_nodes={n: n for n in nodes})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Activations of every returned node."""
        return self.body(x)


def batch_features(taps: Taps, batch: torch.Tensor, layers: tuple[str, ...], plan: dict, ps: tuple[int, ...],
                   device: torch.device = torch.device("cpu")) -> dict:
    """Every configuration's feature for one batch: {(config, layer): (B, C) float32}."""
    x = normalise(batch.to(device)).requires_grad_(True)  # the graph runs from the input: weights need no grad
    with torch.enable_grad(), exact_fp32():  # fp32 on CUDA too: TF32's 10-bit products would move the gradients
        out = taps(x)
        feats = {}
        for t in layers:
            feats[("orig_avg", t)] = pooled(out[t].detach())
            feats[("orig_max", t)] = out[t].detach().amax((2, 3))
        for p in ps:
            for big_t, users in plan.items():
                ts = sorted({t for _, t in users})
                gammas = dict(zip(ts, activeness(out[big_t], [out[t] for t in ts], p)))
                for mode, t in users:
                    feats[(f"{mode}_p{p}", t)] = pooled(out[t].detach(), gammas[t])
    return {k: v.float().cpu() for k, v in feats.items()}  # host sync point


def extract_features(frame: pd.DataFrame, backbone: str, params: InteractiveParams) -> dict:
    """Features of every image for every configuration and layer: {(config, layer): (N, C)}."""
    all_layers, top = models.interactive_layers(backbone)
    layers = params.layers or all_layers
    plan = targets(layers, all_layers, top, params.activeness)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, _ = models.build(backbone, params.weights, params.seed)
    model.eval().requires_grad_(False)
    taps = Taps(model, sorted(set(layers) | set(plan))).to(device)
    sizes = [interactive_size(w, h, params.area) for w, h in zip(frame["width"], frame["height"])]
    parts: dict = defaultdict(list)
    order = []
    for idx in progress(buckets(sizes, params.batch_size), desc=f"interactive {backbone}", unit="batch"):
        batch = load_batch(frame["path"].iloc[idx].tolist(), sizes[idx[0]])
        for key, value in batch_features(taps, batch, layers, plan, params.p, device).items():
            parts[key].append(value)
        order.append(idx)
    inverse = np.argsort(np.concatenate(order))  # back to manifest order
    return {key: torch.cat(v).numpy()[inverse] for key, v in parts.items()}


# --- evaluation ----------------------------------------------------------------------------


def knn_accuracy(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, fold: int, k: int, eps: float) -> float:
    """The pipeline's Eq. 1-3 kNN with one unit vector per image, exact search."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    mem, qry = folds != fold, folds == fold
    dist, idx = search.exact_search(unit[qry], unit[mem], k, device="cpu")
    n_classes = int(labels.max()) + 1
    counts = np.bincount(labels[mem], minlength=n_classes)
    neighbour_labels = np.where(idx >= 0, labels[mem][np.maximum(idx, 0)], -1)  # -1: fewer than k in memory
    scores = knn.kernel_vote(dist, neighbour_labels, np.arange(qry.sum()), int(qry.sum()), counts, eps)
    return float((knn.predict(scores) == labels[qry]).mean())


def linear_accuracy(features: np.ndarray, labels: np.ndarray, folds: np.ndarray, fold: int, c: float) -> float:
    """Standardised features -> logistic regression (scikit-learn), trained on the other folds."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    mem, qry = folds != fold, folds == fold
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
    clf.fit(features[mem], labels[mem])
    return float(clf.score(features[qry], labels[qry]))


def evaluate(features: dict, labels: np.ndarray, folds: np.ndarray, run_folds: tuple[int, ...], params: InteractiveParams,
             k: int, eps: float) -> dict:
    """Accuracy per fold of every configuration and layer, with kNN and the linear classifier."""
    out: dict = defaultdict(dict)
    for (config, layer), x in features.items():
        knn_acc = [knn_accuracy(x, labels, folds, f, k, eps) for f in run_folds]
        lin_acc = [linear_accuracy(x, labels, folds, f, params.linear_c) for f in run_folds]
        out[config][layer] = {
            "dim": int(x.shape[1]),
            "knn": float(np.mean(knn_acc)), "knn_std": float(np.std(knn_acc, ddof=1)) if len(knn_acc) > 1 else 0.0,
            "knn_per_fold": {str(f): a for f, a in zip(run_folds, knn_acc)},
            "linear": float(np.mean(lin_acc)), "linear_std": float(np.std(lin_acc, ddof=1)) if len(lin_acc) > 1 else 0.0,
            "linear_per_fold": {str(f): a for f, a in zip(run_folds, lin_acc)},
        }
    return dict(out)


def table(results: dict, layers: tuple[str, ...], title: str) -> str:
    """The paper's layout: rows ORIG avg/max, next/last x p; columns layers; cells kNN / linear."""
    lines = [f"# {title}", "", "Accuracy (mean over folds): kNN (Eq. 1-3, one vector per image) / linear "
             "(logistic regression).", "", "| configuration | " + " | ".join(layers) + " |",
             "|---|" + "---|" * len(layers)]
    for key, name in CONFIG_ROWS:
        if key not in results:
            continue
        cells = [f"{results[key][t]['knn']:.4f} / {results[key][t]['linear']:.4f}" if t in results[key] else ""
                 for t in layers]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def sample(frame: pd.DataFrame, max_per_class: int | None, seed: int) -> pd.DataFrame:
    """At most `max_per_class` images per class (seeded), manifest order kept."""
    if max_per_class is None:
        return frame
    keep = frame.groupby("label", group_keys=False).apply(
        lambda g: g.sample(n=min(len(g), max_per_class), random_state=seed))
    return frame.loc[sorted(keep.index)].reset_index(drop=True)


def run(dataset: str, backbone: str, params: InteractiveParams, run_folds: tuple[int, ...], k: int, eps: float,
        manifest_path: Path, metrics_out: Path, table_out: Path) -> dict:
    """The interactive stage: features, evaluation, metrics and the paper-style table."""
    frame = sample(shards.read_parquet(manifest_path), params.max_per_class, params.seed)
    features = extract_features(frame, backbone, params)
    results = evaluate(features, frame["label"].to_numpy(), frame["fold"].to_numpy(), run_folds, params, k, eps)
    layers = params.layers or models.interactive_layers(backbone)[0]
    n_capped = sum(capped(w, h, params.area) for w, h in zip(frame["width"], frame["height"]))
    metrics = {"dataset": dataset, "backbone": backbone, "weights": params.weights, "area": params.area,
               "n_images": len(frame), "n_capped": int(n_capped), "layers": list(layers), "configs": results}
    shards.write_json(metrics_out, metrics)
    with shards.atomic_file(table_out) as tmp:
        tmp.write_text(table(results, layers, f"InterActive features: {dataset} / {backbone} (area {params.area})"))
    return metrics
