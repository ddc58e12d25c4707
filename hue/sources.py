"""Feature sources: a backbone with its weights, pretrained (one model) or trained here (one per fold).

A source is named `<backbone>-<weights>`. Weights are `imagenet`, `random`, a key of
`extract.weight_files` (a state-dict file), or `onehot` / `hue`: the pipeline's own training
checkpoints, one per held-out fold, so that no image is ever embedded by a model that trained
on it. Every source has a folder `data/models/<dataset>/<source>/` holding its card (and, for
trained sources, the fold checkpoints); the extract stage depends on that folder, which is
how one stage definition serves every kind of source.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from hue.config import ExtractParams
from hue.errors import HueError

KINDS = ("imagenet", "random", "onehot", "hue")
TRAINED = ("onehot", "hue")


class SourceError(HueError):
    """A feature source is malformed or its weights are missing."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One feature source."""

    backbone: str  # registry name (hue.models)
    weights: str  # imagenet | random | onehot | hue | a key of extract.weight_files

    @property
    def name(self) -> str:
        """`<backbone>-<weights>`, as in stage names and paths."""
        return f"{self.backbone}-{self.weights}"

    @property
    def trained(self) -> bool:
        """Whether the weights are the pipeline's own per-fold checkpoints."""
        return self.weights in TRAINED


def parse(name: str) -> Source:
    """`resnet18-hue` -> Source('resnet18', 'hue'); backbone names hold no '-'."""
    backbone, sep, weights = name.partition("-")
    if not sep or not weights:
        raise SourceError(f"feature source {name!r} is not <backbone>-<weights> (e.g. resnet18-hue)")
    return Source(backbone, weights)


def card(source: Source, params: ExtractParams) -> dict:
    """What identifies a source's weights: the seed, the file hash, or the training run it comes from."""
    from hue import models

    out = {"source": source.name, "backbone": source.backbone, "weights": source.weights}
    if source.trained:
        return {**out, "kind": "trained", "id": f"trained:{source.weights}"}
    if source.weights == "random":
        return {**out, "kind": "pretrained", "id": f"random:seed={params.seed}"}
    if source.weights == "imagenet":
        _, weights_id = models.build(source.backbone, "imagenet")  # downloads once into $TORCH_HOME
        return {**out, "kind": "pretrained", "id": weights_id}
    path = weight_file(source, params)
    if not path.is_file():
        raise SourceError(f"extract.weight_files.{source.weights} = {str(path)!r}: no such file")
    return {**out, "kind": "pretrained", "id": "sha256:" + models.file_sha256(path), "file": str(path)}


def weight_file(source: Source, params: ExtractParams) -> Path:
    """The state-dict file of a `weight_files` source."""
    if source.weights not in params.weight_files:
        raise SourceError(f"{source.name}: {source.weights!r} is not a key of extract.weight_files "
                          f"({sorted(params.weight_files)})")
    return Path(params.weight_files[source.weights])


def extractor(source: Source, params: ExtractParams, model_dir: Path, fold: int | None):
    """The eval-mode activation extractor of a source (for trained sources: the model of `fold`)."""
    from hue import models

    if source.trained:
        return models.trained_bottleneck(checkpoint(model_dir, fold), source.backbone, params.layer)
    weights = str(weight_file(source, params)) if source.weights not in KINDS else source.weights
    return models.bottleneck(source.backbone, weights, params.seed, params.layer)


def checkpoint(model_dir: Path, fold: int) -> Path:
    """A trained source's checkpoint for held-out `fold`."""
    return Path(model_dir) / f"fold{fold}.pt"


def write_card(source_name: str, params: ExtractParams, out: Path) -> dict:
    """The weights stage: a source's card, the file its extraction depends on."""
    from hue import shards

    content = card(parse(source_name), params)
    shards.write_json(out, content)
    return content


def snapshot_weight_file(name: str, params: ExtractParams, out: Path) -> None:
    """The hash of one extract.weight_files entry, so that DVC reruns its source when the file changes."""
    from hue import models, shards

    if name not in params.weight_files:
        raise SourceError(f"{name} is not a key of extract.weight_files; known: {sorted(params.weight_files)}")
    path = Path(params.weight_files[name])
    if not path.is_file():
        raise SourceError(f"extract.weight_files.{name} = {str(path)!r}: no such file")
    shards.write_json(out, {"file": str(path), "sha256": models.file_sha256(path)})


def names(params: ExtractParams) -> list[str]:
    """Every feature source the params ask for: backbones x weights."""
    return [Source(b, w).name for b in params.backbones for w in params.weights]
