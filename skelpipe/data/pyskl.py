"""pyskl's skeleton annotation pickles in (``import_store``); the export is ``pyskl_export``.

A pyskl file is a pickled ``{"split": {name: [frame_dir, ...]}, "annotations": [item, ...]}``
(older files: the bare list of items). An item holds ``frame_dir`` (the sample id), ``label``,
``total_frames``, ``img_shape`` / ``original_shape`` (H, W), ``keypoint`` (M, T, V, 2 or 3) and,
for 2D, ``keypoint_score`` (M, T, V). COCO-17 2D (pyskl's HRNet poses of NTU, Kinetics, FineGYM…)
becomes a ``coco17`` store with channels x, y, conf; NTU-25 3D becomes ``ntu25`` x, y, z.

Loading a pickle can execute code: a pickle names functions that the loader calls. ``read``
unpickles with a loader that calls only what real numpy and pyskl files name (``_ALLOWED``),
refuses any other name before anything runs, and checks the top level before it touches an
item. Only load files you trust all the same.
"""

import collections
import pickle
import re
from pathlib import Path

import numpy as np

from skelpipe.core.errors import SkelpipeError
from skelpipe.core.work import Work
from skelpipe.skeleton.store import PoseWriter, label_problem

try:  # numpy 2 names its pickle helpers numpy._core.*, numpy 1 numpy.core.*
    from numpy._core.multiarray import _reconstruct, scalar
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1
    from numpy.core.multiarray import _reconstruct, scalar
    from numpy.core.numeric import _frombuffer

LAYOUTS = {(17, 2): "coco17", (25, 3): "ntu25"}          # (joints, coordinates) → layout


