"""Pipeline files (``pipelines/*.toml``): found by name, read (``base = "other"`` starts from
another file), overridden with ``--set section.key=value``, and checked section by section
before any stage runs."""

import copy
import os
import tomllib
from pathlib import Path

import click

from skelpipe.core.errors import SkelpipeError
from skelpipe.data import datasets

# The working directory's pipelines/ (a user's own files) first, then those shipped in the package.
PIPELINE_DIRS = (Path.cwd() / "pipelines", Path(__file__).resolve().parents[1] / "pipelines")


def find_pipeline(name: str) -> Path:
    """A pipeline by file path or by name (``demo`` → ``pipelines/demo.toml``)."""
    path = Path(name)
    if path.suffix == ".toml":
        if not path.is_file():
            raise SkelpipeError(f"{path}: no such pipeline file")
        return path
    for d in PIPELINE_DIRS:
        if (d / f"{name}.toml").is_file():
            return d / f"{name}.toml"
    known = sorted({p.stem for d in PIPELINE_DIRS if d.is_dir() for p in d.glob("*.toml")})
    raise SkelpipeError(f"unknown pipeline {name!r}; known: {', '.join(known) or 'none'} "
                        "(or give a path to a .toml file)")


def parse_override(text: str) -> tuple[list[str], object]:
    """``section.key=value`` → (["section", "key"], value); value parsed as TOML when it can be."""
    if "=" not in text:
        raise click.BadParameter(f"{text!r}: expected section.key=value", param_hint="--set")
    dotted, raw = text.split("=", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return dotted.strip().split("."), value


def _merge(base: dict, over: dict) -> dict:
    """``over`` on top of ``base``: tables merge key by key, anything else (arrays of tables
    included) is replaced whole."""
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _read_toml(path: Path, seen=()) -> dict:
    """A pipeline file as a dict; ``base = "penn"`` (a name or a path) starts from that file."""
    try:
        cfg = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise SkelpipeError(f"{path}: invalid TOML ({e})") from None
    base = cfg.pop("base", None)
    if base is None:
        return cfg
    base_path = find_pipeline(base)
    if base_path.resolve() in seen:
        raise SkelpipeError(f"{path}: base {base!r} includes itself")
    return _merge(_read_toml(base_path, (*seen, path.resolve())), cfg)


def load_pipeline(name: str, overrides=()) -> dict:
    path = find_pipeline(name)
    cfg = _read_toml(path, (path.resolve(),))
    for text in overrides:
        keys, value = parse_override(text)
        nodes = [cfg]
        for k in keys[:-1]:
            nodes = [n.setdefault(k, {}) for n in nodes]
            # An array of tables ([[experiments]], [[settings]]): the setting applies to each.
            nodes = [m for n in nodes for m in (n if isinstance(n, list) else [n])]
            if not all(isinstance(n, dict) for n in nodes):
                raise SkelpipeError(f"--set {text}: {k} is not a section of {path}")
        for n in nodes:
            n[keys[-1]] = value
    cfg["_path"] = str(path)
    for section in ("sources", "settings", "experiments", "teacher", "student"):
        if section not in cfg:
            raise SkelpipeError(f"{path}: missing [{section}]")
    return cfg


def resolve_data_root(cfg: dict, given: str | None) -> Path | None:
    """The dataset's root: --data-root, else the dataset's environment variable, else None."""
    env = datasets.get(cfg["dataset"]).root_env
    root = given or (os.environ.get(env) if env else None)
    return Path(root).expanduser() if root else None

