"""A user's own dataset: a folder of videos and ``labels.csv``.

``labels.csv`` has the header ``video,label`` or ``video,label,split``; one row a video::

    video,label,split
    clips/wave_01.mp4,wave,train
    clips/wave_02.mp4,wave,test
    /data/other/jump_07.mp4,jump,

``video`` is relative to the folder (or absolute); ``label`` any class name (classes are
numbered in sorted name order); ``split`` ``train`` or ``test``. Rows without a split (no split
column, or an empty cell) are split automatically: per class, a seeded 20 % of its unsplit
videos (at least one when the class has two or more) go to ``test``, the rest to ``train`` -
stratified and the same on every run. A bad row (missing video, empty label, unknown split,
wrong number of fields, a repeat of an earlier row) is reported with its line number and
skipped: in the extract stage's manifest (``bad_items``) and on the console. A video listed
twice with another label or split, or two videos that map to one sample id, are refused.
"""

import csv
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from skelpipe.core.errors import SkelpipeError
from skelpipe.data.datasets.base import Dataset, register
from skelpipe.pose.video import Video

LABELS_FILE = "labels.csv"
SPLITS = ("train", "test")


@dataclass(frozen=True)
class Item:
    id: str          # the video path as written, "/" → "__" (an HDF5-safe sample id)
    video: Path      # resolved path of the video file
    label: int       # index into class_names
    label_name: str
    split: str       # "train" / "test"
    line: int        # line number in labels.csv


@dataclass
class Labels:
    items: list[Item]
    class_names: list[str]
    bad: list[tuple[str, str]] = field(default_factory=list)   # ("labels.csv:LINE", reason)

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


def read_labels(folder, test_fraction: float = 0.2, seed: int = 0) -> Labels:
    """Read ``folder/labels.csv`` (see the module doc). Raises ``SkelpipeError`` when the file
    is missing, its header is wrong or no row is usable; bad rows land in ``Labels.bad``."""
    folder = Path(folder)
    path = folder / LABELS_FILE if folder.is_dir() or not folder.suffix else folder
    folder = path.parent
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise SkelpipeError(f"{path}: no such file (expected a labels.csv with the header "
                            f"video,label[,split])") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SkelpipeError(f"{path}: cannot read: {e}") from None
    rows = csv.reader(text.splitlines())
    header = [h.strip().lower() for h in next(rows, [])]
    if header not in (["video", "label"], ["video", "label", "split"]):
        raise SkelpipeError(f"{path}: line 1: header must be video,label or video,label,split; "
                            f"got {','.join(header) or 'nothing'}")

    good, bad, seen = [], [], {}
    for line, row in enumerate(rows, start=2):
        where = f"{path}:{line}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            bad.append((where, f"{len(row)} fields, expected {len(header)} ({','.join(header)})"))
            continue
        video, label = row[0].strip(), row[1].strip()
        split = row[2].strip().lower() if len(row) == 3 else ""
        if not video or not label:
            bad.append((where, "empty video or label"))
            continue
        if split and split not in SPLITS:
            bad.append((where, f"split {row[2].strip()!r} is not train or test"))
            continue
        resolved = Path(video) if Path(video).is_absolute() else folder / video
        if not resolved.is_file():
            bad.append((where, f"no such video {resolved}"))
            continue
        sid = sample_id(video)
        if sid in seen:
            bad.append(_repeat(where, (sid, resolved, label, split, line), seen[sid]))
            continue
        seen[sid] = (sid, resolved, label, split, line)
        good.append(seen[sid])
    if not good:
        raise SkelpipeError(f"{path}: no usable row ({len(bad)} bad"
                            + (f"; first: line {bad[0][0].rsplit(':', 1)[1]}: {bad[0][1]}"
                               if bad else "") + ")")

    class_names = sorted({g[2] for g in good})
    auto = _auto_splits([(g[0], g[2]) for g in good if not g[3]], test_fraction, seed)
    items = [Item(sid, resolved, class_names.index(label), label, split or auto[sid], line)
             for sid, resolved, label, split, line in good]
    return Labels(items, class_names, bad)


def _repeat(where: str, row: tuple, first: tuple) -> tuple[str, str]:
    """The report of a row whose sample id an earlier row has: a plain repeat is skipped; a
    repeat that says something else, or another video with the same id, is refused."""
    (sid, resolved, label, split, _), (_, first_video, first_label, first_split, first_line) = row, first
    if resolved != first_video:
        raise SkelpipeError(f"{where}: {resolved} and {first_video} (line {first_line}) both become the "
                            f"sample id {sid!r}; rename one")
    if (label, split) != (first_label, first_split):
        raise SkelpipeError(f"{where}: {resolved} listed again as {label!r} {split or '(auto)'} "
                            f"(line {first_line}: {first_label!r} {first_split or '(auto)'}); "
                            "give each video one row")
    return where, f"{resolved} listed again (first on line {first_line})"


def sample_id(video: str) -> str:
    """A video path as written in labels.csv → a sample id without "/" (HDF5 would read it as
    nested groups): ``clips/a.mp4`` and ``./clips//a.mp4`` → ``clips__a.mp4``."""
    parts = [p for p in video.replace("\\", "/").split("/") if p not in ("", ".")]
    return "__".join(parts)


def _auto_splits(rows, test_fraction, seed) -> dict[str, str]:
    """Seeded stratified split of (video, label) rows: per class, round(fraction x n) test
    videos (at least 1 and at most n - 1 when n >= 2 and fraction > 0), chosen by a
    generator seeded with the seed and the class name, so that adding a class does not
    reshuffle the others."""
    by_class = {}
    for video, label in rows:
        by_class.setdefault(label, []).append(video)
    out = {}
    for label, videos in by_class.items():
        videos = sorted(videos)
        n_test = round(test_fraction * len(videos))
        if len(videos) >= 2 and test_fraction > 0:
            n_test = min(max(n_test, 1), len(videos) - 1)
        rng = np.random.default_rng([seed, zlib.crc32(label.encode("utf-8"))])
        test = set(rng.permutation(len(videos))[:n_test].tolist())
        out.update({v: "test" if i in test else "train" for i, v in enumerate(videos)})
    return out


@register
class Custom(Dataset):
    """A folder of the user's videos with ``labels.csv`` (see the module doc): videos only, so
    its skeletons come from a pose estimator."""

    name = "custom"
    root_env = "SKELPIPE_CUSTOM_ROOT"
    expected = "labels.csv (video,label[,split]) and the videos it names"

    def videos(self, root, options, work=None):
        labels = read_labels(root)
        for where, reason in labels.bad if work is not None else ():
            work.report_bad(where, reason)
        return [Video(row.id, row.video, {"label": row.label, "label_name": row.label_name, "split": row.split})
                for row in labels]
