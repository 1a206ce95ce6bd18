"""SYSU 3D HOI (Hu, Zheng, Lai, Zhang, CVPR 2015): 480 videos, 12 activities x 40 subjects,
Kinect v1 skeletons of 20 joints (``skelpipe.skeleton.layouts`` ``kinect20`` order).

Supported layout: the dataset's MATLAB release (``SYSU3DAction/3DvideoNorm``), one folder a
subject and in it one folder a video, ``video<k>`` with k = 1..12 the activity::

    root/<subject>/video<k>/sklWorld.mat   variable SW: (20, 3, T) joint positions in metres
    root/<subject>/video<k>/sklImage.mat   variable S:  (20, C>=2, T) positions in the RGB frames
    root/<subject>/video<k>/rgb/           the RGB frames

``root`` may also be the folder holding ``3DvideoNorm``. Subjects are numbered 1..40 in the
sorted order of their folder names (numeric order when the names are numbers); a sample's id is
``P<subject>A<activity>``, e.g. ``P07A12``.

Evaluation (as in the dataset paper): setting 1 trains on half of each activity's instances,
setting 2 on half of the subjects; 30 random splits each. The dataset's own split files are not
part of the skeleton release, so skelpipe draws the splits from a fixed seed
(``split_of``/``splits``, ``seed_index`` 0..29): deterministic, and with the full dataset
exactly 20 of 40 instances of each activity (setting 1) or 20 of 40 subjects (setting 2) train.
"""

import functools
import re
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np
import scipy.io

from skelpipe.core.errors import SkelpipeError
from skelpipe.data.datasets.base import Dataset, Skeletons, refuse_duplicates, register
from skelpipe.pose.video import Video

NUM_JOINTS = 20
NUM_SUBJECTS = 40
NUM_SPLITS = 30
ACTIONS = ("drinking", "pouring", "calling phone", "playing phone", "wearing backpacks",
           "packing backpacks", "sitting chair", "moving chair", "taking out wallet",
           "taking from wallet", "mopping", "sweeping")
WORLD_FILE, IMAGE_FILE, FRAMES_DIR = "sklWorld.mat", "sklImage.mat", "rgb"
# Variable names tried in order; otherwise the file's only numeric array is taken.
VARIABLES = ("SW", "S", "skeleton", "skel", "joints")
SPLIT_SEED = 20150607  # the fixed base seed of the 30 random splits of each setting

_VIDEO = re.compile(r"video(\d+)")
_ID = re.compile(r"P(\d{2})A(\d{2})")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}


class Instance(NamedTuple):
    sample_id: str     # "P07A12"
    subject: int       # 1..40
    subject_name: str  # the subject's folder name
    label: int         # 0..11, index into ACTIONS
    video_dir: Path    # root/<subject>/video<k>


def sample_id(subject: int, label: int) -> str:
    return f"P{subject:02d}A{label + 1:02d}"


def parse_id(sid: str) -> tuple[int, int]:
    """``"P07A12"`` → (subject 7, label 11)."""
    m = _ID.fullmatch(str(sid))
    if not m or not 1 <= int(m[1]) <= NUM_SUBJECTS or not 1 <= int(m[2]) <= len(ACTIONS):
        raise SkelpipeError(f"{sid}: not a SYSU 3D HOI sample id (P01A01 ... P40A12)")
    return int(m[1]), int(m[2]) - 1


# ----------------------------------------------------------------------------- reading


def read_skeleton_file(path) -> np.ndarray:
    """The joints of one ``.mat`` skeleton file as ``(T, 20, C)`` float64.

    The array is the variable ``SW`` (``sklWorld.mat``, C = 3) or ``S`` (``sklImage.mat``),
    else one of ``VARIABLES``, else the file's only numeric 3-D array; laid out
    ``(20, C, T)`` as in the release, or ``(T, 20, C)``; C is 2 to 4. MATLAB v7.3 files are
    read with h5py. Anything else raises one ``SkelpipeError`` line naming the file.
    """
    path = Path(path)
    variables = _load_mat(path)
    name = next((v for v in VARIABLES if v in variables), None)
    if name is None:
        arrays = [k for k, v in variables.items() if isinstance(v, np.ndarray)
                  and v.dtype.kind in "iuf" and v.ndim == 3]
        if len(arrays) != 1:
            raise SkelpipeError(f"{path}: no skeleton array: expected a variable SW (20 x 3 x T)"
                                f" or S; found {', '.join(sorted(variables)) or 'nothing'}")
        name = arrays[0]
    a = np.asarray(variables[name])
    if a.dtype.kind not in "iuf" or a.ndim != 3:
        raise SkelpipeError(f"{path}: variable {name} is not a numeric 3-D array "
                            f"(shape {a.shape}, {a.dtype})")
    if a.shape[0] == NUM_JOINTS and 2 <= a.shape[1] <= 4:
        joints = a.transpose(2, 0, 1)                 # (20, C, T) → (T, 20, C)
    elif a.shape[1] == NUM_JOINTS and 2 <= a.shape[2] <= 4:
        joints = a
    else:
        raise SkelpipeError(f"{path}: variable {name} has shape {a.shape}; expected "
                            f"(20 joints, C, T frames) or (T, 20, C) with C in 2..4")
    joints = joints.astype(np.float64)
    if not np.isfinite(joints).all():
        raise SkelpipeError(f"{path}: variable {name} holds NaN or infinite values")
    return joints


