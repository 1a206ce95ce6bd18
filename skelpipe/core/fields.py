"""A settings dataclass filled from a dict (a pipeline section, command-line options): unknown
keys and values of the wrong type are one ``SkelpipeError`` line naming the setting."""

import dataclasses
import math

from skelpipe.core.errors import SkelpipeError, did_you_mean

WANTED = {float: "a number", int: "an integer", str: "a string", bool: "true or false",
          tuple: "a list of integers"}


def check_known(what: str, cls, values: dict, list_known: bool = False):
    """Every key of ``values`` is a field of ``cls`` (a close match is suggested)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        key = unknown[0]
        raise SkelpipeError(f"{what}: unknown setting {key} = {values[key]!r}{did_you_mean(key, known)}"
                            + (f"; known: {', '.join(sorted(known))}" if list_known else ""))


def check_types(what: str, cls, values: dict):
    """Each value of ``values`` has its field's type: int, float (an int will do), str, bool, or
    tuple (a list of integers); a bool is never taken for a number."""
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if f.type is tuple:
            ok = isinstance(value, (list, tuple)) and all(
                isinstance(v, int) and not isinstance(v, bool) for v in value)
        else:
            kinds = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}[f.type]
            ok = isinstance(value, kinds) and (f.type is bool or not isinstance(value, bool))
        if not ok:
            raise SkelpipeError(f"{what}: {f.name} must be {WANTED[f.type]}, got {value!r}")
        if f.type is float and not math.isfinite(value):  # inf and nan pass every range check
            raise SkelpipeError(f"{what}: {f.name} must be a finite number, got {value!r}")
