"""Settings dataclasses: each field declares its default, range, choices and help once
(``bounded``); they check a dict (a pipeline section, command-line options), where an unknown key
or a value of the wrong type is one ``SkelpipeError`` line naming the setting, and make a
command's click options (``options``). ``of_kind`` is the one type check and ``parse_assignment``
the one ``KEY=VALUE`` reader of the settings given on a command line."""

import dataclasses
import math
import tomllib

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

# What each kind of setting is called in a message; ``tuple`` is a list of integers.
WANTED = {float: "a number", int: "an integer", str: "a string", bool: "true or false", dict: "a table",
          tuple: "a list of integers"}
_TYPES = {float: (int, float), int: (int,), str: (str,), bool: (bool,), dict: (dict,)}


def of_kind(value, kind) -> bool:
    """``value`` is a ``kind``: int, float (an int will do), str, bool, dict, tuple (a list of
    integers), or a tuple of these (any one will do). A bool is never taken for a number."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if tuple in kinds and isinstance(value, (list, tuple)) and all(of_kind(v, int) for v in value):
        return True
    types = tuple(t for k in kinds if k is not tuple for t in _TYPES[k])
    return isinstance(value, types) and (bool in kinds or not isinstance(value, bool))


def check_known(what: str, cls, values: dict, list_known: bool = False):
    """Every key of ``values`` is a field of ``cls`` (a close match is suggested)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        key = unknown[0]
        raise SkelpipeError(f"{what}: unknown setting {key} = {values[key]!r}{did_you_mean(key, known)}"
                            + (f"; known: {', '.join(sorted(known))}" if list_known else ""))


def check_types(what: str, cls, values: dict):
    """Each value of ``values`` has its field's type (``of_kind``), and a number is finite."""
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        value = values[f.name]
        if not of_kind(value, f.type):
            raise SkelpipeError(f"{what}: {f.name} must be {WANTED[f.type]}, got {value!r}")
        if f.type is float and not math.isfinite(value):  # inf and nan pass every range check
            raise SkelpipeError(f"{what}: {f.name} must be a finite number, got {value!r}")


def from_section(what: str, cls, config: dict):
    """A settings dataclass from a pipeline section: unknown keys (listing the known ones) and
    wrong types are one line naming ``what``, before the dataclass checks its ranges."""
    check_known(what, cls, config, list_known=True)
    check_types(what, cls, config)
    return cls(**config)


def bounded(default, low=None, high=None, *, above=None, length=None, choices=None, help=""):
    """A dataclass field with the values it may take, checked by ``check_ranges``: ``low`` <= value
    <= ``high`` (``above``: value > it); a tuple's items each, and its ``length`` (min, max); or one
    of ``choices``. Every size a setting gives has a ``high``, so that a typo cannot make a run
    allocate without end. ``help`` says what the setting does, on the command line (``options``)."""
    return dataclasses.field(default=default, metadata={"low": low, "high": high, "above": above,
                                                        "length": length, "choices": choices, "help": help})


def check_ranges(what: str, obj):
    """Each field of the dataclass ``obj`` declared with ``bounded`` holds a value in its range
    (NaN never does), or one of its choices."""
    for f in dataclasses.fields(obj):
        if "low" not in f.metadata:
            continue
        value, m = getattr(obj, f.name), f.metadata
        if m.get("choices") is not None and value not in m["choices"]:
            raise SkelpipeError(f"{what}: {f.name} must be {_one_of(m['choices'])}, got {value!r}"
                                f"{did_you_mean(value, m['choices'])}")
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


def _one_of(choices) -> str:
    return " or ".join(choices) if len(choices) == 2 else "one of " + ", ".join(choices)


class IntList(click.ParamType):
    """Comma-separated integers (``30,40,50``) as a tuple; an empty value is the empty tuple."""

    name = "integers"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
        except ValueError:
            self.fail(f"expected comma-separated integers, got {value!r}", param, ctx)


def options(cls, required=()):
    """A decorator that gives a click command one option per field of the settings dataclass
    ``cls``, made from the field: ``--field-name``, its type, range, choices, default and help (a
    bool: ``--x/--no-x``). The fields named in ``required`` have no default and must be given."""
    def decorate(command):
        for f in reversed(dataclasses.fields(cls)):
            command = _option(f, f.name in required)(command)
        return command
    return decorate


def _option(f: dataclasses.Field, required: bool):
    name, m = "--" + f.name.replace("_", "-"), f.metadata
    default = None if required else ",".join(map(str, f.default)) if f.type is tuple else f.default
    kw = {"default": default, "required": required, "show_default": not required, "help": m.get("help", "")}
    if f.type is bool:
        return click.option(f"{name}/--no-{name[2:]}", **kw)
    low, open_low = (m.get("above"), True) if m.get("above") is not None else (m.get("low"), False)
    if m.get("choices") is not None:
        kind = click.Choice(m["choices"])
    elif f.type is int:
        kind, kw["metavar"] = click.IntRange(low, m.get("high"), min_open=open_low), "INTEGER"
    elif f.type is float:
        kind, kw["metavar"] = FiniteRange(low, m.get("high"), min_open=open_low), "NUMBER"
    elif f.type is tuple:
        kind = IntList()
    else:
        kind = click.STRING
    return click.option(name, type=kind, **kw)


def parse_assignment(text: str, option: str, form: str = "KEY=VALUE") -> tuple[str, object]:
    """``key=value`` (``--set``, ``--decoder-setting``) → (key, value): the value read as TOML
    (``0.3``, ``true``, ``[8, 16]``, ``'text'``; the words true, false, inf and nan in any case), else
    the text itself (a bare word: a string setting's value)."""
    key, sep, raw = text.partition("=")
    if not sep:
        raise click.BadParameter(f"{text!r}: expected {form}", param_hint=option)
    word = raw.strip().lower()
    try:
        value = tomllib.loads(f"v = {word if word in ('true', 'false', 'inf', 'nan') else raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key.strip(), value
