"""Dataset registry: every dataset of the papers, by the name used in `params.yaml`.

A fetcher makes sure the files are under `data/raw/<name>/` (downloading them through
torchvision or with the real URLs and checksums) and lists them as `Record`s. Validation,
labels and folds are `hue.manifest`'s job, the same for every dataset.
"""

from __future__ import annotations

import dataclasses
import os
import tarfile
import urllib.error
import zipfile
from pathlib import Path
from typing import Callable, Iterable

from hue.errors import HueError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


class DatasetError(HueError):
    """A dataset cannot be fetched or read; the message says what to do."""


class DownloadError(DatasetError):
    """A download failed (offline, moved URL, bad checksum)."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One candidate image before validation."""

    path: Path  # the image file
    class_name: str  # human-readable class
    split: str  # the dataset's official split ('all' where it has none)


@dataclasses.dataclass(frozen=True)
class Source:
    """What a fetcher found: candidate images, the class order, files set aside."""

    records: list[Record]
    classes: list[str]  # label order; classes without usable images are dropped later
    skipped: list[tuple[Path, str]] = dataclasses.field(default_factory=list)  # (path, reason)


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """A registry entry."""

    name: str
    fetch: Callable[[Path], Source]  # raw dir -> records
    urls: tuple[str, ...]  # where the files come from (for messages and the README)
    manual: str  # how to place the files by hand, relative to the raw dir


REGISTRY: dict[str, DatasetSpec] = {}


def register(name: str, urls: Iterable[str] = (), manual: str = "") -> Callable:
    """Decorator adding a fetcher to the registry under `name`."""

    def wrap(fetch: Callable[[Path], Source]) -> Callable[[Path], Source]:
        REGISTRY[name] = DatasetSpec(name, fetch, tuple(urls), manual)
        return fetch

    return wrap


def get(name: str) -> DatasetSpec:
    """Registry lookup that fails with the list of known names."""
    if name not in REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; known: {sorted(REGISTRY)} or a key of data.folders")
    return REGISTRY[name]


def fetch(name: str, raw_dir: Path, folder: Path | None = None) -> Source:
    """Fetch a registry dataset, or read a local ImageFolder when `folder` is given."""
    if folder is not None:
        return read_image_folder(Path(folder))
    raw_dir.mkdir(parents=True, exist_ok=True)
    return get(name).fetch(raw_dir)


# --- helpers -----------------------------------------------------------------------------


def _offline_error(name: str, url: str, raw_dir: Path, err: BaseException) -> DownloadError:
    """One line naming the dataset, the URL tried and the manual fallback."""
    spec = REGISTRY.get(name)
    manual = spec.manual if spec else ""
    return DownloadError(
        f"{name}: could not download {url} ({type(err).__name__}: {str(err).strip()[:120]}); "
        f"download it elsewhere and place it under {raw_dir}/ ({manual}), then rerun"
    )


def download(name: str, url: str, raw_dir: Path, filename: str, md5: str | None) -> Path:
    """Download `url` into raw_dir (skipped when a file with the right checksum is there)."""
    from torchvision.datasets.utils import check_integrity, download_url

    target = raw_dir / filename
    if check_integrity(str(target), md5):
        return target
    try:
        download_url(url, str(raw_dir), filename, md5)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as err:
        raise _offline_error(name, url, raw_dir, err) from None
    if not check_integrity(str(target), md5):
        raise DownloadError(f"{name}: {target} does not match md5 {md5}; delete it and rerun")
    return target


def _inside(root: Path, member: str) -> bool:
    """Whether archive member `member` would land inside `root`."""
    root = root.resolve()
    dest = (root / member).resolve()
    return dest == root or root in dest.parents


def safe_extract(archive: Path, dest: Path) -> None:
    """Extract a tar or zip archive, refusing members that would land outside `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():
                if not _inside(dest, member):
                    raise DatasetError(f"{archive}: member {member!r} would land outside {dest}; refusing to extract")
            zf.extractall(dest)
        return
    with tarfile.open(archive) as tf:
        for member in tf.getmembers():
            bad_link = (member.issym() or member.islnk()) and not _inside(
                dest, os.path.join(os.path.dirname(member.name), member.linkname)
            )
            if not _inside(dest, member.name) or bad_link:
                raise DatasetError(f"{archive}: member {member.name!r} would land outside {dest}; refusing to extract")
        tf.extractall(dest, filter="data")


def _is_image_name(path: Path) -> bool:
    """Whether the file name has an image extension."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def read_image_folder(root: Path) -> Source:
    """An ImageFolder-style directory: one sub-folder per class, images inside."""
    if not root.is_dir():
        raise DatasetError(f"image folder {root} does not exist; set data.folders to an existing directory")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise DatasetError(f"image folder {root} has no class sub-folders; expected {root}/<class>/<image>")
    records, skipped = [], []
    for cls in classes:
        for path in sorted(p for p in (root / cls).rglob("*") if p.is_file()):
            if path.name.startswith("."):
                continue
            if _is_image_name(path):
                records.append(Record(path, cls, "all"))
            else:
                skipped.append((path, "not_an_image"))
    return Source(records, classes, skipped)


