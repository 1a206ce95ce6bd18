"""Pipeline files (``pipelines/*.toml``): found by name, read (``base = "other"`` starts from
another file), overridden with ``--set section.key=value``, and checked section by section
before any stage runs."""

import copy
import math
import os
import tomllib
from pathlib import Path


from skelpipe.core.errors import ConfigError, SkelpipeError, did_you_mean
from skelpipe.core.fields import MAX_BATCH, MAX_CLASSES, MAX_PEOPLE, MAX_SEED, WANTED, of_kind, parse_assignment
from skelpipe.data import datasets
from skelpipe.data.align import AlignConfig
from skelpipe.data.pack import BENCHMARKS, PackConfig
from skelpipe.learn.config import INITS, KD_VARIANTS, TrainConfig
from skelpipe.learn.models import BACKBONES
from skelpipe.learn.partmatrix import PartMatrixConfig
from skelpipe.pose.decoding import check_config
from skelpipe.pose.settings import DECODER_WORKERS, LONG_EDGE

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
    """``section.key=value`` → (["section", "key"], value), the value read by ``parse_assignment``."""
    dotted, value = parse_assignment(text, "--set", "section.key=value")
    return dotted.split("."), value


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
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SkelpipeError(f"{path}: invalid TOML ({e})") from None
    except RecursionError:
        raise SkelpipeError(f"{path}: invalid TOML (nested too deeply)") from None
    except OSError as e:
        raise SkelpipeError(f"{path}: cannot read the pipeline file ({e.strerror})") from None
    base = cfg.pop("base", None)
    if base is None:
        return cfg
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base = {base!r}: expected the name or path of another pipeline")
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
    check(cfg, path)
    return cfg


# --------------------------------------------------------------------------- checks
# Every section is checked when the pipeline is loaded (so --dry-run catches everything): an
# unknown section or key, a value of the wrong type or out of range is one ConfigError line
# naming the file, the key, the value and what is allowed.

def _value(where: str, key: str, value, kind, choices=None, low=None, high=None):
    """One value: its type (``kind``, or ``[kind]`` for a non-empty list), its choices, its range."""
    items = value if isinstance(kind, list) else [value]
    base = kind[0] if isinstance(kind, list) else kind
    wanted = " or ".join(WANTED[k] for k in base) if isinstance(base, tuple) else WANTED[base]
    if isinstance(kind, list) and not (isinstance(value, list) and value):
        raise ConfigError(f"{where}{key} = {value!r}: expected a non-empty list of {wanted.split(' ', 1)[1]}s")
    if len(items) > MAX_LIST:  # each item multiplies the runs of a plan
        raise ConfigError(f"{where}{key}: {len(items)} values, at most {MAX_LIST}")
    for v in items:
        if not of_kind(v, base):
            raise ConfigError(f"{where}{key} = {value!r}: expected {'a list of ' if isinstance(kind, list) else ''}"
                              f"{wanted if not isinstance(kind, list) else wanted.split(' ', 1)[1] + 's'}")
        if choices is not None and v not in choices:
            raise ConfigError(f"{where}{key}: {v!r} is not one of {', '.join(map(str, choices))}"
                              f"{did_you_mean(v, choices)}")
        if (low is not None and not v >= low) or (high is not None and not v <= high):  # NaN is outside
            span = f"[{low}, {high}]" if high is not None else f">= {low}"
            raise ConfigError(f"{where}{key}: {v!r} is outside {span}")


