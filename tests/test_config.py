import pytest

from hue import config
from tests.conftest import REPO
from hue.config import ConfigError


def test_defaults_in_params_yaml_load():
    for section in config.SECTIONS:
        config.load(section, REPO / "params.yaml")


def test_data_defaults():
    p = config.build("data", {})
    assert p.datasets == ("digits",) and p.folds == 5 and p.run_folds == (0, 1, 2, 3, 4)


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"foldz": 3}, "unknown key data.foldz; allowed keys"),
        ({"folds": 1}, "data.folds = 1 is invalid; allowed: an integer >= 2"),
        ({"folds": "5"}, "data.folds = '5' is invalid; allowed: an integer"),
        ({"folds": True}, "data.folds = True is invalid"),
        ({"datasets": ["nope"]}, "data.datasets = 'nope' is invalid; allowed: one of ["),
        ({"datasets": []}, "a non-empty list"),
        ({"run_folds": [0, 5]}, "data.run_folds = 5 is invalid; allowed: fold ids in 0..4"),
        ({"run_folds": [1, 1]}, "distinct fold ids"),
        ({"max_per_class": 0}, "data.max_per_class = 0"),
        ({"folders": {"digits": "/x"}}, "a name that is not a registry dataset"),
        ({"folders": ["x"]}, "a mapping"),
        ({"drop_small_classes": "yes"}, "true or false"),
    ],
)
def test_invalid_data_params_fail_with_one_line(raw, needle):
    with pytest.raises(ConfigError) as err:
        config.build("data", raw)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_folder_names_count_as_datasets():
    p = config.build("data", {"datasets": ["hcp_sex"], "folders": {"hcp_sex": "/data/hcp"}})
    assert p.folders["hcp_sex"] == "/data/hcp"


def test_params_are_frozen():
    p = config.build("data", {})
    with pytest.raises(Exception):
        p.folds = 3


def test_unknown_section_rejected(tmp_path):
    f = tmp_path / "params.yaml"
    f.write_text("data: {}\nmystery: {a: 1}\n")
    with pytest.raises(ConfigError, match="unknown section 'mystery'"):
        config.load("data", f)


def write_params(tmp_path, extract=None, train=None, observe=None):
    import yaml

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in (("extract", extract), ("train", train), ("observe", observe)):
        raw[section].update(values or {})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_trained_sources_need_trained_backbones(tmp_path):
    path = write_params(tmp_path, extract={"backbones": ["resnet18", "densenet201"]})
    with pytest.raises(ConfigError) as err:
        config.load("data", path)
    msg = str(err.value)
    assert "extract.backbones = 'densenet201' is invalid" in msg and "train.archs = ['resnet18']" in msg
    assert "add it to train.archs or drop onehot/hue from extract.weights" in msg and "\n" not in msg
    ok = write_params(tmp_path, extract={"backbones": ["densenet201"], "weights": ["imagenet"]},
                      observe={"compare": []})
    assert config.load("extract", ok).weights == ("imagenet",)


def test_compare_needs_both_trained_sources(tmp_path):
    path = write_params(tmp_path, extract={"weights": ["hue"]})
    with pytest.raises(ConfigError, match="observe.compare = 'resnet18' is invalid.*onehot and hue in extract.weights"):
        config.load("observe", path)


@pytest.mark.parametrize("raw, needle", [
    ({"weights": ["resnet"]}, "extract.weights = 'resnet' is invalid; allowed: one of ['imagenet', 'random', 'onehot'"),
    ({"weights": ["mine"], "weight_files": {"mine": "/w.pt"}}, None),
    ({"weights": "imagenet"}, "extract.weights = 'imagenet' is invalid; allowed: a list of str"),
    ({"weights": ["hue", "hue"]}, "distinct names"),
    ({"weight_files": {"hue": "/w.pt"}}, "a name other than"),
])
def test_extract_weights(raw, needle):
    if needle is None:
        assert config.build("extract", raw).weight_files["mine"] == "/w.pt"
        return
    with pytest.raises(ConfigError) as err:
        config.build("extract", raw)
    assert needle in str(err.value)


def test_new_scale_params_are_checked():
    with pytest.raises(ConfigError, match="index.shards = 0 is invalid"):
        config.build("index", {"shards": 0})
    with pytest.raises(ConfigError, match="train.devices = 0 is invalid"):
        config.build("train", {"devices": 0})
