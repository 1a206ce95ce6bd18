"""The one exception type users see: a one-line message naming the file and the problem."""


class SkelpipeError(Exception):
    """An error in the user's input or environment, reported as one line (exit status 1).

    The message names the file (or setting) and what is wrong with it; the CLI prints it
    without a traceback unless ``--debug`` is given.
    """
