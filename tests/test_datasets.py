"""Every registry entry, read from a tiny planted layout (no network)."""

from __future__ import annotations

import io
import os
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from hue import datasets
from tests.conftest import make_image


def plant_caltech101(root: Path) -> None:
    base = root / "caltech101" / "101_ObjectCategories"
    for cls in ("BACKGROUND_Google", "accordion", "ant"):
        for i in range(1, 4):
            make_image(base / cls / f"image_{i:04d}.jpg")


def plant_dtd(root: Path) -> None:
    base = root / "dtd" / "dtd"
    for split, names in {"train": ["a.jpg"], "val": ["b.jpg"], "test": ["c.jpg"]}.items():
        lines = []
        for cls in ("banded", "woven"):
            for n in names:
                make_image(base / "images" / cls / f"{cls}_{n}")
                lines.append(f"{cls}/{cls}_{n}")
        (base / "labels").mkdir(parents=True, exist_ok=True)
        (base / "labels" / f"{split}1.txt").write_text("\n".join(lines) + "\n")


def plant_flowers102(root: Path) -> None:
    base = root / "flowers-102"
    for i in range(1, 7):
        make_image(base / "jpg" / f"image_{i:05d}.jpg")
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array([1, 1, 2, 2, 102, 102])})
    scipy.io.savemat(base / "setid.mat", {"trnid": np.array([1, 3]), "valid": np.array([5, 2]),
                                          "tstid": np.array([4, 6])})


def plant_oxford_pets(root: Path) -> None:
    base = root / "oxford-iiit-pet"
    rows = {"trainval": ["Abyssinian_1 1 1 1", "beagle_1 2 2 1"], "test": ["Abyssinian_2 1 1 1", "beagle_2 2 2 1"]}
    (base / "annotations").mkdir(parents=True)
    for split, lines in rows.items():
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            make_image(base / "images" / f"{line.split()[0]}.jpg")


def plant_fgvc_aircraft(root: Path) -> None:
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    (data / "variants.txt").write_text("707-320\nA320\n")
    splits = {"train": ["0001 707-320", "0002 A320"], "val": ["0003 A320"], "test": ["0004 707-320"]}
    splits["trainval"] = splits["train"] + splits["val"]
    for split, lines in splits.items():
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
        for line in lines:
            make_image(data / "images" / f"{line.split()[0]}.jpg")


def _annos(pairs):
    arr = np.zeros(len(pairs), dtype=[("fname", "O"), ("class", "O")])
    for i, (f, c) in enumerate(pairs):
        arr[i] = (f, c)
    return arr


def plant_stanford_cars(root: Path) -> None:
    base = root / "stanford_cars"
    (base / "devkit").mkdir(parents=True)
    scipy.io.savemat(base / "devkit" / "cars_meta.mat",
                     {"class_names": np.array(["AM General Hummer", "Acura RL"], dtype=object)})
    scipy.io.savemat(base / "devkit" / "cars_train_annos.mat", {"annotations": _annos([("00001.jpg", 1), ("00002.jpg", 2)])})
    scipy.io.savemat(base / "cars_test_annos_withlabels.mat", {"annotations": _annos([("00001.jpg", 2), ("00002.jpg", 1)])})
    for f in ("00001.jpg", "00002.jpg"):
        make_image(base / "cars_train" / f)
    make_image(base / "cars_test" / "00001.jpg")
    make_image(base / "cars_test" / "00002.jpg")


