"""A settings dataclass filled from a dict (a pipeline section, command-line options): unknown
keys and values of the wrong type are one ``SkelpipeError`` line naming the setting."""

import dataclasses
import math

import click

from skelpipe.core.errors import SkelpipeError, did_you_mean

# Bounds on the sizes that files and settings give, so that none can make a run allocate without
# end; each is used wherever such a size is read (settings, pose stores, pyskl files, model.json).
MAX_CLASSES = 10_000   # class labels are indices below this
MAX_PEOPLE = 16        # people per sample (M)
MAX_FRAMES = 1_000     # frames of a packed sequence (T; NTU's longest is 300; longer clips: sample_frames)
MAX_SEED = 2**32 - 1   # numpy's and torch's seeds alike
MAX_BATCH = 65_536     # instances per batch


class FiniteRange(click.FloatRange):
    """click's ``FloatRange``, which lets NaN through (a comparison with NaN is never false)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number

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


def bounded(default, low=None, high=None, *, above=None, length=None):
    """A dataclass field with the values it may take, checked by ``check_ranges``: ``low`` <= value
    <= ``high`` (``above``: value > it); a tuple's items each, and its ``length`` (min, max). Every
    size a setting gives has a ``high``, so that a typo cannot make a run allocate without end."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high, "above": above,
                                                        "length": length})


def check_ranges(what: str, obj):
    """Each field of the dataclass ``obj`` declared with ``bounded`` holds a value in its range
    (NaN never does)."""
    for f in dataclasses.fields(obj):
        if "low" not in f.metadata:
            continue
        value, m = getattr(obj, f.name), f.metadata
        items = value if isinstance(value, (tuple, list)) else (value,)
        if m["length"] is not None and not m["length"][0] <= len(items) <= m["length"][1]:
            raise SkelpipeError(f"{what}: {f.name} must list {m['length'][0]} to {m['length'][1]} values, "
                                f"got {list(items)}")
        for v in items:
            for ok, rule in ((m["low"] is None or v >= m["low"], f">= {m['low']}"),
                             (m["above"] is None or v > m["above"], f"> {m['above']}"),
                             (m["high"] is None or v <= m["high"], f"<= {m['high']}")):
                if not ok:
                    raise SkelpipeError(f"{what}: {f.name} must be {rule}, got {value!r}")
