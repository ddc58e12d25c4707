"""The download stage's validation: every bad input is converted or skipped and counted."""

import json
from pathlib import Path
import shutil

import pandas as pd
import pytest

from hue import config, datasets, manifest
from tests.conftest import make_image


def folder_with_bad_inputs(root):
    for i in range(5):
        make_image(root / "cats" / f"{i}.jpg", seed=i)
        make_image(root / "dogs" / f"{i}.png", seed=10 + i)
    make_image(root / "cats" / "grey.png", mode="L")
    make_image(root / "cats" / "alpha.png", mode="RGBA")
    make_image(root / "dogs" / "palette.png", mode="P")
    make_image(root / "dogs" / "cmyk.jpg", mode="CMYK")
    make_image(root / "dogs" / "deep.png", mode="I;16")
    (root / "cats" / "zero.jpg").write_bytes(b"")
    good = make_image(root / "tmp.jpg", size=(64, 64)).read_bytes()
    (root / "tmp.jpg").unlink()
    (root / "dogs" / "trunc.jpg").write_bytes(good[: len(good) // 2])
    png = bytearray(make_image(root / "dogs" / "noise.png", size=(64, 64)).read_bytes())
    png[60:90] = bytes(30)  # valid header, damaged image data
    (root / "dogs" / "noise.png").write_bytes(bytes(png))
    (root / "cats" / "readme.txt").write_text("hi")
    (root / "empty").mkdir()
    return root


def params(**kw):
    kw.setdefault("run_folds", list(range(kw.get("folds", 5))))
    return config.build("data", {"datasets": ["mine"], "folders": {"mine": "/x"}, **kw})


def test_bad_inputs_are_converted_or_skipped_and_counted(tmp_path):
    root = folder_with_bad_inputs(tmp_path / "imgs")
    frame, m, aside = manifest.build("mine", datasets.read_image_folder(root), params(), root)
    assert m["n_images"] == 15 and m["n_classes"] == 2
    assert m["skipped"] == {"corrupt": 2, "not_an_image": 1, "zero_byte": 1}
    # every file set aside is listed with its reason, not only counted
    assert list(aside.columns) == manifest.SKIPPED_COLUMNS and len(aside) == 4
    named = {Path(p).name: r for p, r in zip(aside["path"], aside["reason"])}
    assert named["readme.txt"] == "not_an_image" and named["trunc.jpg"] == "corrupt" and named["noise.png"] == "corrupt"
    assert list(aside["reason"]).count("zero_byte") == 1
    assert m["n_skipped"] == 4
    assert m["skipped_classes"] == {"empty": "empty_class"}
    assert m["converted"] == {"CMYK": 1, "I;16": 1, "L": 1, "P": 1, "RGBA": 1}
    assert list(frame.columns) == manifest.COLUMNS
    assert sorted(frame["class_name"].unique()) == ["cats", "dogs"]
    assert frame["label"].tolist() == [0 if c == "cats" else 1 for c in frame["class_name"]]


def test_class_smaller_than_folds_fails_or_is_dropped(tmp_path):
    root = tmp_path / "imgs"
    for i in range(5):
        make_image(root / "big" / f"{i}.png", seed=i)
        make_image(root / "big2" / f"{i}.png", seed=9 + i)
    for i in range(2):
        make_image(root / "tiny" / f"{i}.png", seed=20 + i)
    src = datasets.read_image_folder(root)
    with pytest.raises(manifest.ManifestError, match="class 'tiny' has 2 usable image.*data.drop_small_classes"):
        manifest.build("mine", src, params(), root)
    frame, m, aside = manifest.build("mine", src, params(drop_small_classes=True), root)
    assert m["n_classes"] == 2 and m["skipped"] == {"small_class": 2}
    assert sorted(aside["reason"]) == ["small_class"] * 2 and set(aside["class_name"]) == {"tiny"}
    assert m["skipped_classes"] == {"tiny": "small_class"}


def test_nothing_usable_fails(tmp_path):
    root = tmp_path / "imgs"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"")
    with pytest.raises(manifest.ManifestError, match="no usable images remain"):
        manifest.build("mine", datasets.read_image_folder(root), params(folds=2), root)


def test_max_per_class_caps_with_a_seed(tmp_path):
    root = tmp_path / "imgs"
    for c in ("a", "b"):
        for i in range(9):
            make_image(root / c / f"{i}.png", seed=i)
    src = datasets.read_image_folder(root)
    f1, _, _ = manifest.build("mine", src, params(max_per_class=6, folds=3), root)
    f2, _, _ = manifest.build("mine", src, params(max_per_class=6, folds=3), root)
    assert f1["class_name"].value_counts().tolist() == [6, 6]
    assert f1.equals(f2)


def test_run_writes_manifest_and_metrics_for_a_local_folder(in_tmp):
    root = folder_with_bad_inputs(in_tmp / "imgs")
    shutil.rmtree(root / "empty")
    manifest.run("mine", config.build("data", {"datasets": ["mine"], "folders": {"mine": str(root)}}))
    frame = pd.read_parquet("data/manifests/mine.parquet")
    m = json.loads(open("metrics/detail/download/mine.json").read())
    assert len(frame) == m["n_images"] == 15 and sorted(set(frame["fold"])) == [0, 1, 2, 3, 4]
    assert len(pd.read_parquet("data/manifests/mine-skipped.parquet")) == m["n_skipped"] == 4
    assert not list((in_tmp / "data" / "manifests").glob(".*tmp"))


def test_snapshot_changes_with_content(tmp_path):
    make_image(tmp_path / "a" / "x.png")
    s1 = manifest.snapshot(tmp_path)
    make_image(tmp_path / "a" / "x.png", seed=3)
    assert manifest.snapshot(tmp_path) != s1
