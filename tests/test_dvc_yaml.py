"""dvc.yaml declares, for every stage, exactly the code its script can run."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def hue_imports(path: Path) -> set[str]:
    """Repository paths of the `hue` modules a file imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "hue":
                found |= {f"hue/{alias.name}.py" for alias in node.names}
            elif node.module.startswith("hue."):
                found.add(node.module.replace(".", "/") + ".py")
        elif isinstance(node, ast.ImportFrom) and node.level and path.parent.name == "hue":
            found.add(f"hue/{node.module}.py")
        elif isinstance(node, ast.Import):
            found |= {a.name.replace(".", "/") + ".py" for a in node.names if a.name.startswith("hue.")}
    return {p for p in found if (ROOT / p).is_file()}


def import_closure(script: str) -> set[str]:
    """The script and every `hue` module it reaches through imports."""
    seen: set[str] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo.extend(hue_imports(ROOT / path))
    return seen


def code_deps() -> dict[str, list[str]]:
    """Each stage's declared dependencies under stages/ and hue/."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = {}
    for name, stage in stages.items():
        deps = stage.get("do", stage)["deps"]
        declared[name] = [d for d in deps if isinstance(d, str) and d.startswith(("stages/", "hue/"))]
    return declared


@pytest.mark.parametrize("stage", sorted(code_deps()))
def test_stage_depends_on_exactly_the_code_its_script_imports(stage):
    declared = code_deps()[stage]
    scripts = [d for d in declared if d.startswith("stages/")]
    assert len(scripts) == 1, f"{stage}: one stage script expected, got {scripts}"
    needed = import_closure(scripts[0])
    assert sorted(set(declared)) == sorted(needed), (
        f"{stage}: missing {sorted(needed - set(declared))}, not imported {sorted(set(declared) - needed)}"
    )
    assert len(declared) == len(set(declared)), f"{stage}: a dependency is listed twice"


def test_closure_follows_function_level_imports(tmp_path, monkeypatch):
    script = tmp_path / "stages" / "x.py"
    script.parent.mkdir()
    script.write_text("def main():\n    from hue import knn\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "hue").mkdir()
    (tmp_path / "hue" / "knn.py").write_text("from hue.search import top_k\n")
    (tmp_path / "hue" / "search.py").write_text("import numpy\n")
    assert import_closure("stages/x.py") == {"stages/x.py", "hue/knn.py", "hue/search.py"}