# --- the embedded default ------------------------------------------------------------------


@register("digits", manual="nothing to place: the images ship inside scikit-learn")
def fetch_digits(raw_dir: Path) -> Source:
    """The 1,797 8x8 handwritten digits that ship with scikit-learn, written as PNG files."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8), 0..16 -> 0..255
    records = []
    for i, (img, label) in enumerate(zip(images, bunch.target)):
        path = raw_dir / str(label) / f"{i:04d}.png"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            Image.fromarray(img, mode="L").save(tmp, format="PNG")
            tmp.replace(path)
        records.append(Record(path, str(label), "all"))
    return Source(records, [str(c) for c in range(10)])


# --- torchvision-backed --------------------------------------------------------------------


def _torchvision(name: str, raw_dir: Path, make: Callable[[bool], object], urls: tuple[str, ...]) -> object:
    """Build a torchvision dataset, downloading with torchvision's code; offline -> one line."""
    try:
        return make(False)
    except (RuntimeError, FileNotFoundError):
        pass  # not there yet: download
    try:
        return make(True)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as err:
        raise _offline_error(name, urls[0] if urls else "(no download URL)", raw_dir, err) from None


CALTECH101_URL = "https://data.caltech.edu/records/mzrjq-6wc02/files/caltech-101.zip"


@register("caltech101", urls=(CALTECH101_URL,), manual="caltech101/101_ObjectCategories/<class>/image_0001.jpg")
def fetch_caltech101(raw_dir: Path) -> Source:
    """Caltech-101 through torchvision.datasets.Caltech101 (no official split)."""
    from torchvision.datasets import Caltech101

    ds = _torchvision("caltech101", raw_dir, lambda dl: Caltech101(str(raw_dir), download=dl), (CALTECH101_URL,))
    base = Path(ds.root) / "101_ObjectCategories"
    records = [
        Record(base / ds.categories[y] / f"image_{i:04d}.jpg", ds.categories[y], "all")
        for i, y in zip(ds.index, ds.y)
    ]
    return Source(records, list(ds.categories))


def _split_records(make: Callable[[str], object], splits: Iterable[str], files: str, labels: str) -> Source:
    """Records of a torchvision dataset over its official splits (private list attributes)."""
    records, classes = [], None
    for split in splits:
        ds = make(split)
        classes = list(ds.classes)
        for path, y in zip(getattr(ds, files), getattr(ds, labels)):
            records.append(Record(Path(path), classes[y], split))
    return Source(records, classes or [])


DTD_URL = "https://www.robots.ox.ac.uk/~vgg/data/dtd/download/dtd-r1.0.1.tar.gz"


@register("dtd", urls=(DTD_URL,), manual="dtd/dtd/images/<class>/*.jpg and dtd/dtd/labels/")
def fetch_dtd(raw_dir: Path) -> Source:
    """Describable Textures through torchvision.datasets.DTD (partition 1)."""
    from torchvision.datasets import DTD

    _torchvision("dtd", raw_dir, lambda dl: DTD(str(raw_dir), split="train", download=dl), (DTD_URL,))
    return _split_records(lambda s: DTD(str(raw_dir), split=s), ("train", "val", "test"), "_image_files", "_labels")


FLOWERS_URL = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/102flowers.tgz"


@register("flowers102", urls=(FLOWERS_URL,), manual="flowers-102/jpg/, flowers-102/imagelabels.mat, setid.mat")
def fetch_flowers102(raw_dir: Path) -> Source:
    """Oxford Flowers-102 through torchvision.datasets.Flowers102."""
    from torchvision.datasets import Flowers102

    _torchvision("flowers102", raw_dir, lambda dl: Flowers102(str(raw_dir), download=dl), (FLOWERS_URL,))
    classes = [f"flower_{i:03d}" for i in range(1, 103)]  # torchvision gives no names
    records = []
    for split in ("train", "val", "test"):
        ds = Flowers102(str(raw_dir), split=split)
        records += [Record(Path(p), classes[y], split) for p, y in zip(ds._image_files, ds._labels)]
    return Source(records, classes)