def plant_imagenet(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    wnids = {"n01440764": ("tench", "Tinca tinca"), "n01443537": ("goldfish",)}
    torch.save((wnids, ["n01440764", "n01443537"]), root / "meta.bin")
    for split in ("train", "val"):
        for w in wnids:
            make_image(root / split / w / f"{w}_{split}_1.JPEG")


def plant_cub200(root: Path) -> None:
    base = root / "CUB_200_2011"
    names = ["001.Black_footed_Albatross/a.jpg", "001.Black_footed_Albatross/b.jpg", "002.Laysan_Albatross/c.jpg"]
    for n in names:
        make_image(base / "images" / n)
    (base / "images.txt").write_text("".join(f"{i} {n}\n" for i, n in enumerate(names, 1)))
    (base / "image_class_labels.txt").write_text("1 1\n2 1\n3 2\n")
    (base / "train_test_split.txt").write_text("1 1\n2 0\n3 1\n")
    (base / "classes.txt").write_text("1 001.Black_footed_Albatross\n2 002.Laysan_Albatross\n")


def plant_stanford_dogs(root: Path) -> None:
    files = {"train": ["n02085620-Chihuahua/n02085620_1.jpg", "n02085782-Japanese_spaniel/n02085782_1.jpg"],
             "test": ["n02085620-Chihuahua/n02085620_2.jpg"]}
    for split, rels in files.items():
        for rel in rels:
            make_image(root / "Images" / rel)
        scipy.io.savemat(root / f"{split}_list.mat", {"file_list": np.array(rels, dtype=object)})


def plant_indoor67(root: Path) -> None:
    for cls in ("bakery", "kitchen"):
        for i in range(2):
            make_image(root / "Images" / cls / f"{cls}{i}.jpg")
    (root / "TrainImages.txt").write_text("bakery/bakery0.jpg\nkitchen/kitchen0.jpg\n")
    (root / "TestImages.txt").write_text("bakery/bakery1.jpg\nkitchen/kitchen1.jpg\n")


def plant_utkface(root: Path) -> None:
    staging = root / "staging" / "UTKFace"
    for name in ("25_0_1_20170116174525125.jpg.chip.jpg", "30_1_2_20170116174525126.jpg.chip.jpg",
                 "41_1_0_20170116174525127.jpg.chip.jpg", "61_3_20170109142408075.jpg"):
        make_image(staging / name)
    with tarfile.open(root / "UTKFace.tar.gz", "w:gz") as tf:
        tf.add(staging, arcname="UTKFace")
    import shutil

    shutil.rmtree(root / "staging")


PLANTED = {
    "caltech101": (plant_caltech101, 6, ["accordion", "ant"]),
    "dtd": (plant_dtd, 6, ["banded", "woven"]),
    "flowers102": (plant_flowers102, 6, None),
    "oxford_pets": (plant_oxford_pets, 4, ["Abyssinian", "Beagle"]),
    "fgvc_aircraft": (plant_fgvc_aircraft, 4, ["707-320", "A320"]),
    "stanford_cars": (plant_stanford_cars, 4, ["AM General Hummer", "Acura RL"]),
    "imagenet": (plant_imagenet, 4, ["tench", "goldfish"]),
    "cub200": (plant_cub200, 3, ["001.Black_footed_Albatross", "002.Laysan_Albatross"]),
    "stanford_dogs": (plant_stanford_dogs, 3, ["Chihuahua", "Japanese_spaniel"]),
    "indoor67": (plant_indoor67, 4, ["bakery", "kitchen"]),
    "utkface": (plant_utkface, 3, ["male", "female"]),
}


def test_every_registry_entry_has_a_planted_test():
    assert set(datasets.REGISTRY) == set(PLANTED) | {"digits"}


@pytest.fixture
def no_md5(monkeypatch):
    """Flowers-102 checks the md5 of its .mat files; planted ones are tiny stand-ins."""
    monkeypatch.setattr("torchvision.datasets.flowers102.check_integrity", lambda path, md5=None: os.path.exists(path))


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_registry_entry_reads_planted_layout(name, tmp_path, no_md5):
    plant, n_images, classes = PLANTED[name]
    plant(tmp_path)
    src = datasets.fetch(name, tmp_path)
    assert len(src.records) == n_images
    assert all(r.path.exists() for r in src.records)
    if classes is not None:
        assert src.classes == classes
    assert {r.class_name for r in src.records} <= set(src.classes)


def test_official_splits_are_kept(tmp_path, no_md5):
    plant_flowers102(tmp_path)
    src = datasets.fetch("flowers102", tmp_path)
    by_path = {r.path.name: (r.split, r.class_name) for r in src.records}
    assert by_path["image_00001.jpg"] == ("train", "flower_001")
    assert by_path["image_00006.jpg"] == ("test", "flower_102")
    plant_cub200(tmp_path / "cub")
    assert [r.split for r in datasets.fetch("cub200", tmp_path / "cub").records] == ["train", "test", "train"]


def test_utkface_skips_unparsable_names(tmp_path):
    plant_utkface(tmp_path)
    src = datasets.fetch("utkface", tmp_path)
    assert [reason for _, reason in src.skipped] == ["unparsable_name"]
    assert sorted(r.class_name for r in src.records) == ["female", "female", "male"]


def test_digits_is_offline_and_deterministic(tmp_path):
    a = datasets.fetch("digits", tmp_path / "a")
    b = datasets.fetch("digits", tmp_path / "b")
    assert len(a.records) == 1797 and a.classes == [str(i) for i in range(10)]
    assert a.records[5].path.read_bytes() == b.records[5].path.read_bytes()


def test_image_folder_lists_classes_and_non_images(tmp_path):
    make_image(tmp_path / "a" / "x.png")
    make_image(tmp_path / "b" / "nested" / "y.jpg")
    (tmp_path / "b" / "notes.txt").write_text("hello")
    (tmp_path / "empty").mkdir()
    src = datasets.read_image_folder(tmp_path)
    assert src.classes == ["a", "b", "empty"]
    assert [r.class_name for r in src.records] == ["a", "b"]
    assert [(p.name, why) for p, why in src.skipped] == [("notes.txt", "not_an_image")]


def test_unknown_dataset_names_the_known_ones():
    with pytest.raises(datasets.DatasetError, match="unknown dataset 'nope'; known: \\['caltech101'"):
        datasets.get("nope")


def _offline(*args, **kwargs):
    raise urllib.error.URLError("[Errno -2] Name or service not known")


@pytest.mark.parametrize("name", ["dtd", "caltech101", "flowers102", "oxford_pets", "fgvc_aircraft"])
def test_torchvision_download_offline_is_one_clear_line(name, tmp_path, monkeypatch):
    module = {"dtd": "dtd", "caltech101": "caltech", "flowers102": "flowers102", "oxford_pets": "oxford_iiit_pet",
              "fgvc_aircraft": "fgvc_aircraft"}[name]
    monkeypatch.setattr(f"torchvision.datasets.{module}.download_and_extract_archive", _offline)
    with pytest.raises(datasets.DownloadError) as err:
        datasets.fetch(name, tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"{name}: could not download https://") and "place it under" in msg and "\n" not in msg
    assert datasets.REGISTRY[name].urls[0] in msg


@pytest.mark.parametrize("name", ["cub200", "stanford_dogs", "indoor67"])
def test_own_download_offline_is_one_clear_line(name, tmp_path, monkeypatch):
    monkeypatch.setattr("torchvision.datasets.utils.download_url", _offline)
    with pytest.raises(datasets.DownloadError, match=f"^{name}: could not download http.*place it under"):
        datasets.fetch(name, tmp_path)


@pytest.mark.parametrize("name", ["stanford_cars", "imagenet", "utkface"])
def test_manual_only_datasets_say_where_to_place_files(name, tmp_path):
    with pytest.raises(datasets.DatasetError, match=f"^{name}: .*(place|Place)"):
        datasets.fetch(name, tmp_path)


def _tar_with(path: Path, member: str, linkname: str | None = None) -> Path:
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo(member)
        if linkname:
            info.type, info.linkname = tarfile.SYMTYPE, linkname
            tf.addfile(info)
        else:
            data = b"x"
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("member, link", [("../evil.txt", None), ("/abs/evil.txt", None), ("ok/link", "../../x")])
def test_archive_extraction_refuses_members_outside_target(tmp_path, member, link):
    archive = _tar_with(tmp_path / "a.tar", member, link)
    with pytest.raises(datasets.DatasetError, match="would land outside"):
        datasets.safe_extract(archive, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_zip_extraction_refuses_members_outside_target(tmp_path):
    import zipfile

    with zipfile.ZipFile(tmp_path / "a.zip", "w") as zf:
        zf.writestr("../evil.txt", "x")
    with pytest.raises(datasets.DatasetError, match="would land outside"):
        datasets.safe_extract(tmp_path / "a.zip", tmp_path / "out")