def _load_mat(path: Path) -> dict:
    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError:
        raise SkelpipeError(f"{path}: no such file") from None
    except NotImplementedError:                       # MATLAB v7.3 = HDF5

        try:
            with h5py.File(path, "r") as f:
                # h5py sees MATLAB arrays with their axes reversed
                return {k: np.asarray(f[k][()]).T for k in f
                        if isinstance(f[k], h5py.Dataset) and not k.startswith("#")}
        except OSError as e:
            raise SkelpipeError(f"{path}: unreadable MATLAB v7.3 file ({e})") from None
    except Exception as e:  # scipy raises ValueError, TypeError, MatReadError... on garbage
        raise SkelpipeError(f"{path}: not a readable MATLAB file ({type(e).__name__})") from None
    return {k: v for k, v in mat.items() if not k.startswith("__")}


def to_array(joints: np.ndarray) -> np.ndarray:
    """``(T, 20, C)`` → ``(1, T, 20, C)`` float32 (one person, the stored-pose layout)."""
    return np.asarray(joints, dtype=np.float32)[None]


def frame_files(video_dir) -> list[Path]:
    """A video's RGB frames in order (``video_dir/rgb/*``); SkelpipeError if there is none."""
    folder = Path(video_dir) / FRAMES_DIR
    files = sorted(p for p in folder.glob("*") if p.suffix.lower() in _IMAGE_SUFFIXES)
    if not files:
        raise SkelpipeError(f"{folder}: no RGB frames")
    return files


# ----------------------------------------------------------------------------- scanning


class Scan(NamedTuple):
    instances: list[Instance]      # in id order
    bad: list[tuple[str, str]]     # (path, reason)

    @property
    def paths(self) -> list[Path]:
        """The video folders of the good instances (what ``read_instance`` takes)."""
        return [i.video_dir for i in self.instances]


def scan(root, check: bool = False) -> Scan:
    """The videos under ``root`` (see the module doc) in id order, and the bad ones as
    ``(path, reason)``: folders not named ``video1``..``video12``, videos without
    ``sklWorld.mat`` and, with ``check=True``, skeleton files the reader rejects."""
    root = _videos_root(root)
    instances, bad = [], []
    for number, subject in enumerate(_subjects(root), start=1):
        for video in sorted(d for d in subject.iterdir() if d.is_dir()):
            m = _VIDEO.fullmatch(video.name)
            if not m or not 1 <= int(m[1]) <= len(ACTIONS):
                bad.append((str(video), "not a video folder video1 ... video12"))
                continue
            if not (video / WORLD_FILE).is_file():
                bad.append((str(video), f"no {WORLD_FILE}"))
                continue
            if check:
                try:
                    read_skeleton_file(video / WORLD_FILE)
                except SkelpipeError as e:
                    bad.append((str(video / WORLD_FILE), str(e)))
                    continue
            label = int(m[1]) - 1
            instances.append(Instance(sample_id(number, label), number, subject.name, label, video))
    refuse_duplicates(((i.sample_id, i.video_dir) for i in instances), "SYSU 3D HOI video")
    instances.sort(key=lambda i: i.sample_id)
    return Scan(instances, bad)


def read_instance(item) -> dict:
    """One video's skeletons: ``id``, ``label``, ``subject``, ``subject_name``, ``xyz``
    ``(1, T, 20, 3)`` float32 (``sklWorld.mat``) and ``image_xy`` ``(1, T, 20, 2)`` float32
    (``sklImage.mat``; None when the video has none). ``item``: an ``Instance`` or a video
    folder ``<subject>/video<k>`` (numbered among its sibling subject folders)."""
    if not isinstance(item, Instance):
        video = Path(item)
        m = _VIDEO.fullmatch(video.name)
        if not m or not 1 <= int(m[1]) <= len(ACTIONS):
            raise SkelpipeError(f"{video}: not a SYSU 3D HOI video folder <subject>/video1..12")
        subjects = [d.name for d in _subjects(video.parent.parent)]
        number, label = subjects.index(video.parent.name) + 1, int(m[1]) - 1
        item = Instance(sample_id(number, label), number, video.parent.name, label, video)
    xyz = read_skeleton_file(item.video_dir / WORLD_FILE)
    if xyz.shape[2] != 3:
        raise SkelpipeError(f"{item.video_dir / WORLD_FILE}: {xyz.shape[2]} coordinates a joint, "
                            f"expected x, y, z")
    image = None
    if (item.video_dir / IMAGE_FILE).is_file():
        image = to_array(read_skeleton_file(item.video_dir / IMAGE_FILE)[:, :, :2])
    return {"id": item.sample_id, "label": item.label, "subject": item.subject,
            "subject_name": item.subject_name, "xyz": to_array(xyz), "image_xy": image}


