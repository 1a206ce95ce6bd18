"""NTU RGB+D 60 / 120: Kinect v2 ``.skeleton`` files, sample names, benchmarks, action names.

The ``.skeleton`` file format is read by ``ntu_skeleton``.

Sample names are ``SsssCcccPpppRrrrAaaa`` (setup, camera, performer, replication, action).
"""

import re
from pathlib import Path
from typing import NamedTuple

from skelpipe.core.errors import SkelpipeError
from skelpipe.data.datasets.base import Dataset, Skeletons, find_dir, refuse_duplicates, register
from skelpipe.data.datasets.ntu_skeleton import read_skeleton_file, to_array, to_color_array
from skelpipe.pose.video import Video

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
    misnamed files (and with ``check=True``, files ``ntu_skeleton.read_skeleton_file`` rejects) are
    reported in ``bad``. Never raises for a bad file; refuses one sample in two files.
    """
    _check_benchmark(benchmark)
    root = Path(root)
    if not root.is_dir():
        raise SkelpipeError(f"{root}: no such directory (expected NTU .skeleton files)")
    if missing is None:
        missing = missing_samples(version=num_classes(benchmark))
    samples, bad, excluded = [], [], []
    paths = sorted(root.rglob("*.skeleton"))
    refuse_duplicates(((p.stem, p) for p in paths), "NTU sample")
    for path in paths:
        name = path.stem
        if not _NAME.fullmatch(name):
            bad.append((str(path), "not an NTU sample name (SsssCcccPpppRrrrAaaa.skeleton)"))
            continue
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
    options = {"version": 60}
    limits = {"version": ((60, 120),)}

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

    def skeleton_files(self, root, options):
        return sorted(find_dir(root, ("nturgb+d_skeletons", "skeletons", "."), "*.skeleton").rglob("*.skeleton"))

    def videos(self, root, options, work=None):
        rgb = find_dir(root, ("nturgb+d_rgb", "rgb", "."), "*_rgb.avi")
        names = action_names("xsub" if int(options.get("version", 60)) == 60 else "xsub120")
        out, paths = [], sorted(rgb.rglob("*_rgb.avi"))
        refuse_duplicates(((p.name, p) for p in paths), "NTU video")
        for p in paths:
            sid = p.name.removesuffix("_rgb.avi")
            attrs = {}
            if _NAME.fullmatch(sid) and parse_name(sid).action <= len(names):
                label = parse_name(sid).action - 1
                attrs = {"label": label, "label_name": names[label]}
            out.append(Video(sid, p, attrs))
        return out

    def split_of(self, sample_id, attrs, benchmark, split):
        """The protocol's split from the sample name; an id that is not an NTU name (the demo's)
        falls back to its ``split`` attribute; an NTU-120 sample is outside an NTU-60 benchmark."""
        if not _NAME.fullmatch(sample_id):
            return super().split_of(sample_id, attrs, benchmark, split)
        name = parse_name(sample_id)
        if num_classes(benchmark) == 60 and (name.action > 60 or name.setup > 17):
            return None
        return split_of(sample_id, benchmark)
