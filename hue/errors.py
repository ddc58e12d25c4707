"""The one exception family the stage scripts print as a single line."""


class HueError(Exception):
    """A failure with a message that says what is wrong and what to do."""