def _videos_root(root) -> Path:
    root = Path(root)
    if (root / "3DvideoNorm").is_dir():
        root = root / "3DvideoNorm"
    if not root.is_dir():
        raise SkelpipeError(f"{root}: no such directory (expected SYSU 3D HOI "
                            f"<subject>/video<k>/{WORLD_FILE})")
    return root


def _subjects(root: Path) -> list[Path]:
    subjects = sorted((d for d in root.iterdir() if d.is_dir()), key=_subject_order)
    if len(subjects) > NUM_SUBJECTS:
        raise SkelpipeError(f"{root}: {len(subjects)} subject folders, SYSU 3D HOI has "
                            f"{NUM_SUBJECTS}")
    return subjects


def _subject_order(folder: Path):
    return (0, int(folder.name), "") if folder.name.isdigit() else (1, 0, folder.name)


# ----------------------------------------------------------------------------- splits


def split_of(sid: str, setting: int, seed_index: int) -> str:
    """``"train"`` or ``"test"`` for sample ``sid`` in random split ``seed_index`` (0..29)
    of setting 1 (half of each activity's instances train) or 2 (half of the subjects)."""
    subject, label = parse_id(sid)
    return "train" if (subject, label) in _train_set(setting, seed_index) else "test"


def splits(instances, setting: int, seed_index: int) -> dict[str, list]:
    """``{"train": [...], "test": [...]}`` of ``instances`` (``Instance`` or sample ids)."""
    out = {"train": [], "test": []}
    for inst in instances:
        out[split_of(getattr(inst, "sample_id", inst), setting, seed_index)].append(inst)
    return out


@functools.lru_cache(maxsize=None)
def _train_set(setting: int, seed_index: int) -> frozenset[tuple[int, int]]:
    """The (subject, label) pairs that train in one split, drawn over the full 40 x 12 grid."""
    if setting not in (1, 2):
        raise SkelpipeError(f"SYSU 3D HOI setting {setting}: use 1 (half of each activity's "
                            f"instances train) or 2 (half of the subjects train)")
    if not 0 <= seed_index < NUM_SPLITS:
        raise SkelpipeError(f"SYSU 3D HOI split {seed_index}: use 0..{NUM_SPLITS - 1}")
    rng = np.random.default_rng([SPLIT_SEED, setting, seed_index])
    half = NUM_SUBJECTS // 2
    if setting == 2:
        train_subjects = rng.permutation(NUM_SUBJECTS)[:half] + 1
        return frozenset((int(s), a) for s in train_subjects for a in range(len(ACTIONS)))
    return frozenset((int(s), a) for a in range(len(ACTIONS))
                     for s in rng.permutation(NUM_SUBJECTS)[:half] + 1)


@register
class SYSU(Dataset):
    """SYSU 3D HOI: Kinect v1 skeletons (kinect20, x/y/z) and RGB frame folders; benchmarks
    ``setting1`` / ``setting2``, each over 30 seeded random splits (``split``)."""

    name = "sysu"
    root_env = "SKELPIPE_SYSU_ROOT"
    expected = "one folder per video with its skeleton .mat file and RGB video (see README)"
    benchmarks = ("setting1", "setting2")
    report_columns = (("setting1", "top1", "Setting1"), ("setting2", "top1", "Setting2"))

    def skeletons(self, root, options, work) -> Skeletons:
        found = scan(root)
        for path, reason in found.bad:
            work.report_bad(str(path), reason)

        def read(item):
            inst = read_instance(item[1])
            return (inst["id"], inst["xyz"], {},
                    {"label": inst["label"], "label_name": ACTIONS[inst["label"]],
                     "subject": inst["subject"], "fps": 30.0, "num_frames": inst["xyz"].shape[1],
                     "channels": "x,y,z"})

        attrs = {"dataset": "sysu", "source": "kinect_v1", "channels": "x,y,z",
                 "class_names": list(ACTIONS), "fps": 30.0}
        return Skeletons([(p.stem, p) for p in found.paths], "kinect20", attrs, read)

    def skeleton_files(self, root, options):
        return [i.video_dir / WORLD_FILE for i in scan(root).instances]

    def videos(self, root, options, work=None):
        return [Video(i.sample_id, i.video_dir / FRAMES_DIR,
                      {"label": i.label, "label_name": ACTIONS[i.label], "subject": i.subject})
                for i in scan(root).instances]

    def split_of(self, sample_id, attrs, benchmark, split):
        return split_of(sample_id, int(benchmark[-1]), int(split))
