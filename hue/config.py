"""Typed params: one frozen dataclass per `params.yaml` section, one strict loader."""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

from hue.errors import HueError

PARAMS_FILE = Path("params.yaml")


class ConfigError(HueError, ValueError):
    """A param is unknown, mistyped or out of range."""


def _fail(section: str, key: str, value: Any, allowed: str) -> typing.NoReturn:
    """Raise one line naming the key, the value and what is allowed."""
    raise ConfigError(f"params.yaml: {section}.{key} = {value!r} is invalid; allowed: {allowed}")


def _require(ok: bool, section: str, key: str, value: Any, allowed: str) -> None:
    """Fail unless `ok`."""
    if not ok:
        _fail(section, key, value, allowed)


@dataclasses.dataclass(frozen=True)
class DataParams:
    """Section `data`: which datasets, how they are split."""

    datasets: tuple[str, ...] = ("digits",)  # registry names or keys of `folders`
    folds: int = 5  # stratified k-fold over all usable images
    run_folds: tuple[int, ...] = (0, 1, 2, 3, 4)  # held-out folds the later stages run
    seed: int = 0  # fold assignment seed
    drop_small_classes: bool = False  # drop classes with fewer images than folds instead of failing
    max_per_class: int | None = None  # cap images per class (seeded subsample); None = all
    folders: Mapping[str, str] = dataclasses.field(default_factory=dict)  # local ImageFolder datasets

    def validate(self) -> None:
        """Check ranges and names."""
        from hue import datasets

        s = "data"
        _require(len(self.datasets) > 0, s, "datasets", list(self.datasets), "a non-empty list")
        known = sorted(datasets.REGISTRY) + sorted(self.folders)
        for name in self.datasets:
            _require(name in known, s, "datasets", name, f"one of {known} (add local folders under data.folders)")
        for name in self.folders:
            _require(name not in datasets.REGISTRY, s, "folders", name, "a name that is not a registry dataset")
            _require(name.replace("_", "").replace("-", "").isalnum(), s, "folders", name,
                     "letters, digits, '_' and '-'")
        _require(self.folds >= 2, s, "folds", self.folds, "an integer >= 2")
        _require(len(self.run_folds) > 0, s, "run_folds", list(self.run_folds), "a non-empty list")
        _require(len(set(self.run_folds)) == len(self.run_folds), s, "run_folds", list(self.run_folds),
                 "distinct fold ids")
        for f in self.run_folds:
            _require(0 <= f < self.folds, s, "run_folds", f, f"fold ids in 0..{self.folds - 1}")
        _require(self.max_per_class is None or self.max_per_class >= 1, s, "max_per_class",
                 self.max_per_class, "null or an integer >= 1")


PRECISIONS = ("auto", "fp32", "bf16")
DTYPES = ("float16", "float32")
DESCRIPTORS = ("pixel", "gap", "gmp", "flat")
BACKENDS = ("annoy", "exact")
RESIZES = ("square", "interactive")
ACTIVENESS = ("next", "last")


@dataclasses.dataclass(frozen=True)
class ExtractParams:
    """Section `extract`: the feature sources (backbone x weights) and how their activations are taken."""

    backbones: tuple[str, ...] = ("resnet18",)  # registry names (hue.models)
    weights: tuple[str, ...] = ("onehot", "hue")  # imagenet | random | onehot | hue | keys of weight_files
    weight_files: Mapping[str, str] = dataclasses.field(default_factory=dict)  # name -> state-dict path
    seed: int = 0  # init seed for weights: random
    layer: str | None = None  # node tapped; None = the backbone's bottleneck (docs/method.md §1)
    image_size: int | None = None  # square input side; None = the backbone's native size
    batch_size: int = 64
    precision: str = "auto"  # auto: bf16 on CUDA or a CPU with native bf16, else fp32
    dtype: str = "float16"  # storage dtype of the vectors
    shard_rows: int = 65536  # pixel vectors per .npy shard (whole images per shard)
    workers: int = 2  # image decoding processes
    resize: str = "square"  # square: image_size x image_size | interactive: aspect kept, area ~ `area`
    area: int = 25600  # target area of the interactive resize (InterActive: 512^2 = 262144)

    def validate(self) -> None:
        """Check ranges and names."""
        from hue import models, sources

        s = "extract"
        _require(len(self.backbones) > 0, s, "backbones", list(self.backbones), "a non-empty list")
        for name in self.backbones:
            _require(name in models.BACKBONES, s, "backbones", name, f"one of {sorted(models.BACKBONES)}")
        _require(len(self.weights) > 0, s, "weights", list(self.weights), "a non-empty list")
        _require(len(set(self.weights)) == len(self.weights), s, "weights", list(self.weights), "distinct names")
        known = list(sources.KINDS) + sorted(self.weight_files)
        for w in self.weights:
            _require(w in known, s, "weights", w, f"one of {known} (add state-dict files under extract.weight_files)")
        for name in self.weight_files:
            _require(name not in sources.KINDS, s, "weight_files", name, f"a name other than {list(sources.KINDS)}")
            _require(name.replace("_", "").isalnum(), s, "weight_files", name, "letters, digits and '_'")
        _require(self.image_size is None or self.image_size >= 32, s, "image_size", self.image_size,
                 "null or an integer >= 32")
        _require(self.batch_size >= 1, s, "batch_size", self.batch_size, "an integer >= 1")
        _require(self.precision in PRECISIONS, s, "precision", self.precision, f"one of {list(PRECISIONS)}")
        _require(self.dtype in DTYPES, s, "dtype", self.dtype, f"one of {list(DTYPES)}")
        _require(self.shard_rows >= 1, s, "shard_rows", self.shard_rows, "an integer >= 1")
        _require(self.workers >= 0, s, "workers", self.workers, "an integer >= 0")
        _require(self.resize in RESIZES, s, "resize", self.resize, f"one of {list(RESIZES)}")
        _require(self.area >= 32 * 32, s, "area", self.area, "an integer >= 1024")


