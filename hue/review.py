"""Review a change as numbers: what params changed, every headline metric base vs new, paired over
folds where both sides have per-fold values (a verdict of "changed" or "within fold noise"), and
the figures that changed, embedded side by side.

Both sides are read from git (a commit, branch, tag or DVC experiment) or, for the new side by
default, from the workspace, so it works for any two revisions.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path, PurePosixPath

from hue import paths, stats
from hue.errors import HueError

WORKSPACE = None  # the `new` side read from the working tree


class ReviewError(HueError):
    """A revision cannot be read."""


@dataclasses.dataclass(frozen=True)
class Side:
    """One side of the comparison: a git revision, or the workspace (rev None)."""

    rev: str | None
    label: str

    def read(self, path: str) -> bytes | None:
        """A file's bytes at this side, None if it does not exist there."""
        if self.rev is None:
            p = Path(path)
            return p.read_bytes() if p.is_file() else None
        proc = subprocess.run(["git", "show", f"{self.rev}:{path}"], capture_output=True)
        return proc.stdout if proc.returncode == 0 else None

    def files(self, folder: str, suffix: str) -> list[str]:
        """Files under `folder` (recursively) with `suffix`, as repo-relative posix paths."""
        if self.rev is None:
            return sorted(p.as_posix() for p in Path(folder).rglob(f"*{suffix}") if p.is_file())
        proc = subprocess.run(["git", "ls-tree", "-r", "--name-only", self.rev, "--", folder], capture_output=True,
                              text=True)
        return sorted(f for f in proc.stdout.splitlines() if f.endswith(suffix))


def resolve(rev: str) -> Side:
    """A git revision or a DVC experiment name (refs/exps/.../<name>) as a readable side."""
    proc = subprocess.run(["git", "rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}"], capture_output=True,
                          text=True)
    if proc.returncode == 0:
        return Side(proc.stdout.strip(), f"{rev} ({proc.stdout.strip()[:8]})")
    refs = subprocess.run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], capture_output=True,
                          text=True).stdout.split()
    named = [r for r in refs if r.rsplit("/", 1)[-1] == rev]
    if len(named) == 1:
        sha = subprocess.run(["git", "rev-parse", named[0]], capture_output=True, text=True).stdout.strip()
        return Side(sha, f"experiment {rev} ({sha[:8]})")
    raise ReviewError(f"{rev!r} is neither a git revision nor a DVC experiment name here; check `git log` or "
                      "`dvc exp show`, and fetch the base branch (actions/checkout with fetch-depth: 0)")