def _section(where: str, values: dict, schema: dict):
    """A table against ``schema`` (key → (kind, choices, low, high)): unknown keys and bad values."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where.rstrip('.')}: expected a table, got {values!r}")
    for key, value in values.items():
        if key not in schema:
            raise ConfigError(f"{where}{key} = {value!r}: unknown setting{did_you_mean(key, schema)}; "
                              f"known: {', '.join(schema)}")
        kind, choices, low, high = (*schema[key], None, None, None)[:4]
        _value(where, key, value, kind, choices, low, high)


SOURCE = {"kind": (str, ("dataset", "estimator", "pyskl")), "label": (str,), "backbone": (str,),
          "checkpoint": (str,), "extractor": (str, ("openpifpaf", "simulated")), "simulate_from": (str,),
          "file": (str,), "split": (str,), "num_classes": (int, None, 1, MAX_CLASSES),
          "profile": (dict,)}   # a simulated estimator's noise fields in place of its backbone's (pose.simulate.Profile)
MAX_LIST = 100  # values of one list setting (seeds, occlusion probabilities, ...)
SOURCE_NEEDS = {"dataset": (), "estimator": ("backbone",), "pyskl": ("file",)}
SETTING = {"name": (str,), "hq": (str,), "lq": (str,)}
EXTRACT = {"extractor": (str, ("openpifpaf", "simulated")), "simulate_from": (str,), "seed": (int, None, 0, MAX_SEED),
           "long_edge": (int, None, *LONG_EDGE), "max_people": (int, None, 1, MAX_PEOPLE),
           "decoder": (dict,), "decoder_workers": (int, None, *DECODER_WORKERS)}
EXPERIMENT = {"table": ((int, str),), "settings": ([str],), "benchmarks": ([str], BENCHMARKS),
              "splits": (int, None, 1, 30), "op": ([float], None, 0.0, 1.0), "kd": ([str], KD_VARIANTS),
              "hq_fraction": ([float], None, 0.0, 1.0), "student_data": ([str], ("all", "pair")),
              "seeds": ([int], None, 0, MAX_SEED), "seed_occlusion": (bool,), "backbones": ([str], BACKBONES),
              "init": ([str], INITS), "student": (dict,)}
TABLES = ("data", "extract", "sources", "align", "pack", "teacher", "student", "partmatrix")
TOP = ("name", "dataset", "description", "data", "extract", "sources", "settings", "align", "pack",
       "teacher", "student", "partmatrix", "experiments", "_path")


def _finite(path, node, dotted: str = "") -> None:
    """Every number anywhere in the pipeline is finite: TOML (and so ``--set``) reads ``inf`` and
    ``nan`` as floats, and no setting means either (a NaN passes every range check)."""
    if isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{path}: {dotted} = {node!r}: not a finite number")
    if isinstance(node, dict):
        for key, child in node.items():
            _finite(path, child, f"{dotted}.{key}" if dotted else str(key))
    elif isinstance(node, list):  # an item (a number, an array's table) is named by its list
        for child in node:
            _finite(path, child, dotted)


def check(cfg: dict, path) -> None:
    """Every section of a loaded pipeline, or a ``ConfigError`` naming the first bad setting."""
    _finite(path, cfg)
    for key in cfg:
        if key not in TOP:
            raise ConfigError(f"{path}: unknown section [{key}]{did_you_mean(key, TOP)}; known: "
                              f"{', '.join(k for k in TOP if k != '_path')}")
    for section in ("name", "dataset", "sources", "settings", "experiments", "teacher", "student"):
        if section not in cfg:
            raise ConfigError(f"{path}: missing [{section}]" if section not in ("name", "dataset")
                              else f"{path}: missing {section} = ...")
    for section in TABLES:
        if section in cfg and not isinstance(cfg[section], dict):
            raise ConfigError(f"{path}: [{section}] must be a table of settings, got {cfg[section]!r}")
    _value(f"{path}: ", "name", cfg["name"], str)
    _value(f"{path}: ", "dataset", cfg["dataset"], str, tuple(sorted(datasets.DATASETS)))
    dataset = datasets.get(cfg["dataset"])
    _section(f"{path}: data.", cfg.get("data", {}), {k: (type(v) if v is not None else int, *dataset.limits.get(k, ()))
                                                     for k, v in dataset.options.items()})
    _section(f"{path}: extract.", cfg.get("extract", {}), EXTRACT)
    _wrapped(path, "extract", lambda: check_config(cfg.get("extract", {}).get("decoder"), "decoder"))
    if not isinstance(cfg["sources"], dict) or not cfg["sources"]:
        raise ConfigError(f"{path}: [sources.NAME] tables expected")
    for name, source in cfg["sources"].items():
        _section(f"{path}: sources.{name}.", source, SOURCE)
        if "kind" not in source:
            raise ConfigError(f"{path}: sources.{name}.kind missing (dataset or estimator)")
        _source_inputs(path, cfg, name, source)
    _tables(path, "settings", cfg["settings"], SETTING)
    for s in cfg["settings"]:
        for side in ("name", "hq", "lq"):
            if side not in s:
                raise ConfigError(f"{path}: a [[settings]] table without {side}")
        for side in ("hq", "lq"):
            _value(f"{path}: settings.{s['name']}.", side, s[side], str, tuple(cfg["sources"]))
    _tables(path, "experiments", cfg["experiments"], EXPERIMENT)
    for exp in cfg["experiments"]:
        seeds = exp.get("seeds", [])
        if len(set(seeds)) != len(seeds):
            raise ConfigError(f"{path}: experiments.seeds = {seeds!r}: the seeds must be distinct")
        for name in exp.get("settings", []):
            _value(f"{path}: experiments.", "settings", name, str, tuple(s["name"] for s in cfg["settings"]))
    for stage in ("teacher", "student"):
        _wrapped(path, stage, lambda: TrainConfig.from_dict({**cfg[stage], "stage": stage}))
    for exp in cfg["experiments"]:  # a block's own student settings, over a [student] already checked
        if "student" in exp:
            _wrapped(path, "experiments.student",
                     lambda: TrainConfig.from_dict({**cfg["student"], **exp["student"], "stage": "student"}))
    for section, settings in (("align", AlignConfig), ("pack", PackConfig), ("partmatrix", PartMatrixConfig)):
        _wrapped(path, section, lambda: settings.from_dict(cfg.get(section, {})))


def _source_inputs(path, cfg: dict, name: str, source: dict):
    """What a source of its kind reads is named: an estimator's backbone, a pyskl source's file, and
    the skeletons a simulated estimator degrades (a dataset's or a pyskl file's, never an estimator's)."""
    for key in SOURCE_NEEDS[source["kind"]]:
        if key not in source:
            raise ConfigError(f"{path}: sources.{name}.{key} missing (a source of kind {source['kind']!r} "
                              f"needs one)")
    extract = cfg.get("extract", {})
    if source["kind"] == "estimator" and source.get("extractor", extract.get("extractor")) == "simulated":
        base = source.get("simulate_from", extract.get("simulate_from", ""))
        if cfg["sources"].get(base, {}).get("kind") not in ("dataset", "pyskl"):
            raise ConfigError(f"{path}: sources.{name} simulates from {base!r}, which is not a dataset or pyskl "
                              f"source of [sources]")


def _tables(path, name: str, tables, schema: dict):
    if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"{path}: [[{name}]] tables expected")
    for table in tables:
        _section(f"{path}: {name}.", table, schema)


def _wrapped(path, section: str, make):
    """A dataclass's own checks, reported against the pipeline file and section."""
    try:
        make()
    except SkelpipeError as e:
        message = str(e)
        for prefix in ("training config: ", "pack: ", "align: ", "part matrix: "):
            message = message.removeprefix(prefix)
        raise ConfigError(f"{path}: [{section}] {message}") from e


def resolve_data_root(cfg: dict, given: str | None) -> Path | None:
    """The dataset's root: --data-root, else the dataset's environment variable, else None."""
    env = datasets.get(cfg["dataset"]).root_env
    root = given or (os.environ.get(env) if env else None)
    return Path(root).expanduser() if root else None

