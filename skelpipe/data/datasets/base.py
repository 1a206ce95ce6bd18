"""What every dataset module provides: one ``Dataset`` subclass, registered under its name.

A dataset says where its data live (``root_env``, ``expected``), how to read its own skeletons
(``skeletons``: the items, the store's layout and attributes, and a ``read`` of one item), where
its RGB videos are (``videos``), which pack benchmarks it defines and how a sample falls into
their splits (``benchmarks``, ``split_of``), and how its tables look (``report_columns``).
Everything else in skelpipe (sources, pack, the pipeline's data check, the report) asks the
registry, so adding a dataset is one new module here (see the README).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from skelpipe.core.errors import SkelpipeError

SPLITS = ("train", "test")


@dataclass
class Skeletons:
    """A dataset's own skeletons, ready to be written into a pose store: the items to read,
    the store's layout and attributes, and ``read(item) → (sample id, keypoints (M, T, V, C),
    arrays, attrs)`` (a bad item raises ``SkelpipeError``; it is reported and skipped)."""

    items: list
    layout: str
    attrs: dict
    read: Callable


class Dataset:
    name: str = ""
    root_env: str | None = None           # environment variable naming the data root
    expected: str = ""                    # what the root holds (said when it is missing)
    benchmarks: tuple[str, ...] = ()      # pack benchmarks of its own, besides "default"
    report_columns: tuple = (("default", "top1", "Top1"), ("default", "top5", "Top5"))
    expected_parts: dict | None = None    # action → the body parts it uses, when known
    options: dict = {}                    # the pipeline's [data] settings it reads, with their defaults
    limits: dict = {}                     # their allowed values: name → (choices, low, high); sizes bounded

    def skeletons(self, root: Path, options: dict, work) -> Skeletons:
        """The dataset's own (HQ) skeletons; bad files found while scanning go to ``work.report_bad``."""
        raise SkelpipeError(f"dataset {self.name!r} has no skeletons of its own")

    def skeleton_files(self, root: Path, options: dict) -> list[Path]:
        """The files ``skeletons`` reads (their names, sizes and times key the stage)."""
        return []

    def generate(self, options: dict, out_dir: Path) -> Path | None:
        """A generated dataset writes its store itself and returns its path; a read one returns None."""
        return None

    def videos(self, root: Path, options: dict, work=None) -> list:
        """Every video for extraction (``skelpipe.pose.video.Video``: sample id, video file or
        frame folder, and its label / split / subject where the dataset knows them, so that
        poses extracted from it can be packed without the dataset's own skeletons). Rows and
        files left out go to ``work.report_bad`` when a ``work`` is given (the extract stage's)."""
        raise SkelpipeError(f"dataset {self.name!r} has no videos")

    def split_of(self, sample_id: str, attrs: dict, benchmark: str, split: int) -> str | None:
        """"train", "test" or None (not in ``benchmark``); by default the sample's ``split``."""
        value = attrs.get("split")
        return value if value in SPLITS else None


DATASETS: dict[str, Dataset] = {}


def register(cls):
    """Class decorator: make a ``Dataset`` subclass known by its ``name``."""
    DATASETS[cls.name] = cls()
    return cls


def get(name: str) -> Dataset:
    if name not in DATASETS:
        raise SkelpipeError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]


def for_benchmark(benchmark: str) -> Dataset | None:
    """The dataset that defines the pack benchmark ``benchmark`` (None for "default")."""
    return next((d for d in DATASETS.values() if benchmark in d.benchmarks), None)


def refuse_duplicates(pairs, what: str = "sample id") -> None:
    """``pairs``: (id, file). Two files with one id are refused in one line naming both: which
    one would count is arbitrary, and a sample read twice can land in both splits."""
    seen = {}
    for sid, path in pairs:
        if sid in seen:
            raise SkelpipeError(f"{seen[sid]} and {path} are the same {what} {sid!r}; remove one")
        seen[sid] = path


def find_dir(root: Path, candidates, pattern: str) -> Path:
    """The first of ``root/candidate`` folders that holds a file matching ``pattern``."""
    for name in candidates:
        d = Path(root) / name
        if d.is_dir() and next(d.rglob(pattern), None) is not None:
            return d
    raise SkelpipeError(f"{root}: no {pattern} files under any of {', '.join(candidates)}")