def flatten(obj, prefix: str = "") -> dict[str, object]:
    """Nested JSON -> {'a.b.c': leaf}."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def headline(side: Side) -> dict[str, object]:
    """Every headline metric of a side: {'metrics/train.json:digits/resnet18.delta': value}."""
    out = {}
    for path in side.files(str(paths.METRICS), ".json"):
        if PurePosixPath(path).parent != PurePosixPath(paths.METRICS.as_posix()):
            continue  # metrics/detail/ and metrics/timings/ are not headline numbers
        for key, value in flatten(json.loads(side.read(path))).items():
            out[f"{path}:{key}"] = value
    return out


def per_fold(side: Side) -> dict[str, dict[str, float]]:
    """The per-fold values behind each headline metric, under the same keys."""
    raw = side.read(paths.FOLDS.as_posix())
    if raw is None:
        return {}
    out = {}
    for file, tree in json.loads(raw).items():
        for key, folds in flatten_folds(tree).items():
            out[f"{file}:{key}"] = folds
    return out


def flatten_folds(tree, prefix: str = "") -> dict[str, dict]:
    """Nested mirror -> {'a.b': {'0': v, ...}}: the first dict whose keys are fold ids is a leaf."""
    if isinstance(tree, dict) and tree and all(k.isdigit() for k in tree):
        return {prefix: tree}
    out = {}
    for k, v in (tree or {}).items():
        out.update(flatten_folds(v, f"{prefix}.{k}" if prefix else k))
    return out


def compare_metric(key: str, base: dict, new: dict, base_folds: dict, new_folds: dict) -> dict:
    """One headline metric: base, new, delta and, with per-fold values on both sides, the paired verdict."""
    b, n = base.get(key), new.get(key)
    row = {"metric": key, "base": b, "new": n, "delta": None, "paired": None}
    if key not in base:
        return {**row, "verdict": "added"}
    if key not in new:
        return {**row, "verdict": "removed"}
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)  # noqa: E731
    if number(b) and number(n):
        row["delta"] = n - b
    folds = sorted(set(base_folds.get(key, {})) & set(new_folds.get(key, {})), key=int)
    pairs = [(base_folds[key][f], new_folds[key][f]) for f in folds]
    pairs = [(x, y) for x, y in pairs if number(x) and number(y)]
    if len(pairs) >= 2:
        row["paired"] = stats.paired([x for x, _ in pairs], [y for _, y in pairs])
        return {**row, "verdict": row["paired"]["verdict"]}
    return {**row, "verdict": stats.UNCHANGED if b == n else "changed (no folds to judge noise)"}


def params_diff(base: Side, new: Side) -> list[dict]:
    """`dvc params diff` between the two sides: [{'param', 'base', 'new'}]."""
    cmd = ["dvc", "params", "diff", base.rev, *([] if new.rev is None else [new.rev]), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ReviewError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip().splitlines()[-1:]}")
    out = []
    for file, params in json.loads(proc.stdout or "{}").items():
        for name, change in params.items():
            out.append({"param": f"{file}:{name}" if file != "params.yaml" else name,
                        "base": change.get("old"), "new": change.get("new")})
    return out


def changed_figures(base: Side, new: Side, images_dir: Path, report_dir: Path) -> list[dict]:
    """PNG files under plots/ whose bytes differ, copied beside the report; links relative to the report."""
    out = []
    for path in sorted(set(base.files(str(paths.PLOTS), ".png")) | set(new.files(str(paths.PLOTS), ".png"))):
        b, n = base.read(path), new.read(path)
        if b == n:
            continue
        entry = {"path": path, "base": None, "new": None}
        stem = path.replace("/", "__")[: -len(".png")]
        for side, data in (("base", b), ("new", n)):
            if data is not None:
                target = images_dir / f"{stem}.{side}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
                entry[side] = Path(os.path.relpath(target, report_dir)).as_posix()
        out.append(entry)
    return out


def fmt(value) -> str:
    """A cell."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown(base: Side, new: Side, params: list[dict], rows: list[dict], figures: list[dict]) -> str:
    """The report."""
    counts = {v: sum(r["verdict"] == v for r in rows) for v in dict.fromkeys(r["verdict"] for r in rows)}
    lines = [f"# hue review: {new.label} vs {base.label}", "",
             "Verdicts pair the per-fold values of both sides (same folds): **changed** when the 95% CI of the "
             "mean per-fold delta excludes 0, **within fold noise** when it does not. With a handful of folds only "
             "large, consistent changes clear the bar; a small delta called noise is not evidence of no effect.", "",
             "**Summary:** " + (", ".join(f"{n} {v}" for v, n in counts.items()) or "no headline metrics"), ""]
    if not any(r["base"] is not None for r in rows):
        lines += [f"_The base ({base.label}) has no headline metrics: every metric is new._", ""]
    lines += ["## Params changed", ""]
    if params:
        lines += ["| param | base | new |", "|---|---|---|"] + [
            f"| {p['param']} | {'–' if p['base'] is None else p['base']} | {'–' if p['new'] is None else p['new']} |"
            for p in params]
    else:
        lines.append("No param changed.")
    lines += ["", "## Headline metrics", "",
              "| metric | base | new | Δ | paired Δ over folds [95% CI] | p | verdict |", "|---|---|---|---|---|---|---|"]
    order = {stats.CHANGED: 0, "added": 1, "removed": 2}
    for r in sorted(rows, key=lambda r: (order.get(r["verdict"], 3), r["metric"])):
        c = r["paired"]
        paired = "–" if c is None else f"{c['delta']:+.4g} [{c['ci_low']:+.4g}, {c['ci_high']:+.4g}] ({c['n_folds']} folds)"
        p = "–" if c is None or c["p_value"] is None else f"{c['p_value']:.3g}"
        delta = "–" if r["delta"] is None else f"{r['delta']:+.4g}"
        lines.append(f"| `{r['metric']}` | {fmt(r['base'])} | {fmt(r['new'])} | {delta} | {paired} | {p} | "
                     f"{r['verdict']} |")
    lines += ["", "## Figures that changed", ""]
    if not figures:
        lines.append("No figure changed.")
    for f in figures:
        cells = ["(absent)" if f[side] is None else f"![{side}]({f[side]})" for side in ("base", "new")]
        lines += [f"### `{f['path']}`", "", "| base | new |", "|---|---|", f"| {cells[0]} | {cells[1]} |", ""]
    return "\n".join(lines) + "\n"


def review(base_rev: str, new_rev: str | None, out: Path, images_dir: Path | None = None) -> list[dict]:
    """Write the review report comparing `new_rev` (default: the workspace) with `base_rev`."""
    base = resolve(base_rev)
    new = Side(None, "workspace") if new_rev is None else resolve(new_rev)
    images_dir = images_dir or out.parent / out.stem
    old, now = headline(base), headline(new)
    base_folds, new_folds = per_fold(base), per_fold(new)
    rows = [compare_metric(k, old, now, base_folds, new_folds) for k in sorted(set(old) | set(now))]
    figures = changed_figures(base, new, images_dir, out.parent)
    report = markdown(base, new, params_diff(base, new), rows, figures)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    return rows