@dataclasses.dataclass(frozen=True)
class IndexParams:
    """Section `index`: Annoy indexes over each fold's memory."""

    n_trees: int = 20  # Annoy trees: more = better recall, bigger index
    pca_dim: int | None = None  # PCA fitted on the memory only; None = no reduction
    shards: int = 1  # Annoy indexes per fold memory, built and searched independently, merged exactly
    seed: int = 0  # Annoy and PCA seed

    def validate(self) -> None:
        """Check ranges."""
        _require(self.n_trees >= 1, "index", "n_trees", self.n_trees, "an integer >= 1")
        _require(self.shards >= 1, "index", "shards", self.shards, "an integer >= 1")
        _require(self.pca_dim is None or self.pca_dim >= 2, "index", "pca_dim", self.pca_dim,
                 "null or an integer >= 2")


@dataclasses.dataclass(frozen=True)
class KnnParams:
    """Section `knn`: kernel-density kNN classification, Eq. 1-3."""

    k: int = 10  # neighbours per query vector
    eps: float = 1e-6  # kernel bandwidth floor
    descriptors: tuple[str, ...] = DESCRIPTORS  # pixel | gap | gmp | flat
    backend: str = "annoy"  # annoy | exact
    search_k: int = 2000  # Annoy nodes inspected per query (explicit: Annoy's default is far too low)
    min_recall: float = 0.9  # fail when Annoy's recall@k against exact search is below this
    reference_images: int = 50  # held-out images per fold searched exactly as the reference
    query_block: int = 2048  # exact search: query vectors per matrix product
    seed: int = 0  # reference sample seed

    def validate(self) -> None:
        """Check ranges and names."""
        s = "knn"
        _require(self.k >= 1, s, "k", self.k, "an integer >= 1")
        _require(self.eps > 0, s, "eps", self.eps, "a number > 0")
        _require(len(self.descriptors) > 0, s, "descriptors", list(self.descriptors), "a non-empty list")
        for d in self.descriptors:
            _require(d in DESCRIPTORS, s, "descriptors", d, f"one of {list(DESCRIPTORS)}")
        _require(self.backend in BACKENDS, s, "backend", self.backend, f"one of {list(BACKENDS)}")
        _require(self.search_k >= self.k, s, "search_k", self.search_k, "an integer >= k")
        _require(0 <= self.min_recall <= 1, s, "min_recall", self.min_recall, "a number in [0, 1]")
        _require(self.reference_images >= 1, s, "reference_images", self.reference_images, "an integer >= 1")
        _require(self.query_block >= 1, s, "query_block", self.query_block, "an integer >= 1")


TRAIN_LOSSES = ("onehot", "hue")


