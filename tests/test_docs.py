"""README's params reference against params.yaml and hue/config.py: every key, its value, the stated fallbacks."""

import dataclasses
import re
from pathlib import Path

import yaml

from hue import config

ROOT = Path(__file__).resolve().parents[1]
FALLBACKS = {"extract.layer", "extract.image_size", "train.epochs", "train.image_size", "knn.search_k",
             "observe.n_permutations", "interactive.max_per_class"}  # README: "differs for seven keys"


def readme_table() -> dict[str, object]:
    """{section.key: value} of README's "Params reference" table, values read as YAML."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Params reference", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \| `([^`]*)` \|", section, re.M)
    return {key: _value(raw) for key, raw in rows}


def _value(raw: str) -> object:
    """A table cell as YAML; 1e-6 (no dot, a string to YAML 1.1) as the float it reads as."""
    value = yaml.safe_load(raw)
    try:
        return float(value) if isinstance(value, str) else value
    except ValueError:
        return value


def params_yaml() -> dict[str, object]:
    """{section.key: value} of params.yaml."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    return {f"{s}.{k}": v for s, keys in raw.items() for k, v in keys.items()}


def test_readme_lists_every_param_with_its_params_yaml_value():
    table, params = readme_table(), params_yaml()
    assert sorted(table) == sorted(params)
    assert {k: v for k, v in table.items() if v != params[k]} == {}


def test_params_yaml_sets_every_config_key():
    keys = {f"{s}.{f.name}" for s, cls in config.SECTIONS.items() for f in dataclasses.fields(cls)}
    assert keys == set(params_yaml())


def test_config_fallbacks_differ_from_params_yaml_where_readme_says():
    params = params_yaml()
    defaults = {f"{s}.{f.name}": f.default for s, cls in config.SECTIONS.items() for f in dataclasses.fields(cls)
                if f.default is not dataclasses.MISSING}
    differ = {k for k, v in defaults.items() if (list(v) if isinstance(v, tuple) else v) != params[k]}
    assert differ == FALLBACKS
