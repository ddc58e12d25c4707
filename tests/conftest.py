"""Shared fixtures: tiny generated images and a repo-root working directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def make_image(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 10), seed: int = 0) -> Path:
    """Write a small random image of the given PIL mode (format from the suffix)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    w, h = size
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8), "RGB")
        if mode != "RGB":
            img = img.convert(mode)
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG"}[path.suffix.lower()]
    img.save(path, format=fmt)
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run the test inside an empty temporary directory."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def repo_env() -> dict:
    """Environment for subprocesses: this interpreter's bin first (python, dvc), no network."""
    import os
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # A closed local port as proxy: any download attempt fails at once, never leaves the machine.
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9", no_proxy="",
               DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1")
    return env


def run(cmd: list[str], cwd: Path, check: bool = True):
    """Run a command in `cwd` with repo_env(); raise with its output on failure."""
    import subprocess

    proc = subprocess.run(cmd, cwd=cwd, env=repo_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def copy_repo(dest: Path, params: dict | None = None) -> Path:
    """Copy the repo's files (tracked and untracked-not-ignored) into a fresh git repo at `dest`."""
    import shutil
    import subprocess

    import yaml

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and not rel.startswith(("metrics/", "plots/", "data/")) and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for keep in ("folders", "weights"):  # directories the pipeline depends on, empty by default
        (dest / "data" / keep).mkdir(parents=True, exist_ok=True)
        (dest / "data" / keep / ".gitkeep").touch()
    if params:
        raw = yaml.safe_load((dest / "params.yaml").read_text())
        for section, values in params.items():
            raw.setdefault(section, {}).update(values)
        (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "copy"]):
        run(cmd, dest)
    return dest


def interrupt_on_call(monkeypatch, owner, name: str, n: int) -> None:
    """Make owner.name raise KeyboardInterrupt on its n-th call (a kill in the middle of a run)."""
    real, calls = getattr(owner, name), {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, interrupted)
