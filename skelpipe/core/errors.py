"""The exceptions users see: a one-line message naming the file and the problem."""

import difflib


class SkelpipeError(Exception):
    """An error in the user's input or environment, reported as one line (exit status 1).

    The message names the file (or setting) and what is wrong with it; the CLI prints it
    without a traceback unless ``--debug`` is given.
    """

    exit_code = 1


class ConfigError(SkelpipeError):
    """A setting that cannot be used (unknown, of the wrong type, out of range): exit status 2,
    like any other usage error, before anything runs."""

    exit_code = 2


def reason(e: BaseException) -> str:
    """An exception as a short reason for a one-line message: its type and its message's first line
    (some, like the ``EOFError`` of an empty file, have none)."""
    lines = [line for line in str(e).splitlines() if line.strip()]
    if isinstance(e, SkelpipeError) and lines:  # already said for a user
        return lines[0]
    return f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__


def did_you_mean(name, known) -> str:
    """`` (did you mean 'teacher'?)`` when ``name`` is close to one of ``known``, else ``""``."""
    close = difflib.get_close_matches(str(name), [str(k) for k in known], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
