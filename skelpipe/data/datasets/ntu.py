"""NTU RGB+D 60 / 120: Kinect v2 ``.skeleton`` files, sample names, benchmarks, action names.

A ``.skeleton`` file is ASCII text with CRLF line ends (Shahroudy et al., CVPR 2016; the
dataset's ``read_skeleton_file.m``)::

    103                                    number of frames
    1                                      frame 1: number of bodies (0 when nobody is seen)
    72057594037931101 0 1 1 1 1 0 0.02 0.05 2
                                           body fields: bodyID clipedEdges handLeftConfidence
                                           handLeftState handRightConfidence handRightState
                                           isRestricted leanX leanY trackingState
    25                                     number of joints
    0.218 0.172 3.785 277.4 191.8 1036.2 519.2 -0.21 0.05 0.97 -0.11 2
                                           x y z depthX depthY colorX colorY orientationW
                                           orientationX orientationY orientationZ trackingState
    ... 24 more joint lines, more bodies, more frames

Sample names are ``SsssCcccPpppRrrrAaaa`` (setup, camera, performer, replication, action).
"""

import itertools
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np

from skelpipe.core.errors import SkelpipeError
from skelpipe.data.datasets.base import Dataset, Skeletons, find_dir, register

NUM_JOINTS = 25
BODY_FIELDS = ("clipedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
               "handRightState", "isRestricted", "leanX", "leanY", "trackingState")
_FLOAT_BODY_FIELDS = ("leanX", "leanY")

# The published protocols (NTU RGB+D, CVPR 2016; NTU RGB+D 120, TPAMI 2019).
XSUB_TRAIN_SUBJECTS = frozenset(
    (1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38))
XVIEW_TRAIN_CAMERAS = frozenset((2, 3))
XSUB120_TRAIN_SUBJECTS = XSUB_TRAIN_SUBJECTS | frozenset(
    (45, 46, 47, 49, 50, 52, 53, 54, 55, 56, 57, 58, 59, 70, 74, 78, 80, 81, 82, 83, 84, 85, 86,
     89, 91, 92, 93, 94, 95, 97, 98, 100, 103))
BENCHMARKS = ("xsub", "xview", "xsub120", "xset120")

# The official action list (github.com/shahroudy/NTURGB-D), with ASCII apostrophes.
ACTIONS_120 = (
    "drink water", "eat meal/snack", "brushing teeth", "brushing hair", "drop", "pickup",
    "throw", "sitting down", "standing up (from sitting position)", "clapping", "reading",
    "writing", "tear up paper", "wear jacket", "take off jacket", "wear a shoe",
    "take off a shoe", "wear on glasses", "take off glasses", "put on a hat/cap",
    "take off a hat/cap", "cheer up", "hand waving", "kicking something",
    "put something inside pocket / take out something from pocket",
    "hopping (one foot jumping)", "jump up", "make a phone call/answer phone",
    "playing with phone/tablet", "typing on a keyboard", "pointing to something with finger",
    "taking a selfie", "check time (from watch)", "rub two hands together", "nod head/bow",
    "shake head", "wipe face", "salute", "put the palms together",
    "cross hands in front (say stop)", "sneeze/cough", "staggering", "falling",
    "touch head (headache)", "touch chest (stomachache/heart pain)", "touch back (backache)",
    "touch neck (neckache)", "nausea or vomiting condition",
    "use a fan (with hand or paper)/feeling warm", "punching/slapping other person",
    "kicking other person", "pushing other person", "pat on back of other person",
    "point finger at the other person", "hugging other person",
    "giving something to other person", "touch other person's pocket", "handshaking",
    "walking towards each other", "walking apart from each other",
    # NTU RGB+D 120 only
    "put on headphone", "take off headphone", "shoot at the basket", "bounce ball",
    "tennis bat swing", "juggling table tennis balls", "hush (quite)", "flick hair",
    "thumb up", "thumb down", "make ok sign", "make victory sign", "staple book",
    "counting money", "cutting nails", "cutting paper (using scissors)", "snapping fingers",
    "open bottle", "sniff (smell)", "squat down", "toss a coin", "fold paper", "ball up paper",
    "play magic cube", "apply cream on face", "apply cream on hand back", "put on bag",
    "take off bag", "put something into a bag", "take something out of a bag", "open a box",
    "move heavy objects", "shake fist", "throw up cap/hat", "hands up (both hands)",
    "cross arms", "arm circles", "arm swings", "running on the spot",
    "butt kicks (kick backward)", "cross toe touch", "side kick", "yawn", "stretch oneself",
    "blow nose", "hit other person with something", "wield knife towards other person",
    "knock over other person (hit with body)", "grab other person's stuff",
    "shoot at other person with a gun", "step on foot", "high-five", "cheers and drink",
    "carry something with other person", "take a photo of other person",
    "follow other person", "whisper in other person's ear",
    "exchange things with other person",
    "support somebody with one's hand (someone is sick, help him to walk)",
    "finger-guessing game (playing rock-paper-scissors)",
)
ACTIONS_60 = ACTIONS_120[:60]