PETS_URLS = (
    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/images.tar.gz",
    "https://www.robots.ox.ac.uk/~vgg/data/pets/data/annotations.tar.gz",
)


@register("oxford_pets", urls=PETS_URLS, manual="oxford-iiit-pet/images/*.jpg and oxford-iiit-pet/annotations/")
def fetch_oxford_pets(raw_dir: Path) -> Source:
    """Oxford-IIIT Pets (37 breeds) through torchvision.datasets.OxfordIIITPet."""
    from torchvision.datasets import OxfordIIITPet

    _torchvision("oxford_pets", raw_dir, lambda dl: OxfordIIITPet(str(raw_dir), download=dl), PETS_URLS)
    return _split_records(lambda s: OxfordIIITPet(str(raw_dir), split=s), ("trainval", "test"), "_images", "_labels")


AIRCRAFT_URL = "https://www.robots.ox.ac.uk/~vgg/data/fgvc-aircraft/archives/fgvc-aircraft-2013b.tar.gz"


@register("fgvc_aircraft", urls=(AIRCRAFT_URL,), manual="fgvc-aircraft-2013b/data/images/ and its txt files")
def fetch_fgvc_aircraft(raw_dir: Path) -> Source:
    """FGVC-Aircraft (100 variants) through torchvision.datasets.FGVCAircraft."""
    from torchvision.datasets import FGVCAircraft

    _torchvision("fgvc_aircraft", raw_dir, lambda dl: FGVCAircraft(str(raw_dir), download=dl), (AIRCRAFT_URL,))
    return _split_records(lambda s: FGVCAircraft(str(raw_dir), split=s), ("train", "val", "test"), "_image_files",
                          "_labels")


@register("stanford_cars", manual="stanford_cars/devkit/, cars_train/, cars_test/, cars_test_annos_withlabels.mat "
                                  "(torchvision cannot download it any more: its original URL is gone)")
def fetch_stanford_cars(raw_dir: Path) -> Source:
    """Stanford Cars through torchvision.datasets.StanfordCars (manual placement only)."""
    from torchvision.datasets import StanfordCars

    try:
        StanfordCars(str(raw_dir), split="train")
    except RuntimeError:
        raise DatasetError(
            f"stanford_cars: not found under {raw_dir}/ and it has no working download URL; place "
            f"{REGISTRY['stanford_cars'].manual} there by hand, then rerun"
        ) from None
    records, classes = [], []
    for split in ("train", "test"):
        ds = StanfordCars(str(raw_dir), split=split)
        classes = list(ds.classes)
        records += [Record(Path(p), classes[y], split) for p, y in ds._samples]
    return Source(records, classes)


@register("imagenet", manual="ILSVRC2012_img_train.tar, ILSVRC2012_img_val.tar, ILSVRC2012_devkit_t12.tar.gz "
                             "(from image-net.org, after registration)")
def fetch_imagenet(raw_dir: Path) -> Source:
    """ImageNet-1k through torchvision.datasets.ImageNet (manual archives, as torchvision requires)."""
    from torchvision.datasets import ImageNet

    records, classes = [], []
    for split in ("train", "val"):
        try:
            ds = ImageNet(str(raw_dir), split=split)
        except RuntimeError as err:
            raise DatasetError(f"imagenet: {str(err).strip()} Place {REGISTRY['imagenet'].manual} under {raw_dir}/ "
                               "and rerun") from None
        classes = [names[0] for names in ds.classes]
        records += [Record(Path(p), classes[y], split) for p, y in ds.samples]
    return Source(records, classes)


# --- own downloaders -----------------------------------------------------------------------

CUB_URL = "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz"
CUB_MD5 = "97eceeb196236b17998738112f37df78"


@register("cub200", urls=(CUB_URL,), manual="CUB_200_2011.tgz, or its extracted CUB_200_2011/ folder")
def fetch_cub200(raw_dir: Path) -> Source:
    """CUB-200-2011 birds; official train/test split from train_test_split.txt."""
    base = raw_dir / "CUB_200_2011"
    if not (base / "images.txt").exists():
        safe_extract(download("cub200", CUB_URL, raw_dir, "CUB_200_2011.tgz", CUB_MD5), raw_dir)
    paths = dict(line.split(maxsplit=1) for line in (base / "images.txt").read_text().splitlines() if line.strip())
    labels = dict(line.split() for line in (base / "image_class_labels.txt").read_text().splitlines() if line.strip())
    is_train = dict(line.split() for line in (base / "train_test_split.txt").read_text().splitlines() if line.strip())
    classes = [line.split(maxsplit=1)[1] for line in (base / "classes.txt").read_text().splitlines() if line.strip()]
    records = [
        Record(base / "images" / paths[i], classes[int(labels[i]) - 1], "train" if is_train[i] == "1" else "test")
        for i in sorted(paths, key=int)
    ]
    return Source(records, classes)


