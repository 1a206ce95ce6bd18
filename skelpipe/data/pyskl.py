"""pyskl's skeleton annotation pickles in and out.

A pyskl file is a pickled ``{"split": {name: [frame_dir, ...]}, "annotations": [item, ...]}``
(older files: the bare list of items). An item holds ``frame_dir`` (the sample id), ``label``,
``total_frames``, ``img_shape`` / ``original_shape`` (H, W), ``keypoint`` (M, T, V, 2 or 3) and,
for 2D, ``keypoint_score`` (M, T, V). COCO-17 2D (pyskl's HRNet poses of NTU, Kinetics, FineGYM…)
becomes a ``coco17`` store with channels x, y, conf; NTU-25 3D becomes ``ntu25`` x, y, z.

Loading a pickle can execute code. ``read`` unpickles with a restricted unpickler that allows
only Python's plain containers and numpy arrays and refuses anything else, and checks the top
level before it touches an item. Only load files you trust all the same.
"""

import io
import pickle
from pathlib import Path

import numpy as np

from skelpipe.core import atomic
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.work import Work
from skelpipe.skeleton.store import PoseWriter, label_problem, open_store

LAYOUTS = {(17, 2): "coco17", (25, 3): "ntu25"}          # (joints, coordinates) → layout
SPLIT_SUFFIXES = {"train": "train", "val": "test", "test": "test"}
_ALLOWED = {
    ("builtins", "dict"), ("builtins", "list"), ("builtins", "tuple"), ("builtins", "set"),
    ("builtins", "str"), ("builtins", "int"), ("builtins", "float"), ("builtins", "bool"),
    ("builtins", "bytes"), ("builtins", "slice"), ("collections", "OrderedDict"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.dtypes", "Float32DType"), ("numpy.dtypes", "Float64DType"), ("numpy.dtypes", "Int64DType"),
    ("numpy.dtypes", "Int32DType"), ("numpy.dtypes", "Float16DType"),
}


class _Restricted(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) not in _ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a skeleton file never needs")
        return super().find_class(module, name)


def read(path) -> tuple[dict, list]:
    """(splits, annotations) of a pyskl pickle, checked item by item (one line naming the item)."""
    path = Path(path)
    try:
        data = _Restricted(io.BytesIO(path.read_bytes())).load()
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
    for i, item in enumerate(data["annotations"]):
        _check(path, i, item)
    return data.get("split", {}), data["annotations"]


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
        if "img_shape" not in item:
            raise SkelpipeError(f"{where}: 2D keypoints without img_shape")
    if not isinstance(item["label"], (int, np.integer)) or item["label"] < 0:
        raise SkelpipeError(f"{where}: label must be an integer >= 0, got {item['label']!r}")


def split_of(splits: dict, benchmark: str | None) -> dict[str, str]:
    """frame_dir → "train" / "test" from pyskl's split lists ``<benchmark>_train`` /
    ``<benchmark>_val`` (the first benchmark found when None)."""
    names = sorted({n.rsplit("_", 1)[0] for n in splits if "_" in n})
    if benchmark is None and names:
        benchmark = names[0]
    if benchmark is not None and benchmark not in names:
        raise SkelpipeError(f"no split {benchmark!r} in the file; it has {', '.join(names) or 'none'}")
    out = {}
    for name, ids in splits.items():
        prefix, _, suffix = name.rpartition("_")
        if prefix == benchmark and suffix in SPLIT_SUFFIXES:
            out.update({str(i): SPLIT_SUFFIXES[suffix] for i in ids})
    return out


def import_store(path, out, benchmark: str | None = None, num_classes: int | None = None,
                 class_names=None, work: Work | None = None) -> dict:
    """A pyskl pickle as a pose store ``out``; returns counts. Labels must lie below
    ``num_classes`` when given."""
    splits, items = read(path)
    if not items:
        raise SkelpipeError(f"{path}: no annotation")
    split = split_of(splits, benchmark)
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
    with PoseWriter(out, layout, attrs) as writer:
        for item in items:
            kp = np.asarray(item["keypoint"], np.float32)
            if not three_d:
                kp = np.concatenate([kp, np.asarray(item["keypoint_score"], np.float32)[..., None]], -1)
            h, w = (item.get("original_shape") or item["img_shape"]) if not three_d else (0, 0)
            sample = {"label": int(item["label"]), "label_name": names[int(item["label"])], "fps": 30.0,
                      "num_frames": int(item.get("total_frames", kp.shape[1])), "channels": channels}
            if not three_d:
                sample["image_size"] = [int(w), int(h)]
            if str(item["frame_dir"]) in split:
                sample["split"] = split[str(item["frame_dir"])]
            writer.add(str(item["frame_dir"]), kp, None, **sample)
    counts = {"samples": len(items), "layout": layout, "train": sum(v == "train" for v in split.values()),
              "test": sum(v == "test" for v in split.values())}
    if work is not None:
        work.note(pyskl=counts)
    return counts


def export_store(store_path, out, benchmark: str = "default") -> dict:
    """A pose store as a pyskl pickle (its ``split`` from the samples' split attribute, named
    ``<benchmark>_train`` / ``<benchmark>_val``); returns counts."""
    items, splits = [], {f"{benchmark}_train": [], f"{benchmark}_val": []}
    with open_store(store_path) as store:
        three_d = "z" in (store.attrs.get("channels") or "").split(",")
        for sid in store.ids():
            sample = store.read(sid)
            if "label" not in sample.attrs or label_problem(sample.attrs["label"]):
                raise SkelpipeError(f"{store_path}: sample {sid}: "
                                    f"{label_problem(sample.attrs['label']) if 'label' in sample.attrs else 'no label'}")
            kp = np.asarray(sample.keypoints, np.float32)
            item = {"frame_dir": sid, "label": int(sample.attrs["label"]), "total_frames": int(kp.shape[1])}
            if three_d:
                item["keypoint"] = kp[..., :3]
            else:
                w, h = sample.attrs.get("image_size") or (0, 0)
                item.update(keypoint=kp[..., :2].copy(), keypoint_score=kp[..., 2].copy(),
                            img_shape=(int(h), int(w)), original_shape=(int(h), int(w)))
            items.append(item)
            if sample.attrs.get("split") in ("train", "test"):
                splits[f"{benchmark}_{'train' if sample.attrs['split'] == 'train' else 'val'}"].append(sid)
    with atomic.replacing(Path(out)) as tmp:
        Path(tmp).write_bytes(pickle.dumps({"split": splits, "annotations": items}, protocol=4))
    return {"samples": len(items), **{k: len(v) for k, v in splits.items()}}