_NAME = re.compile(r"S(\d{3})C(\d{3})P(\d{3})R(\d{3})A(\d{3})")
_MISSING_LISTS = {60: "ntu_missing_skeletons.txt", 120: "ntu120_missing_skeletons.txt"}


class SampleName(NamedTuple):
    setup: int
    camera: int
    performer: int
    replication: int
    action: int


class Sample(NamedTuple):
    name: str
    path: Path
    label: int  # 0-based action index
    split: str  # "train" / "test"


# ----------------------------------------------------------------------------- reading


def read_skeleton_file(path) -> dict:
    """Read one ``.skeleton`` file.

    Returns ``{"num_frames": int, "bodies": {body_id: body}}``, bodies in order of first
    appearance; each body holds ``frames`` (0-based frame indices where it appears),
    ``xyz`` (n, 25, 3), ``depth_xy`` (n, 25, 2), ``color_xy`` (n, 25, 2), ``orientation``
    (n, 25, 4: w x y z), ``tracking`` (n, 25) int and ``info`` (the per-frame body fields of
    ``BODY_FIELDS``, each an array of n). Body ids are kept as strings (they overflow int64
    parsers in some tools). Raises ``SkelpipeError`` naming the file and line on bad input.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("ascii")
    except OSError as e:
        raise SkelpipeError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SkelpipeError(f"{path}: not an NTU .skeleton text file (binary data)") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()

    def fail(line_index, problem):
        raise SkelpipeError(f"{path}: line {line_index + 1}: {problem}")

    def count(i, what):
        if i >= len(lines):
            raise SkelpipeError(f"{path}: truncated: ends before the {what} (line {i + 1})")
        try:
            value = int(lines[i])
        except ValueError:
            fail(i, f"expected the {what} (an integer), got {lines[i].strip()[:40]!r}")
        if value < 0:
            fail(i, f"negative {what} {value}")
        return value

    num_frames = count(0, "number of frames")
    pos = 1
    body_ids, frame_of, info_rows, joint_starts = [], [], [], []
    for frame in range(num_frames):
        num_bodies = count(pos, f"number of bodies of frame {frame + 1} of {num_frames}")
        pos += 1
        for _ in range(num_bodies):
            if pos >= len(lines):
                raise SkelpipeError(f"{path}: truncated: ends inside frame {frame + 1} of "
                                    f"{num_frames} (line {pos + 1})")
            fields = lines[pos].split()
            if len(fields) != 10:
                fail(pos, f"expected 10 body fields (bodyID ... trackingState), got {len(fields)}")
            if not fields[0].isdigit():
                fail(pos, f"bad body id {fields[0][:40]!r}")
            try:
                info_rows.append([float(v) if k in _FLOAT_BODY_FIELDS else int(v)
                                  for k, v in zip(BODY_FIELDS, fields[1:])])
            except ValueError:
                fail(pos, f"bad body field in {lines[pos].strip()[:80]!r}")
            joints = count(pos + 1, "number of joints")
            if joints != NUM_JOINTS:
                fail(pos + 1, f"wrong joint count {joints}, expected {NUM_JOINTS}")
            pos += 2
            if pos + NUM_JOINTS > len(lines):
                raise SkelpipeError(f"{path}: truncated: ends inside the joints of frame "
                                    f"{frame + 1} of {num_frames}")
            body_ids.append(fields[0])
            frame_of.append(frame)
            joint_starts.append(pos)
            pos += NUM_JOINTS
    if pos < len(lines):
        fail(pos, f"unexpected data after the last of {num_frames} frames")

    joints = _parse_joints(path, lines, joint_starts)
    info = np.array(info_rows, dtype=np.float64).reshape(len(info_rows), len(BODY_FIELDS))
    frame_of = np.asarray(frame_of, dtype=np.int64)
    body_ids = np.asarray(body_ids)
    bodies = {}
    for body_id in dict.fromkeys(body_ids.tolist()):
        rows = np.flatnonzero(body_ids == body_id)
        j = joints[rows]
        bodies[body_id] = {
            "frames": frame_of[rows],
            "xyz": j[:, :, 0:3],
            "depth_xy": j[:, :, 3:5],
            "color_xy": j[:, :, 5:7],
            "orientation": j[:, :, 7:11],
            "tracking": j[:, :, 11].astype(np.int64),
            "info": {k: info[rows, c] if k in _FLOAT_BODY_FIELDS else info[rows, c].astype(np.int64)
                     for c, k in enumerate(BODY_FIELDS)},
        }
    return {"num_frames": num_frames, "bodies": bodies}


def _parse_joints(path, lines, starts) -> np.ndarray:
    """The joint lines of every body occurrence, parsed in one numpy call: (n, 25, 12)."""
    if not starts:
        return np.zeros((0, NUM_JOINTS, 12))
    joint_lines = list(itertools.chain.from_iterable(lines[s:s + NUM_JOINTS] for s in starts))
    try:
        values = np.loadtxt(joint_lines, dtype=np.float64, comments=None, ndmin=2)
        if values.shape[1] != 12 or not np.isfinite(values).all():
            raise ValueError
    except ValueError:
        _locate_bad_joint_line(path, lines, starts)
        raise  # not reached: the line above raises
    return values.reshape(len(starts), NUM_JOINTS, 12)


def _locate_bad_joint_line(path, lines, starts):
    for s in starts:
        for i in range(s, s + NUM_JOINTS):
            fields = lines[i].split()
            if len(fields) != 12:
                raise SkelpipeError(f"{path}: line {i + 1}: expected 12 numbers for a joint "
                                    f"(x y z depthX depthY colorX colorY orientationWXYZ "
                                    f"trackingState), got {len(fields)}")
            for v in fields:
                try:
                    ok = np.isfinite(float(v))
                except ValueError:
                    ok = False
                if not ok:
                    raise SkelpipeError(f"{path}: line {i + 1}: bad number {v[:40]!r}")
    raise SkelpipeError(f"{path}: malformed joint data")


# ----------------------------------------------------------------------------- to arrays


def motion_energy(xyz: np.ndarray) -> float:
    """A body's amount of motion: the variances of x, y and z over all its joints and frames,
    added up (the dataset authors' heuristic for the main actor; CTR-GCN's ``motion``)."""
    if len(xyz) == 0:
        return 0.0
    return float(np.var(np.asarray(xyz, dtype=np.float64).reshape(-1, 3), axis=0).sum())


def rank_bodies(skel: dict) -> list[str]:
    """Body ids, most motion first; ties keep the order of first appearance."""
    energy = {bid: motion_energy(body["xyz"]) for bid, body in skel["bodies"].items()}
    return sorted(skel["bodies"], key=lambda bid: -energy[bid])


def to_array(skel: dict, max_bodies: int = 2, num_frames: int | None = None):
    """3D joints as ``(max_bodies, T, 25, 3)`` float32 and the kept body ids.

    The ``max_bodies`` bodies with the most motion are kept (``rank_bodies``), most motion
    first; each body's joints go to its own frame indices, zeros elsewhere. ``T`` is
    ``num_frames`` (frames beyond it dropped, zero padding after the sequence) or the file's
    frame count.
    """
    return _stack(skel, "xyz", max_bodies, num_frames)


def to_color_array(skel: dict, max_bodies: int = 2, num_frames: int | None = None):
    """The joints' RGB-image positions (``colorX``, ``colorY`` in pixels of the 1920x1080
    video) as ``(max_bodies, T, 25, 2)`` float32, bodies in the same order as ``to_array``;
    also returns the kept body ids."""
    return _stack(skel, "color_xy", max_bodies, num_frames)


def _stack(skel, field, max_bodies, num_frames):
    T = skel["num_frames"] if num_frames is None else int(num_frames)
    ids = rank_bodies(skel)[:max_bodies]
    channels = 3 if field == "xyz" else 2
    out = np.zeros((max_bodies, T, NUM_JOINTS, channels), dtype=np.float32)
    for m, body_id in enumerate(ids):
        body = skel["bodies"][body_id]
        keep = body["frames"] < T
        out[m, body["frames"][keep]] = body[field][keep]
    return out, ids


# ----------------------------------------------------------------------------- names, splits


def parse_name(name) -> SampleName:
    """``S001C002P003R002A013`` (also a path or ``..._rgb.avi``) → ``SampleName`` of ints."""
    base = Path(str(name)).name
    m = _NAME.match(base)
    if not m:
        raise SkelpipeError(f"{name}: not an NTU sample name (expected SsssCcccPpppRrrrAaaa)")
    return SampleName(*(int(g) for g in m.groups()))


def sample_id(name) -> str:
    """The 20-character sample name at the start of a file name or path."""
    parse_name(name)
    return Path(str(name)).name[:20]


def num_classes(benchmark: str) -> int:
    _check_benchmark(benchmark)
    return 120 if benchmark.endswith("120") else 60


def action_names(benchmark: str) -> tuple[str, ...]:
    return ACTIONS_120 if num_classes(benchmark) == 120 else ACTIONS_60


def split_of(name, benchmark: str) -> str:
    """``"train"`` or ``"test"`` for a sample under a benchmark.

    ``xsub``: NTU-60 cross-subject (20 training subjects); ``xview``: NTU-60 cross-view
    (cameras 2 and 3 train, camera 1 tests); ``xsub120``: NTU-120 cross-subject (53 training
    subjects); ``xset120``: NTU-120 cross-setup (even setup ids train). NTU-60 benchmarks
    reject samples outside NTU-60 (setup > 17 or action > 60).
    """
    s = parse_name(name)
    n = num_classes(benchmark)
    if not 1 <= s.action <= n or (n == 60 and not 1 <= s.setup <= 17):
        raise SkelpipeError(f"{name}: not in NTU RGB+D {n} (setup {s.setup}, action {s.action}), "
                            f"so outside benchmark {benchmark}")
    if benchmark == "xsub":
        return "train" if s.performer in XSUB_TRAIN_SUBJECTS else "test"
    if benchmark == "xview":
        if s.camera not in (1, 2, 3):
            raise SkelpipeError(f"{name}: camera {s.camera} is not one of NTU's cameras 1-3")
        return "train" if s.camera in XVIEW_TRAIN_CAMERAS else "test"
    if benchmark == "xsub120":
        return "train" if s.performer in XSUB120_TRAIN_SUBJECTS else "test"
    return "train" if s.setup % 2 == 0 else "test"  # xset120


def _check_benchmark(benchmark):
    if benchmark not in BENCHMARKS:
        raise SkelpipeError(f"unknown NTU benchmark {benchmark!r}; known: {', '.join(BENCHMARKS)}")


def missing_samples(path=None, version: int = 60) -> frozenset[str]:
    """Sample names with missing or incomplete skeletons, from the dataset's official list
    (3 header lines, then one name a line). Without ``path``, the copy shipped with skelpipe
    of the NTU RGB+D (``version=60``, 302 names) or NTU RGB+D 120 (``version=120``, 535
    names) list."""
    if path is None:
        if version not in _MISSING_LISTS:
            raise SkelpipeError(f"no missing-skeleton list for NTU {version}; use 60 or 120")
        path = Path(__file__).with_name(_MISSING_LISTS[version])
    path = Path(path)
    try:
        lines = path.read_text(encoding="ascii").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise SkelpipeError(f"{path}: cannot read the missing-skeleton list: {e}") from None
    names = set()
    for i, line in enumerate(lines[3:], start=4):
        line = line.strip()
        if not line:
            continue
        if not _NAME.fullmatch(line):
            raise SkelpipeError(f"{path}: line {i}: not an NTU sample name: {line[:40]!r}")
        names.add(line)
    return frozenset(names)


class Scan(NamedTuple):
    samples: list[Sample]          # in name order
    bad: list[tuple[str, str]]     # (path, reason): files that are not usable NTU samples
    excluded: list[tuple[str, str]]  # (name, reason): listed as missing, or outside the benchmark


def scan(root, benchmark: str, missing=None, check: bool = False) -> Scan:
    """The ``*.skeleton`` files under ``root`` for a benchmark, with labels and splits.

    Samples on the official missing-skeleton list (``missing``, default: the shipped list of
    NTU-60 or NTU-120 to match the benchmark) and samples outside the benchmark are excluded;
    misnamed files (and with ``check=True``, files ``read_skeleton_file`` rejects) are
    reported in ``bad``. Never raises for a bad file.
    """
    _check_benchmark(benchmark)
    root = Path(root)
    if not root.is_dir():
        raise SkelpipeError(f"{root}: no such directory (expected NTU .skeleton files)")
    if missing is None:
        missing = missing_samples(version=num_classes(benchmark))
    samples, bad, excluded, seen = [], [], [], {}
    for path in sorted(root.rglob("*.skeleton")):
        name = path.stem
        if not _NAME.fullmatch(name):
            bad.append((str(path), "not an NTU sample name (SsssCcccPpppRrrrAaaa.skeleton)"))
            continue
        if name in seen:
            bad.append((str(path), f"duplicate of {seen[name]}"))
            continue
        seen[name] = path
        if name in missing:
            excluded.append((name, "on the official missing-skeleton list"))
            continue
        try:
            split = split_of(name, benchmark)
        except SkelpipeError as e:
            excluded.append((name, str(e).split(": ", 1)[1]))
            continue
        if check:
            try:
                read_skeleton_file(path)
            except SkelpipeError as e:
                bad.append((str(path), str(e)))
                continue
        samples.append(Sample(name, path, parse_name(name).action - 1, split))
    return Scan(samples, bad, excluded)


@register
class NTU(Dataset):
    """NTU RGB+D 60 / 120 (``data.version``): Kinect v2 skeletons (ntu25, x/y/z, the colour-image
    coordinates kept as the array ``color_xy`` for alignment) and ``*_rgb.avi`` videos."""

    name = "ntu"
    root_env = "SKELPIPE_NTU_ROOT"
    expected = "nturgb+d_skeletons/*.skeleton (Kinect skeletons) and, for extraction, nturgb+d_rgb/*_rgb.avi"
    benchmarks = BENCHMARKS
    report_columns = (("xsub", "top1", "CS"), ("xview", "top1", "CV"))

    def skeletons(self, root, options, work) -> Skeletons:
        version = int(options.get("version", 60))
        benchmark = "xsub" if version == 60 else "xsub120"
        found = scan(find_dir(root, ("nturgb+d_skeletons", "skeletons", "."), "*.skeleton"), benchmark)
        for path, reason in found.bad:
            work.report_bad(path, reason)
        names = action_names(benchmark)

        def read(sample):
            skel = read_skeleton_file(sample.path)
            xyz, bodies = to_array(skel)
            color, _ = to_color_array(skel)
            return (sample.name, xyz, {"color_xy": color},
                    {"label": sample.label, "label_name": names[sample.label], "fps": 30.0,
                     "num_frames": skel["num_frames"], "image_size": [1920, 1080],
                     "channels": "x,y,z", "bodies": list(bodies)})

        attrs = {"dataset": f"ntu{version}", "source": "kinect_v2", "channels": "x,y,z",
                 "class_names": list(names), "fps": 30.0, "image_size": [1920, 1080]}
        return Skeletons(list(found.samples), "ntu25", attrs, read)

    def videos(self, root, options):
        rgb = find_dir(root, ("nturgb+d_rgb", "rgb", "."), "*_rgb.avi")
        return [(p.name.removesuffix("_rgb.avi"), p) for p in sorted(rgb.rglob("*_rgb.avi"))]

    def split_of(self, sample_id, attrs, benchmark, split):
        """The protocol's split from the sample name; an id that is not an NTU name (the demo's)
        falls back to its ``split`` attribute; an NTU-120 sample is outside an NTU-60 benchmark."""
        if not _NAME.fullmatch(sample_id):
            return super().split_of(sample_id, attrs, benchmark, split)
        name = parse_name(sample_id)
        if num_classes(benchmark) == 60 and (name.action > 60 or name.setup > 17):
            return None
        return split_of(sample_id, benchmark)