DOGS_URLS = (
    "http://vision.stanford.edu/aditya86/ImageNetDogs/images.tar",
    "http://vision.stanford.edu/aditya86/ImageNetDogs/lists.tar",
)
DOGS_MD5 = ("1bb1f2a596ae7057f99d7d75860002ef", "edbb9f16854ec66506b5f09b583e0656")


@register("stanford_dogs", urls=DOGS_URLS, manual="images.tar and lists.tar, or the extracted Images/ and *_list.mat")
def fetch_stanford_dogs(raw_dir: Path) -> Source:
    """Stanford Dogs (120 breeds); official split from train_list.mat / test_list.mat."""
    import numpy as np
    from scipy.io import loadmat

    if not (raw_dir / "Images").is_dir():
        safe_extract(download("stanford_dogs", DOGS_URLS[0], raw_dir, "images.tar", DOGS_MD5[0]), raw_dir)
    if not (raw_dir / "train_list.mat").exists():
        safe_extract(download("stanford_dogs", DOGS_URLS[1], raw_dir, "lists.tar", DOGS_MD5[1]), raw_dir)
    records, classes = [], set()
    for split in ("train", "test"):
        mat = loadmat(raw_dir / f"{split}_list.mat", squeeze_me=True)
        for rel in np.atleast_1d(mat["file_list"]):  # a 1-entry list loads as a scalar
            rel = str(rel)
            cls = rel.split("/")[0].split("-", 1)[1]  # 'n02085620-Chihuahua/...' -> 'Chihuahua'
            classes.add(cls)
            records.append(Record(raw_dir / "Images" / rel, cls, split))
    return Source(records, sorted(classes))


INDOOR_URLS = (
    "http://groups.csail.mit.edu/vision/LabelMe/NewImages/indoorCVPR_09.tar",
    "https://web.mit.edu/torralba/www/TrainImages.txt",
    "https://web.mit.edu/torralba/www/TestImages.txt",
)


@register("indoor67", urls=INDOOR_URLS, manual="indoorCVPR_09.tar (or Images/<class>/), TrainImages.txt, "
                                               "TestImages.txt")
def fetch_indoor67(raw_dir: Path) -> Source:
    """MIT Indoor-67 scenes; official 80/20 per class split from TrainImages/TestImages.txt."""
    if not (raw_dir / "Images").is_dir():  # no published checksum: integrity is the decode check
        safe_extract(download("indoor67", INDOOR_URLS[0], raw_dir, "indoorCVPR_09.tar", None), raw_dir)
    split_of = {}
    for url, split in zip(INDOOR_URLS[1:], ("train", "test")):
        listing = download("indoor67", url, raw_dir, Path(url).name, None)
        split_of.update({line.strip(): split for line in listing.read_text().splitlines() if line.strip()})
    source = read_image_folder(raw_dir / "Images")
    records = [Record(r.path, r.class_name, split_of.get(f"{r.class_name}/{r.path.name}", "all"))
               for r in source.records]
    return Source(records, source.classes, source.skipped)


UTK_SEXES = ("male", "female")  # UTKFace file names: [age]_[gender]_[race]_[date&time].jpg, gender 0 / 1


@register("utkface", manual="UTKFace.tar.gz (or the extracted UTKFace/ folder of *.jpg), obtained from the "
                            "dataset's authors")
def fetch_utkface(raw_dir: Path) -> Source:
    """UTKFace, task sex: labels parsed from the file names of a user-provided archive or folder."""
    folder = raw_dir / "UTKFace"
    if not folder.is_dir():
        archives = sorted(p for p in raw_dir.glob("*") if p.is_file() and (tarfile.is_tarfile(p) or zipfile.is_zipfile(p)))
        if not archives:
            raise DatasetError(f"utkface: no archive or UTKFace/ folder under {raw_dir}/; it has no public download "
                               f"URL: place {REGISTRY['utkface'].manual} there and rerun")
        safe_extract(archives[0], raw_dir)
    if not folder.is_dir():
        raise DatasetError(f"utkface: the archive in {raw_dir}/ has no UTKFace/ folder")
    records, skipped = [], []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        parts = path.name.split("_")
        if len(parts) >= 3 and parts[1] in ("0", "1") and parts[0].isdigit():
            records.append(Record(path, UTK_SEXES[int(parts[1])], "all"))
        else:
            skipped.append((path, "unparsable_name"))
    return Source(records, list(UTK_SEXES), skipped)