@dataclasses.dataclass(frozen=True)
class TrainParams:
    """Section `train`: training from scratch, one run per dataset x arch x fold x loss."""

    archs: tuple[str, ...] = ("resnet18",)  # hue.models.TRAINABLE names
    epochs: int = 100  # the papers' protocol
    batch_size: int = 64
    image_size: int = 224  # square crop side; images are decoded once at 8/7 of it
    val_fraction: float = 0.2  # share of the training folds held out for validation
    lr: float = 1e-3  # Adam's PyTorch default
    seed: int = 0  # init, split, order and augmentation seed (same for one-hot and hue: paired)
    devices: int = 1  # processes (GPUs) of one run; above 1 the stage runs under torchrun with DDP

    def validate(self) -> None:
        """Check ranges and names."""
        from hue import models

        s = "train"
        _require(len(self.archs) > 0, s, "archs", list(self.archs), "a non-empty list")
        for a in self.archs:
            _require(a in models.TRAINABLE, s, "archs", a, f"one of {sorted(models.TRAINABLE)}")
        _require(self.epochs >= 1, s, "epochs", self.epochs, "an integer >= 1")
        _require(self.batch_size >= 2, s, "batch_size", self.batch_size, "an integer >= 2")
        _require(self.image_size >= 16, s, "image_size", self.image_size, "an integer >= 16")
        _require(0 < self.val_fraction < 1, s, "val_fraction", self.val_fraction, "a number in (0, 1)")
        _require(self.lr > 0, s, "lr", self.lr, "a number > 0")
        _require(self.devices >= 1, s, "devices", self.devices, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class LossParams:
    """Section `loss`: the activation hue term (read by the hue runs only)."""

    hue_weight: float = 1.0  # w in L = CE + w * L_hue (1.0 = the papers' equal weighting)
    form: str = "softmax"  # softmax (main paper, Eq. 4-5) | l2 (extended paper)
    labels: str = "circle"  # circle | circle_random | discrete | uniform | centered
    distance_scale: float | None = None  # divisor of d_c in Eq. 5; None = 2M as written
    seed: int = 0  # seed of circle_random / uniform labels

    def validate(self) -> None:
        """Check ranges and names."""
        from hue.losses import FORMS, LABEL_KINDS

        s = "loss"
        _require(self.hue_weight >= 0, s, "hue_weight", self.hue_weight, "a number >= 0")
        _require(self.form in FORMS, s, "form", self.form, f"one of {list(FORMS)}")
        _require(self.labels in LABEL_KINDS, s, "labels", self.labels, f"one of {list(LABEL_KINDS)}")
        _require(self.distance_scale is None or self.distance_scale > 0, s, "distance_scale",
                 self.distance_scale, "null (= 2M) or a number > 0")

    def scale(self, n_classes: int) -> float:
        """The divisor of Eq. 5 for M classes."""
        return self.distance_scale if self.distance_scale is not None else 2.0 * n_classes


@dataclasses.dataclass(frozen=True)
class ObserveParams:
    """Section `observe`: the papers' observations as numbers (docs/method.md §3)."""

    n_permutations: int = 200  # shuffled-label baselines for the per-class R
    hue_fit_vectors: int = 50_000  # memory pixel vectors the hue plane is fitted on
    hue_max_vectors: int = 200_000  # held-out pixel vectors per fold whose hue is measured (whole images)
    compare: tuple[str, ...] = ("resnet18",)  # backbones whose one-hot and hue models are compared; () = none
    seed: int = 0

    def validate(self) -> None:
        """Check ranges."""
        s = "observe"
        _require(self.n_permutations >= 1, s, "n_permutations", self.n_permutations, "an integer >= 1")
        _require(self.hue_fit_vectors >= 2, s, "hue_fit_vectors", self.hue_fit_vectors, "an integer >= 2")
        _require(self.hue_max_vectors >= 1, s, "hue_max_vectors", self.hue_max_vectors, "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class InteractiveParams:
    """Section `interactive`: InterActive features (aspect-kept resize + activeness), docs/method.md §6."""

    backbones: tuple[str, ...] = ("resnet18",)  # hue.models.INTERACTIVE_LAYERS names
    weights: str = "random"  # imagenet | random | state-dict path, as extract.weights
    layers: tuple[str, ...] | None = None  # layer nodes t; None = every listed layer of the backbone
    activeness: tuple[str, ...] = ACTIVENESS  # next (T = t + 1) | last (T = the top)
    p: tuple[int, ...] = (1, 2)  # norm of the score function f = C_p exp(-||x^(T)||_p^p)
    area: int = 25600  # target area of the resize (the paper: 512^2 = 262144)
    max_per_class: int | None = 30  # images per class (seeded); None = all
    batch_size: int = 32
    linear_c: float = 1.0  # inverse regularisation of the logistic-regression baseline
    seed: int = 0

    def validate(self) -> None:
        """Check ranges and names."""
        from hue import models

        s = "interactive"
        _require(len(self.backbones) > 0, s, "backbones", list(self.backbones), "a non-empty list")
        for b in self.backbones:
            _require(b in models.INTERACTIVE_LAYERS, s, "backbones", b, f"one of {sorted(models.INTERACTIVE_LAYERS)}")
            known = models.INTERACTIVE_LAYERS[b][0]
            for layer in self.layers or ():
                _require(layer in known, s, "layers", layer, f"layers of {b}: {list(known)} (or null for all)")
        for a in self.activeness:
            _require(a in ACTIVENESS, s, "activeness", a, f"one of {list(ACTIVENESS)}")
        for p in self.p:
            _require(p in (1, 2), s, "p", p, "1 or 2")
        _require(self.area >= 32 * 32, s, "area", self.area, "an integer >= 1024")
        _require(self.max_per_class is None or self.max_per_class >= 2, s, "max_per_class", self.max_per_class,
                 "null or an integer >= 2")
        _require(self.batch_size >= 1, s, "batch_size", self.batch_size, "an integer >= 1")
        _require(self.linear_c > 0, s, "linear_c", self.linear_c, "a number > 0")


SECTIONS: dict[str, type] = {"data": DataParams, "extract": ExtractParams, "index": IndexParams, "knn": KnnParams,
                             "train": TrainParams, "loss": LossParams, "observe": ObserveParams,
                             "interactive": InteractiveParams}


def _check_type(section: str, key: str, value: Any, hint: Any) -> Any:
    """Coerce a YAML value to the annotated type or fail naming the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _check_type(section, key, value, inner[0])
    if origin is tuple:
        _require(isinstance(value, (list, tuple)), section, key, value, f"a list of {args[0].__name__}")
        return tuple(_check_type(section, key, v, args[0]) for v in value)
    if origin in (collections.abc.Mapping, dict):
        _require(isinstance(value, dict), section, key, value, "a mapping")
        return types.MappingProxyType({str(k): _check_type(section, key, v, args[1]) for k, v in value.items()})
    if hint is bool:
        _require(isinstance(value, bool), section, key, value, "true or false")
        return value
    if hint is int:
        _require(isinstance(value, int) and not isinstance(value, bool), section, key, value, "an integer")
        return value
    if hint is float:
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), section, key, value, "a number")
        return float(value)
    if hint is str:
        _require(isinstance(value, str), section, key, value, "a string")
        return value
    raise TypeError(f"unsupported param type {hint!r} for {section}.{key}")


def build(section: str, raw: Mapping[str, Any] | None) -> Any:
    """Build and validate the dataclass of `section` from its raw mapping."""
    if section not in SECTIONS:
        raise ConfigError(f"params.yaml: unknown section {section!r}; known: {sorted(SECTIONS)}")
    cls = SECTIONS[section]
    raw = dict(raw or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise ConfigError(f"params.yaml: unknown key {section}.{key}; allowed keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {k: _check_type(section, k, v, hints[k]) for k, v in raw.items()}
    params = cls(**values)
    params.validate()
    return params


def read(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Read the raw params file."""
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the repository root")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections")
    return raw


def load(section: str, path: Path = PARAMS_FILE) -> Any:
    """Load one section of params.yaml as its frozen dataclass (the file is checked as a whole first)."""
    raw = read(path)
    for name in raw:
        if name not in SECTIONS:
            raise ConfigError(f"{path}: unknown section {name!r}; known: {sorted(SECTIONS)}")
    check_consistency(raw)
    return build(section, raw.get(section))


def _raw(raw: Mapping[str, Any], section: str, key: str) -> Any:
    """A raw value, or its dataclass default when params.yaml leaves it out."""
    values = raw.get(section) or {}
    if key in values:
        return values[key]
    field = {f.name: f for f in dataclasses.fields(SECTIONS[section])}[key]
    return field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default


def check_consistency(raw: Mapping[str, Any]) -> None:
    """Rules that span sections: trained feature sources need trained backbones, comparisons need both."""
    backbones = list(_raw(raw, "extract", "backbones") or [])
    weights = list(_raw(raw, "extract", "weights") or [])
    archs = list(_raw(raw, "train", "archs") or [])
    trained = [w for w in weights if w in ("onehot", "hue")]
    for b in backbones if trained else []:
        _require(b in archs, "extract", "backbones", b,
                 f"backbones the pipeline trains (train.archs = {archs}), because extract.weights has {trained}; "
                 "add it to train.archs or drop onehot/hue from extract.weights")
    for b in _raw(raw, "observe", "compare") or []:
        _require(b in backbones and {"onehot", "hue"} <= set(weights), "observe", "compare", b,
                 f"a backbone of extract.backbones ({backbones}) with onehot and hue in extract.weights "
                 f"({weights}); or [] to compare none")


def as_dict(params: Any) -> dict[str, Any]:
    """Plain-dict view of a params dataclass (for manifests and metrics)."""
    out = {}
    for f in dataclasses.fields(params):
        v = getattr(params, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, Mapping) else v
    return out
