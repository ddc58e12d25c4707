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
