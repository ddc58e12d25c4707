"""The sweep report: every DVC experiment of a grid, one-hot vs hue paired over folds, and why.

Experiments come from `dvc exp show --json`; each one's per-fold numbers are read from its own
commit (metrics/detail/folds.json and the training detail files), never from `exp show`'s metrics,
which for a failed experiment are its parent's. A failed experiment, or one with folds missing,
is reported as such instead of stopping the report.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
from pathlib import Path
from typing import Callable

from hue import paths, plotting, stats
from hue.errors import HueError

Reader = Callable[[str, str], "bytes | None"]  # (rev, path) -> file bytes at that revision, None if absent
FACTORS = ("loss.hue_weight", "loss.distance_scale", "loss.labels", "loss.form")
LABELS = ("circle", "circle_random", "discrete", "uniform", "centered")


class SweepError(HueError):
    """The experiments cannot be listed."""


@dataclasses.dataclass
class Experiment:
    """One row of the report."""

    name: str
    rev: str
    state: str  # success | failed | queued | running | baseline
    params: dict  # flattened params.yaml
    onehot: dict[str, float] = dataclasses.field(default_factory=dict)  # fold -> test accuracy
    hue: dict[str, float] = dataclasses.field(default_factory=dict)
    hue_head: dict[str, float] = dataclasses.field(default_factory=dict)
    grad_ratio: float | None = None  # mean over folds of the final epoch's hue/CE gradient-norm ratio
    hue_excess: float | None = None  # mean final L_hue - log M: how far the hue term left its no-information value
    scale: float | None = None  # the divisor of Eq. 5 the hue runs used (null in params = 2M)
    note: str = ""

    @property
    def paired(self) -> dict | None:
        """hue - one-hot over the folds both have."""
        folds = sorted(set(self.onehot) & set(self.hue), key=int)
        if not folds:
            return None
        return stats.paired([self.onehot[f] for f in folds], [self.hue[f] for f in folds])


def flatten(obj, prefix: str = "") -> dict:
    """Nested params -> {'loss.hue_weight': 1.0}."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: obj}


