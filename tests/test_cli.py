"""The stage scripts' error glue: one line on stderr, exit code 1, no traceback."""

import pytest
import typer

from hue.cli import guarded
from hue.errors import HueError


@pytest.mark.parametrize("exc, line", [
    (HueError("thing is wrong; do this"), "error: thing is wrong; do this"),
    (FileNotFoundError(2, "No such file", "data/x.parquet"),
     "error: data/x.parquet not found: run the stages before this one first (dvc repro)"),
])
def test_errors_become_one_line_and_exit_1(exc, line, capsys):
    @guarded
    def stage():
        raise exc

    with pytest.raises(typer.Exit) as err:
        stage()
    assert err.value.exit_code == 1 and capsys.readouterr().err.strip() == line


def test_other_exceptions_are_not_swallowed():
    @guarded
    def stage():
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        stage()


FAULT_PROBE = r"""
import ctypes, json, platform, resource, sys
from hue import cli
kept = cli.keep_freed_heap() if sys.argv[1] == "keep" else False
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(4):  # what torch's CPU allocator does op after op: malloc, touch, free 64 MB blocks
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(1 << 26)
    ctypes.memset(block, 1, 1 << 26)
    libc.free(block)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": faults, "glibc": platform.libc_ver()[0] == "glibc"}))
"""


def test_kept_heap_reuses_freed_blocks_without_faulting_them_in_again():
    import json
    import subprocess
    import sys

    runs = {mode: json.loads(subprocess.run([sys.executable, "-c", FAULT_PROBE, mode], capture_output=True,
                                            text=True, check=True).stdout) for mode in ("default", "keep")}
    if not runs["keep"]["glibc"]:
        pytest.skip("the heap policy is glibc's mallopt")
    assert runs["keep"]["kept"]
    pages = (1 << 26) // 4096
    assert min(runs["default"]["faults"][1:]) > pages / 2  # a fresh mapping every time: every page faults again
    assert max(runs["keep"]["faults"][1:]) < pages / 100  # the freed block is reused as it is


def test_keeps_heap_sets_the_policy_before_the_stage_runs(monkeypatch):
    from hue import cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_heap", lambda: calls.append("heap") or True)
    assert cli.keeps_heap(lambda x: calls.append(x) or x)(3) == 3
    assert calls == ["heap", 3]


THP_PROBE = r"""
import json, resource, sys
from hue import cli, extract, interactive, sources, train  # what the network stages import before the policy
if sys.argv[1] == "keep":
    cli.keep_freed_heap()
import torch
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(1 << 24)  # 64 MB through torch's CPU allocator, every page touched
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def test_kept_heap_asks_torch_for_huge_pages_before_its_first_allocation():
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    mode = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    if not mode.exists() or "[madvise]" not in mode.read_text():
        pytest.skip("huge pages on request need THP in madvise mode (with 'always' every run gets them)")
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    faults = {m: json.loads(subprocess.run([sys.executable, "-c", THP_PROBE, m], capture_output=True, text=True,
                                           check=True, env=env).stdout)["faults"] for m in ("default", "keep")}
    pages = (1 << 26) // 4096
    assert faults["default"] > pages / 2  # 4 KB pages: one fault each
    assert faults["keep"] < faults["default"] / 10  # 2 MB pages: a few hundred faults at most
