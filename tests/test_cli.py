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
