"""A pose store as a pyskl annotation pickle, in the shape pyskl's transforms accept.

pyskl's models and its ``GenSkeFeat`` know two graphs: COCO-17 for 2D and NTU-25 for 3D. Each
sample is written on the graph of its own dimension (told by its channels, else the store's):
joints another layout names otherwise are renamed (``RENAMED``); joints it lacks take the place
of a joint nearby (``STAND_INS``; in 2D with score 0), so that pyskl's bones to them have
length 0 rather than reaching to the image corner or the body centre. What pyskl asserts holds:
``total_frames`` is T, 3D has at most two bodies (``PreNormalize3D``: the two present in the
most joint-frames are kept) and 2D has a non-zero ``img_shape`` (``PreNormalize2D`` divides by
it: a sample without an image size gets the smallest image from pixel 0 that holds its
keypoints, since pyskl uses the size only to scale coordinates into [-1, 1]).
"""

import pickle
from collections import Counter
from pathlib import Path

import numpy as np

from skelpipe.core import atomic
from skelpipe.core.errors import SkelpipeError
from skelpipe.data.pack import is_3d
from skelpipe.skeleton import layouts
from skelpipe.skeleton.store import label_problem, open_store

GRAPHS = {False: "coco17", True: "ntu25"}    # 3D? → pyskl's graph
MAX_BODIES_3D = 2
# A joint of pyskl's graphs → the joint at its place in a layout that names it otherwise.
RENAMED = {"nose": "head", "spine_base": "hip_center", "spine_mid": "spine",
           "spine_shoulder": "shoulder_center"}
# A joint of pyskl's graphs → the nearby joint that stands in for it where a layout lacks it.
STAND_INS = {"left_eye": "head", "right_eye": "head", "left_ear": "head", "right_ear": "head",
             "neck": "shoulder_center", "left_hand_tip": "left_hand", "left_thumb": "left_hand",
             "right_hand_tip": "right_hand", "right_thumb": "right_hand"}


def joint_map(source: layouts.Layout, three_d: bool) -> tuple[str, np.ndarray, np.ndarray]:
    """(pyskl's graph, the source joint of each of its joints, which of them are stand-ins);
    a SkelpipeError when the source has no joint for one."""
    target = layouts.get(GRAPHS[three_d])
    index, stand_in = [], []
    for joint in target.joints:
        for name, standing_in in ((joint, False), (RENAMED.get(joint), False), (STAND_INS.get(joint), True)):
            if name in source.joints:
                index.append(source.index(name))
                stand_in.append(standing_in)
                break
        else:
            raise SkelpipeError(f"{'3D' if three_d else '2D'} {source.name} poses cannot be written on "
                                f"pyskl's {target.name} graph (no joint for its {joint})")
    return target.name, np.array(index), np.array(stand_in)


def two_bodies(kp: np.ndarray) -> np.ndarray:
    """(M <= 2, T, V, C): the two bodies present in the most joint-frames, in their order."""
    if kp.shape[0] <= MAX_BODIES_3D:
        return kp
    present = (kp != 0).any(-1).sum((1, 2))
    return kp[np.sort(np.argsort(-present, kind="stable")[:MAX_BODIES_3D])]


def extent(xy: np.ndarray) -> tuple[int, int]:
    """(H, W) of the smallest image from pixel 0 that holds every placed keypoint (at least 1)."""
    placed = xy[(xy != 0).any(-1)]
    if not len(placed):
        return 1, 1
    return max(1, int(np.ceil(placed[:, 1].max()))), max(1, int(np.ceil(placed[:, 0].max())))


def _item(store, sample, notes: Counter) -> tuple[dict, bool]:
    """(pyskl item, 3D?) of one sample; ``notes`` counts what was changed to fit pyskl."""
    where = f"{store.path}: sample {sample.id}"
    if "label" not in sample.attrs:
        raise SkelpipeError(f"{where} has no label")
    if label_problem(sample.attrs["label"]):
        raise SkelpipeError(f"{where}: {label_problem(sample.attrs['label'])}")
    kp = np.asarray(sample.keypoints, np.float32)
    if not np.isfinite(kp).all():
        raise SkelpipeError(f"{where}: keypoints hold non-finite numbers")
    channels = (sample.attrs.get("channels") or store.attrs.get("channels") or "").split(",")
    three_d = is_3d(store.layout, ",".join(channels), kp.shape[-1])
    try:
        graph, index, stand_in = joint_map(store.layout, three_d)
    except SkelpipeError as e:
        raise SkelpipeError(f"{where}: {e}") from None
    if graph != store.layout.name:
        notes[f"written on {graph}"] += 1
    item = {"frame_dir": sample.id, "label": int(sample.attrs["label"]), "total_frames": int(kp.shape[1])}
    if three_d:
        item["keypoint"] = two_bodies(kp[:, :, index, :3])
        if len(item["keypoint"]) < len(kp):
            notes["3D with more than two bodies (kept the two present most)"] += 1
        return item, True
    xy = kp[:, :, index, :2]
    present = (kp[..., :2] != 0).any(-1).astype(np.float32)
    score = (kp[..., channels.index("conf")] if "conf" in channels else present)[:, :, index]
    score[:, :, stand_in] = 0
    size = sample.attrs.get("image_size") or store.attrs.get("image_size")
    if size:
        shape = (int(size[1]), int(size[0]))
    else:
        shape = extent(xy)
        notes["2D without image size (img_shape from the keypoints' extent)"] += 1
    item.update(keypoint=xy, keypoint_score=score, img_shape=shape, original_shape=shape)
    return item, False


def export_store(store_path, out, benchmark: str = "default") -> dict:
    """A pose store as a pyskl pickle; its ``split`` lists ``<benchmark>_train`` /
    ``<benchmark>_val`` from the samples' split attribute (none when no sample has one).
    Returns counts and what was changed to fit pyskl (``notes``)."""
    items, lists, notes, dims = [], {"train": [], "test": []}, Counter(), {}
    with open_store(store_path) as store:
        for sid in store.ids():
            sample = store.read(sid)
            item, three_d = _item(store, sample, notes)
            dims.setdefault(three_d, sid)
            if len(dims) > 1:
                raise SkelpipeError(f"{store_path}: sample {dims[False]} is 2D and {dims[True]} 3D; a "
                                    f"pyskl file holds one graph")
            items.append(item)
            if sample.attrs.get("split") in lists:
                lists[sample.attrs["split"]].append(sid)
    splits = {f"{benchmark}_train": lists["train"], f"{benchmark}_val": lists["test"]} \
        if any(lists.values()) else {}
    with atomic.replacing(Path(out)) as tmp, open(tmp, "wb") as f:
        pickle.dump({"split": splits, "annotations": items}, f, protocol=4)
    return {"samples": len(items), "graph": GRAPHS[next(iter(dims), False)],
            **{k: len(v) for k, v in splits.items()}, "notes": dict(notes)}
