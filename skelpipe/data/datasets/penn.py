"""Penn Action (Zhang, Zhu, Derpanis, ICCV 2013): per-video label ``.mat`` files and frames.

The dataset's layout::

    root/labels/NNNN.mat      one MATLAB v5 file a video (2,326: 1,258 train, 1,068 test)
    root/frames/NNNN/*.jpg    the video's frames (000001.jpg, ...), i.e. the RGB "video"

A label file holds ``action`` and ``pose`` (strings), ``x``, ``y`` (nframes x 13 pixel
coordinates of the 13 annotated joints, ``skelpipe.skeleton.layouts`` ``penn13`` order),
``visibility`` (nframes x 13, 1 = visible), ``train`` (1 train / -1 test), ``bbox``
(nframes x 4), ``dimensions`` ([H W nframes]) and ``nframes`` (uint8 in most files, uint16 in
some, so counts are converted to Python ints before any arithmetic).
"""

from pathlib import Path
from typing import NamedTuple

import numpy as np
import scipy.io

from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fields import MAX_SEED
from skelpipe.data.datasets.base import Dataset, Skeletons, find_dir, refuse_duplicates, register
from skelpipe.data.pairing import draw_pairs
from skelpipe.pose.video import Video

NUM_JOINTS = 13
# The action strings as stored in the files, sorted; a label is an index into this tuple.
ACTIONS = ("baseball_pitch", "baseball_swing", "bench_press", "bowl", "clean_and_jerk",
           "golf_swing", "jump_rope", "jumping_jacks", "pullup", "pushup", "situp", "squat",
           "strum_guitar", "tennis_forehand", "tennis_serve")
FIELDS = ("action", "pose", "x", "y", "visibility", "train", "bbox", "dimensions", "nframes")


class Sample(NamedTuple):
    video_id: str   # "0001"
    path: Path      # the label file
    label: int      # index into ACTIONS
    split: str      # "train" / "test"
    nframes: int


def read_label_file(path) -> dict:
    """One label file as a dict: ``action``, ``pose`` (str), ``label`` (index into
    ``ACTIONS``), ``x``, ``y`` (nframes, 13) float64, ``visibility`` (nframes, 13) bool,
    ``train`` (bool), ``bbox`` (n, 4) float64, ``dimensions`` (H, W, nframes) ints and
    ``nframes`` (int). A missing field or a wrong shape raises ``SkelpipeError`` naming the
    file and the field."""
    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise SkelpipeError(f"{path}: no such label file") from None
    except NotImplementedError:
        raise SkelpipeError(f"{path}: MATLAB v7.3 file; Penn Action labels are v5 files") from None
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on garbage
        raise SkelpipeError(f"{path}: not a readable MATLAB label file ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:80] if str(e) else ''})") from None

    def field(name):
        if name not in mat:
            raise SkelpipeError(f"{path}: missing field '{name}'")
        return np.asarray(mat[name])

    def text(name):
        value = field(name)
        if value.dtype.kind != "U" or value.size != 1 or not str(value.ravel()[0]).strip():
            raise SkelpipeError(f"{path}: field '{name}' is not a string")
        return str(value.ravel()[0]).strip()

    def integers(name, count):
        value = field(name)
        if value.dtype.kind not in "iuf" or value.size != count:
            raise SkelpipeError(f"{path}: field '{name}' should hold {count} integer(s), "
                                f"has shape {value.shape} ({value.dtype})")
        as_int = value.astype(np.int64).ravel()   # before any arithmetic: uint8 would wrap
        if not np.array_equal(as_int, value.ravel()):
            raise SkelpipeError(f"{path}: field '{name}' is not integer-valued")
        return [int(v) for v in as_int]

    action = text("action")
    if action not in ACTIONS:
        raise SkelpipeError(f"{path}: field 'action' is {action!r}, not a Penn Action action")
    (nframes,) = integers("nframes", 1)
    if nframes < 1:
        raise SkelpipeError(f"{path}: field 'nframes' is {nframes}")

    def joints(name):
        value = field(name)
        if value.dtype.kind not in "iuf" or value.shape != (nframes, NUM_JOINTS):
            raise SkelpipeError(f"{path}: field '{name}' has shape {value.shape}, expected "
                                f"(nframes, {NUM_JOINTS}) = ({nframes}, {NUM_JOINTS})")
        return value

    x = joints("x").astype(np.float64)
    y = joints("y").astype(np.float64)
    visibility = joints("visibility")
    if not np.isin(visibility, (0, 1)).all():
        raise SkelpipeError(f"{path}: field 'visibility' holds values other than 0 and 1")
    (train,) = integers("train", 1)
    if train not in (1, -1):
        raise SkelpipeError(f"{path}: field 'train' is {train}, expected 1 (train) or -1 (test)")
    bbox = field("bbox")
    if bbox.dtype.kind not in "iuf" or bbox.ndim != 2 or bbox.shape[1] != 4:
        raise SkelpipeError(f"{path}: field 'bbox' has shape {bbox.shape}, expected (nframes, 4)")
    dimensions = integers("dimensions", 3)
    if min(dimensions[:2]) < 1:  # the image size divides every coordinate when packed
        raise SkelpipeError(f"{path}: field 'dimensions' gives an image of {dimensions[1]} x "
                            f"{dimensions[0]} pixels")
    return {
        "action": action,
        "label": ACTIONS.index(action),
        "pose": text("pose"),
        "x": x,
        "y": y,
        "visibility": visibility.astype(bool),
        "train": train == 1,
        "bbox": bbox.astype(np.float64),
        "dimensions": tuple(dimensions),
        "nframes": nframes,
    }


