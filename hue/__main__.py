"""`python -m hue` = the `hue` command."""

from hue.app import app

app(prog_name="hue")