def entries(exp_show: list[dict]) -> list[tuple[str, str, str, dict]]:
    """(name, rev, state, params) of the baseline commit(s) and every experiment in `dvc exp show --json`."""
    out = []
    for commit in exp_show:
        if commit.get("rev") == "workspace":
            continue
        params = ((commit.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data", {})
        out.append((commit.get("name") or commit["rev"][:7], commit["rev"], "baseline", flatten(params)))
        for exp in commit.get("experiments") or []:
            rev = (exp.get("revs") or [{}])[0]
            executor = exp.get("executor") or {}
            state = executor.get("state") or ("failed" if rev.get("error") else "success")
            if rev.get("error"):
                state = "failed"
            params = ((rev.get("data") or {}).get("params") or {}).get("params.yaml", {}).get("data", {})
            out.append((exp.get("name") or rev.get("name") or rev.get("rev", "?")[:7], rev.get("rev", ""), state,
                        flatten(params)))
    return out


def load(name: str, rev: str, state: str, params: dict, read: Reader, key: str) -> Experiment:
    """An experiment's per-fold numbers for `key` (dataset/arch), read from its own commit."""
    exp = Experiment(name, rev, state, params)
    if state not in ("success", "baseline"):
        exp.note = f"{state}: no results (exp show's metrics for it are its parent's, not its own)"
        return exp
    raw = read(rev, paths.FOLDS.as_posix())
    mirror = json.loads(raw) if raw else {}
    folds = mirror.get(paths.TRAIN_METRICS.as_posix(), {}).get(key)
    if not folds:
        exp.note = f"no per-fold training results for {key} at {rev[:8]}"
        return exp
    exp.onehot, exp.hue, exp.hue_head = folds["onehot"], folds["hue"], folds.get("hue_head", {})
    expected = [str(f) for f in params.get("data.run_folds", [])]
    missing = [f for f in expected if f not in exp.onehot or f not in exp.hue]
    if missing:
        exp.note = f"missing folds {missing}: paired over {len(set(exp.onehot) & set(exp.hue))} folds"
    ratios, excess, scales = [], [], set()
    for detail in mirror.get("diagnostics", {}).get(key, {}).values():
        if detail.get("final_grad_ratio") is not None:
            ratios.append(detail["final_grad_ratio"])
        if detail.get("final_loss_hue") is not None and detail.get("log_m") is not None:
            excess.append(detail["final_loss_hue"] - detail["log_m"])
        if detail.get("distance_scale") is not None:
            scales.add(detail["distance_scale"])
    exp.grad_ratio = sum(ratios) / len(ratios) if ratios else None
    exp.hue_excess = sum(excess) / len(excess) if excess else None
    exp.scale = scales.pop() if len(scales) == 1 else None
    return exp


def differing(experiments: list[Experiment]) -> list[str]:
    """Params whose values are not the same in every experiment."""
    keys = sorted({k for e in experiments for k in e.params})
    return [k for k in keys if len({json.dumps(e.params.get(k), sort_keys=True) for e in experiments}) > 1]


def _num(v, digits: int = 4) -> str:
    """A cell."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _ms(values: dict) -> str:
    """mean ± std of per-fold values."""
    if not values:
        return "–"
    m, s = stats.mean_std(list(values.values()))
    return f"{m:.4f} ± {s:.4f}"


def table(experiments: list[Experiment], key: str) -> str:
    """The Markdown table: params that differ, one-hot vs hue, paired delta with its CI, p, verdict, diagnostics."""
    shown = [k for k in differing(experiments) if not k.startswith("data.folders")]
    head = ["experiment", *shown, "one-hot", "+ hue", "Δ [95% CI]", "p", "verdict", "hue head", "grad ratio",
            "L_hue − log M", "folds", "note"]
    lines = [f"# Sweep: {key}, one-hot vs one-hot + hue, paired over folds", "",
             "Δ = hue − one-hot test accuracy per fold; **changed** when its 95% CI excludes 0, **within fold noise** "
             "otherwise. grad ratio: ‖∂(w·L_hue)/∂f‖ / ‖∂CE/∂f‖ at the pooled features (final epoch, mean over "
             "folds); L_hue − log M: 0 means the hue head carries no class information.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in experiments:
        c = e.paired
        delta = "–" if c is None else f"{c['delta']:+.4f} [{c['ci_low']:+.4f}, {c['ci_high']:+.4f}]"
        p = "–" if c is None or c["p_value"] is None else f"{c['p_value']:.3g}"
        head_acc = _num(stats.mean_std(list(e.hue_head.values()))[0]) if e.hue_head else "–"
        cells = [e.name, *[str(e.params.get(k, "–")) for k in shown], _ms(e.onehot), _ms(e.hue), delta, p,
                 "–" if c is None else c["verdict"], head_acc, _num(e.grad_ratio, 3), _num(e.hue_excess, 4),
                 str(0 if c is None else c["n_folds"]), e.note or ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(experiments: list[Experiment], out_dir: Path) -> list[Path]:
    """Δ vs distance_scale, Δ vs hue_weight (error bars: 95% CI), Δ per label configuration and per form."""
    plt = plotting.pyplot()
    done = [e for e in experiments if e.paired is not None and e.state != "baseline"] or \
        [e for e in experiments if e.paired is not None]
    written = []

    def errorbar(ax, xs, es, label, **kw):
        ys = [e.paired["delta"] for e in es]
        lo = [e.paired["delta"] - e.paired["ci_low"] if not math.isnan(e.paired["ci_low"]) else 0 for e in es]
        hi = [e.paired["ci_high"] - e.paired["delta"] if not math.isnan(e.paired["ci_high"]) else 0 for e in es]
        ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", capsize=3, label=label, **kw)

    for factor, other, fname, log in (("loss.distance_scale", "loss.hue_weight", "delta_vs_scale.png", True),
                                      ("loss.hue_weight", "loss.distance_scale", "delta_vs_weight.png", True)):
        fig, ax = plt.subplots(figsize=(6.0, 4.0))
        soft = [e for e in done if e.params.get("loss.form", "softmax") == "softmax"]
        groups: dict = {}
        for e in soft:
            groups.setdefault(str(e.params.get(other)), []).append(e)
        for i, (g, es) in enumerate(sorted(groups.items())):
            xs = [e.scale if factor == "loss.distance_scale" else e.params.get(factor) for e in es]
            keep = [(x, e) for x, e in zip(xs, es) if x is not None]
            if keep:
                jitter = 1 + 0.04 * (i - len(groups) / 2)
                errorbar(ax, [x * jitter for x, _ in keep], [e for _, e in keep], f"{other.split('.')[1]} = {g}")
        ax.axhline(0, color="grey", lw=1, ls="--")
        if log:
            ax.set_xscale("log")
        ax.set_xlabel(factor + (" as used (null = 2M)" if factor == "loss.distance_scale" else ""))
        ax.set_ylabel("Δ test accuracy, hue − one-hot (95% CI)")
        ax.set_title(f"softmax form: Δ vs {factor.split('.')[1]}")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        fig.tight_layout()
        plotting.save(fig, out_dir / fname)
        written.append(out_dir / fname)
    fig, ax = plt.subplots(figsize=(7.0, 4.0))
    forms = ("softmax", "l2")
    for j, form in enumerate(forms):
        xs, es = [], []
        for i, label in enumerate(LABELS):
            match = [e for e in done if e.params.get("loss.labels") == label and e.params.get("loss.form") == form]
            for e in match:
                xs.append(i + (j - 0.5) * 0.3)
                es.append(e)
        if es:
            errorbar(ax, xs, es, f"form = {form}")
    ax.set_xticks(range(len(LABELS)), LABELS)
    ax.axhline(0, color="grey", lw=1, ls="--")
    ax.set_ylabel("Δ test accuracy, hue − one-hot (95% CI)")
    ax.set_title("label configurations (extended paper, Fig. 6) and loss forms")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    fig.tight_layout()
    plotting.save(fig, out_dir / "delta_by_labels.png")
    written.append(out_dir / "delta_by_labels.png")
    return written


def git_reader(rev: str, path: str) -> bytes | None:
    """A file at a revision, from git."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True)
    return proc.stdout if proc.returncode == 0 else None


def exp_show(all_commits: bool) -> list[dict]:
    """`dvc exp show --json` (of HEAD's experiments, or every commit's)."""
    cmd = ["dvc", "exp", "show", "--json", *(["-A"] if all_commits else [])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SweepError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip()[-300:]}")
    return json.loads(proc.stdout)


def report(shown: list[dict], read: Reader, key: str, out_dir: Path) -> list[Experiment]:
    """Write `sweep.md` and the figures under `out_dir` for dataset/arch `key`."""
    experiments = [load(*e, read=read, key=key) for e in entries(shown)]
    if any(e.onehot for e in experiments):  # commits without results for `key` (other datasets: -A) are noise
        experiments = [e for e in experiments if e.onehot or e.state != "baseline"]
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plot(experiments, out_dir)
    text = table(experiments, key) + "\n" + "\n".join(f"![{f.stem}]({f.name})" for f in figures) + "\n"
    (out_dir / "sweep.md").write_text(text)
    return experiments