def to_array(label: dict) -> np.ndarray:
    """The annotated skeleton as ``(1, T, 13, 3)`` float32: x, y (pixels) and visibility."""
    return np.stack([label["x"], label["y"], label["visibility"]], axis=-1)[None].astype(np.float32)


def video_id(value) -> str:
    """``1``, ``"1"``, ``"0001"`` or ``".../labels/0001.mat"`` → ``"0001"``."""
    stem = Path(str(value)).stem
    if not stem.isdigit():
        raise SkelpipeError(f"{value}: not a Penn Action video id (NNNN)")
    return f"{int(stem):04d}"


def frames_dir(root, vid) -> Path:
    """The folder of a video's frames: ``root/frames/NNNN``."""
    return Path(root) / "frames" / video_id(vid)


def frame_files(root, vid) -> list[Path]:
    """A video's frames in order (``root/frames/NNNN/*.jpg``); SkelpipeError if there is none."""
    folder = frames_dir(root, vid)
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise SkelpipeError(f"{folder}: no frames (expected {folder}/000001.jpg, ...)")
    return files


class Scan(NamedTuple):
    samples: list[Sample]          # in id order
    bad: list[tuple[str, str]]     # (path, reason)

    @property
    def paths(self) -> list[Path]:
        """The label files of the good samples."""
        return [s.path for s in self.samples]


SPLITS = ("official", "dev")


def dev_split(samples: list[Sample], fraction: float = 0.3, seed: int = 0) -> dict[str, str]:
    """The development split: {video id: "train" | "test"} over the official *training*
    samples only, a seeded class-stratified hold-out of ``fraction`` of each class as "test"
    (the official test samples take no part: results on them stay unseen while developing)."""

    if not 0.0 < fraction < 1.0:
        raise SkelpipeError(f"Penn Action dev split: dev_fraction must lie in (0, 1), got {fraction}")
    train = [s for s in samples if s.split == "train"]
    kept = draw_pairs([s.label for s in train], 1.0 - fraction, seed)  # a seeded stratified subset
    return {s.video_id: "train" if k else "test" for s, k in zip(train, kept)}


def scan(root) -> Scan:
    """Read every label file of ``root/labels/*.mat`` (or ``root/*.mat`` when ``root`` is the
    labels folder itself): the samples in id order and the bad files as ``(path, reason)``;
    a bad file is reported, never fatal. Two files of one video (``1.mat``, ``0001.mat``) are
    refused."""
    root = Path(root)
    labels = root / "labels" if (root / "labels").is_dir() else root
    if not labels.is_dir():
        raise SkelpipeError(f"{root}: no such directory (expected Penn Action labels/NNNN.mat)")
    samples, bad = [], []
    paths = sorted(labels.glob("*.mat"))
    refuse_duplicates(((video_id(p), p) for p in paths if p.stem.isdigit()), "Penn Action video")
    for path in paths:
        try:
            vid = video_id(path)
            label = read_label_file(path)
        except SkelpipeError as e:
            bad.append((str(path), str(e)))
            continue
        samples.append(Sample(vid, path, label["label"], "train" if label["train"] else "test",
                              label["nframes"]))
    return Scan(samples, bad)