def _latin1(text, encoding):
    """What protocol 0-2 pickles ask of ``_codecs.encode``: bytes written as a latin-1 str.
    Only that: the real function would look up any codec by name."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not the "
                                     f"latin-1 bytes a pickle writes")
    return text.encode("latin1")


def _empty_bytes():
    """What protocol 0-2 pickles ask of ``bytes``: ``bytes()``, an empty array's data. Only that:
    ``bytes(n)`` would let a few bytes of file allocate n."""
    return b""


# Every name a pickle may ask for, and what it gets: numpy's array, dtype and scalar rebuilders
# under numpy-1 and numpy-2 module names (pure functions of their arguments, which are themselves
# only these objects or plain data), and plain containers. Protocol 0-2 pickles name builtins
# the Python 2 way (__builtin__), which pickle renames only after asking.
_NUMPY = {"multiarray": {"_reconstruct": _reconstruct, "scalar": scalar},
          "numeric": {"_frombuffer": _frombuffer}}
_ALLOWED = {
    **{(f"numpy.{core}.{module}", name): obj for core in ("core", "_core")
       for module, names in _NUMPY.items() for name, obj in names.items()},
    ("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1, ("collections", "OrderedDict"): collections.OrderedDict,
    **{(builtins, name): obj for builtins in ("builtins", "__builtin__")
       for name, obj in {"bytes": _empty_bytes, "set": set, "frozenset": frozenset}.items()},
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a skeleton file never needs")
        return _ALLOWED[module, name]

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("it refers to objects outside the file")


def read(path) -> tuple[dict, list]:
    """(splits, annotations) of a pyskl pickle, checked item by item (one line naming the item).
    The file is unpickled as it is read, not read into memory first (pyskl's files reach GBs)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = _Restricted(f).load()
    except FileNotFoundError:
        raise SkelpipeError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - any unreadable or refused pickle
        raise SkelpipeError(f"{path}: not a pyskl annotation pickle ({e})") from None
    if isinstance(data, list):
        data = {"split": {}, "annotations": data}
    if not (isinstance(data, dict) and isinstance(data.get("annotations"), list)
            and isinstance(data.get("split", {}), dict)):
        raise SkelpipeError(f"{path}: expected a dict with 'split' and 'annotations' (or a list of "
                            f"annotations), got {type(data).__name__}"
                            + (f" with keys {sorted(map(str, data))}" if isinstance(data, dict) else ""))
    first = {}
    for i, item in enumerate(data["annotations"]):
        _check(path, i, item)
        frame_dir = str(item["frame_dir"])
        if frame_dir in first:  # one sample read twice (and maybe labelled twice): which one counts?
            raise SkelpipeError(f"{path}: annotations {first[frame_dir]} and {i} are both {frame_dir!r}; "
                                "a sample id must be unique")
        first[frame_dir] = i
    return data.get("split", {}), data["annotations"]


def image_shape(item) -> tuple[int, int] | None:
    """(H, W) of a 2D item: ``img_shape``, the frame pyskl's transforms normalise by, before
    ``original_shape``."""
    shape = item.get("img_shape", item.get("original_shape"))
    return None if shape is None else (int(shape[0]), int(shape[1]))


def _check(path: Path, i: int, item):
    where = f"{path}: annotation {i}"
    if not isinstance(item, dict):
        raise SkelpipeError(f"{where}: not a dict")
    where = f"{path}: annotation {i} ({item.get('frame_dir', '?')})"
    missing = [k for k in ("frame_dir", "label", "keypoint") if k not in item]
    if missing:
        raise SkelpipeError(f"{where}: missing {', '.join(missing)}")
    kp = item["keypoint"]
    if not isinstance(kp, np.ndarray) or kp.dtype.kind != "f":
        raise SkelpipeError(f"{where}: keypoint must be a float array, got {type(kp).__name__}"
                            + (f" of {kp.dtype}" if isinstance(kp, np.ndarray) else ""))
    if kp.ndim != 4 or (kp.shape[2], kp.shape[3]) not in LAYOUTS:
        raise SkelpipeError(f"{where}: keypoint of shape {kp.shape}; expected (M, T, 17, 2) or (M, T, 25, 3)")
    if kp.shape[3] == 2:
        score = item.get("keypoint_score")
        if not isinstance(score, np.ndarray) or score.shape != kp.shape[:3]:
            raise SkelpipeError(f"{where}: keypoint_score must be an array of shape {kp.shape[:3]}")
        try:
            shape = image_shape(item)
        except (TypeError, ValueError, IndexError):
            shape = item.get("img_shape", item.get("original_shape"))
            raise SkelpipeError(f"{where}: img_shape must be (H, W), got {shape!r}") from None
        if shape is None or min(shape) <= 0:
            raise SkelpipeError(f"{where}: 2D keypoints need a positive img_shape (H, W), got {shape}")
    if not isinstance(item["label"], (int, np.integer)) or item["label"] < 0:
        raise SkelpipeError(f"{where}: label must be an integer >= 0, got {item['label']!r}")


# ---------------------------------------------------------------- splits
# A file's split lists come in pairs, one pair per protocol ("family"): NTU's xsub_train +
# xsub_val, UCF101's and HMDB51's train1 + test1 (…3), FineGYM's and Kinetics' train + val,
# Diving48's train + test. A family's train list is the training set; its test list, or its val
# list when it has none, the test set (pyskl reports on val where a dataset has no test list).
_PATTERNS = (re.compile(r"(?P<family>.+)_(?P<role>train|test|val)"),       # xsub_train
             re.compile(r"(?P<role>train|test|val)_?(?P<family>\d*)"))      # train1, train


def families(splits: dict) -> dict[str, tuple[str, str]]:
    """family → (train list, test list) of the file's split lists; ``""`` names the family of
    lists called plain train / val / test."""
    found: dict[str, dict] = {}
    for name in splits:
        match = next((m for m in (p.fullmatch(str(name)) for p in _PATTERNS) if m), None)
        if match:
            found.setdefault(match["family"], {})[match["role"]] = name
    return {family: (roles["train"], roles.get("test", roles.get("val"))) for family, roles in found.items()
            if "train" in roles and ("test" in roles or "val" in roles)}


def _describe(fams: dict) -> str:
    return ", ".join(f"{f} ({' + '.join(lists)})" if f else " + ".join(lists)
                     for f, lists in sorted(fams.items()))


def choose_family(splits: dict, wanted: str | None) -> str | None:
    """The family ``wanted`` names (a family, or one of its lists: ``xsub``, ``xsub_val``, ``1``,
    ``train1``); the file's only family when None; None when the file has no split lists."""
    fams = families(splits)
    if not splits:
        if wanted is not None:
            raise SkelpipeError(f"split {wanted!r}: the file has no split lists")
        return None
    if not fams:
        raise SkelpipeError(f"its split lists ({', '.join(map(str, splits))}) are not train/test pairs "
                            f"(NAME_train + NAME_val/test, trainN + testN, or train + val/test)")
    if wanted is None:
        if len(fams) > 1:
            raise SkelpipeError(f"the file has several splits, choose one (--split, or a source's split =): "
                                  f"{_describe(fams)}")
        return next(iter(fams))
    for family, lists in fams.items():
        if wanted == family or wanted in lists:
            return family
    raise SkelpipeError(f"no split {wanted!r} in the file; it has {_describe(fams)}")


def split_of(splits: dict, family: str) -> dict[str, str]:
    """frame_dir → "train" / "test" by the family's two lists."""
    train, test = families(splits)[family]
    out = {str(i): "train" for i in splits[train]}
    both = [str(i) for i in splits[test] if str(i) in out]
    if both:
        raise SkelpipeError(f"{both[0]} is in both {train} and {test}")
    return {**out, **{str(i): "test" for i in splits[test]}}


# ---------------------------------------------------------------- import
def _assign(path, splits, items, wanted) -> tuple[dict, dict]:
    """(frame_dir → split, what the CLI reports about the split)."""
    try:
        family = choose_family(splits, wanted)
        split = {} if family is None else split_of(splits, family)
    except SkelpipeError as e:
        raise SkelpipeError(f"{path}: {e}") from None
    ids = [str(it["frame_dir"]) for it in items]
    counts = {role: sum(split.get(i) == role for i in ids) for role in ("train", "test")}
    if family is None:
        return split, {"split": None, **counts, "outside": len(ids)}
    lists = families(splits)[family]
    if not counts["train"] and not counts["test"]:
        raise SkelpipeError(f"{path}: split lists {' + '.join(lists)} name none of the file's "
                            f"{len(ids)} annotations")
    return split, {"split": family, "lists": list(lists), **counts,
                   "outside": len(ids) - counts["train"] - counts["test"]}


def import_store(path, out, benchmark: str | None = None, num_classes: int | None = None,
                 class_names=None, work: Work | None = None) -> dict:
    """A pyskl pickle as a pose store ``out``; returns counts. ``benchmark`` names the split
    family (see ``choose_family``). Labels must lie below ``num_classes`` when given."""
    splits, items = read(path)
    if not items:
        raise SkelpipeError(f"{path}: no annotation")
    split, split_counts = _assign(path, splits, items, benchmark)
    shape = (items[0]["keypoint"].shape[2], items[0]["keypoint"].shape[3])
    layout = LAYOUTS[shape]
    three_d = shape[1] == 3
    for i, item in enumerate(items):
        if label_problem(item["label"]):  # before any list is sized by the largest label
            raise SkelpipeError(f"{path}: annotation {i} ({item['frame_dir']}): {label_problem(item['label'])}")
        if (item["keypoint"].shape[2], item["keypoint"].shape[3]) != shape:
            raise SkelpipeError(f"{path}: annotation {i} ({item['frame_dir']}) has another joint layout "
                                f"than the first")
        if num_classes is not None and item["label"] >= num_classes:
            raise SkelpipeError(f"{path}: annotation {i} ({item['frame_dir']}): label {item['label']} out "
                                f"of range for {num_classes} classes")
    k = max(int(it["label"]) for it in items) + 1 if num_classes is None else num_classes
    names = list(class_names) if class_names else [str(c) for c in range(k)]
    channels = "x,y,z" if three_d else "x,y,conf"
    attrs = {"source": f"pyskl:{Path(path).name}", "channels": channels, "class_names": names,
             "num_classes": k, "extractor": "pyskl"}
    with PoseWriter(out, layout, attrs, work=work) as writer:
        for item in items:
            kp = np.asarray(item["keypoint"], np.float32)
            sample = {"label": int(item["label"]), "label_name": names[int(item["label"])], "fps": 30.0,
                      "num_frames": int(item.get("total_frames", kp.shape[1])), "channels": channels}
            if not three_d:
                kp = np.concatenate([kp, np.asarray(item["keypoint_score"], np.float32)[..., None]], -1)
                h, w = image_shape(item)
                sample["image_size"] = [w, h]
            if str(item["frame_dir"]) in split:
                sample["split"] = split[str(item["frame_dir"])]
            writer.add(str(item["frame_dir"]), kp, None, **sample)
    counts = {"samples": len(items), "layout": layout, **split_counts}
    if work is not None:
        work.note(pyskl=counts)
    return counts