@register
class Penn(Dataset):
    """Penn Action: human-annotated skeletons (penn13, x/y/visibility) from the label files, and
    the frame folders. ``data.split``: the official train/test flag, or ``dev`` (a seeded split
    of the official training videos, for choosing settings without touching the test set)."""

    name = "penn"
    root_env = "SKELPIPE_PENN_ROOT"
    expected = "labels/NNNN.mat (annotations) and, for extraction, frames/NNNN/*.jpg"
    options = {"split": "official", "dev_fraction": 0.3, "dev_seed": 0}
    limits = {"split": (SPLITS,), "dev_fraction": (None, 0.0, 1.0), "dev_seed": (None, 0, MAX_SEED)}

    def skeletons(self, root, options, work) -> Skeletons:
        labels_dir = find_dir(root, ("labels", "."), "*.mat")
        found = scan(labels_dir)
        for path, reason in found.bad:
            work.report_bad(str(path), reason)
        split_mode = options.get("split", "official")
        if split_mode not in SPLITS:
            raise SkelpipeError(f"Penn Action: data.split must be one of {', '.join(SPLITS)}, "
                                f"got {split_mode!r}")
        samples = found.samples
        if split_mode == "dev":
            dev = dev_split(samples, options.get("dev_fraction", 0.3), options.get("dev_seed", 0))
            samples = [s for s in samples if s.video_id in dev]
            if not samples:
                raise SkelpipeError(f"{labels_dir}: no official training sample to make a dev split of")

        def read(item):
            path = item[1]
            label = read_label_file(path)
            h, w = int(label["dimensions"][0]), int(label["dimensions"][1])
            split = dev[video_id(path)] if split_mode == "dev" else ("train" if label["train"] else "test")
            return (video_id(path), to_array(label), {"bbox": label["bbox"]},
                    {"label": ACTIONS.index(label["action"]), "label_name": label["action"],
                     "split": split, "fps": 30.0, "num_frames": label["nframes"], "image_size": [w, h],
                     "channels": "x,y,conf"})

        attrs = {"dataset": "penn", "source": "human annotation", "channels": "x,y,conf",
                 "class_names": list(ACTIONS), "fps": 30.0, "split_protocol": split_mode}
        return Skeletons([(s.video_id, s.path) for s in samples], "penn13", attrs, read)

    def skeleton_files(self, root, options):
        return sorted(find_dir(root, ("labels", "."), "*.mat").glob("*.mat"))

    def videos(self, root, options, work=None):
        frames = Path(root) / "frames"
        if not frames.is_dir():
            raise SkelpipeError(f"{frames}: no such folder (Penn Action frames/NNNN/ folders; "
                                "or use --set extract.extractor=simulated)")
        found = scan(root) if (Path(root) / "labels").is_dir() else Scan([], [])
        for path, reason in found.bad if work is not None else ():
            work.report_bad(path, reason)
        folders = [d for d in sorted(frames.iterdir()) if d.is_dir()]
        refuse_duplicates(((video_id(d.name), d) for d in folders if d.name.isdigit()), "Penn Action video")
        labels = {s.video_id: s for s in found.samples}
        split = options.get("split", "official")
        dev = dev_split(list(labels.values()), options.get("dev_fraction", 0.3),
                        options.get("dev_seed", 0)) if split == "dev" else None
        out = []
        for d in sorted(frames.iterdir()):
            s = labels.get(d.name)
            if not d.is_dir() or (dev is not None and d.name not in dev):
                continue
            attrs = {} if s is None else {"label": s.label, "label_name": ACTIONS[s.label],
                                          "split": dev[d.name] if dev is not None else s.split}
            out.append(Video(d.name, d, attrs))
        return out
