"""Every size a setting or a file gives is bounded, and checked when the plan is made."""

import dataclasses
import math
import re

import numpy as np
import pytest

from skelpipe.core.errors import ConfigError, SkelpipeError
from skelpipe.core.fields import MAX_CLASSES, bounded, check_ranges
from skelpipe.data import datasets
from skelpipe.data.align import AlignConfig
from skelpipe.data.pack import PackConfig
from skelpipe.learn.config import TrainConfig
from skelpipe.learn.partmatrix import PartMatrixConfig
from skelpipe.pipeline import config
from skelpipe.skeleton.store import label_problem

SHIPPED = ("demo", "demo-table3", "ntu", "penn", "penn-cpu", "penn-cpu-table3", "penn-cpu-rivals", "sysu")


@pytest.mark.parametrize("cls", [TrainConfig, PackConfig, AlignConfig, PartMatrixConfig])
def test_every_numeric_setting_of_a_stage_has_an_upper_bound(cls):
    for f in dataclasses.fields(cls):
        if f.type in (int, float, tuple):
            assert f.metadata.get("high") is not None, f"{cls.__name__}.{f.name} has no upper bound"


def test_every_numeric_setting_of_a_pipeline_section_has_an_upper_bound():
    schemas = {"sources": config.SOURCE, "extract": config.EXTRACT, "experiments": config.EXPERIMENT}
    for dataset in datasets.DATASETS.values():
        schemas[f"data ({dataset.name})"] = {k: (type(v), *dataset.limits.get(k, ()))
                                             for k, v in dataset.options.items()}
    for section, schema in schemas.items():
        for key, (kind, *rest) in schema.items():
            kind = kind[0] if isinstance(kind, list) else kind
            choices, low, high = (*rest, None, None, None)[:3]
            if kind in (int, float) and choices is None:
                assert high is not None, f"{section}.{key} has no upper bound"


@pytest.mark.parametrize("name", SHIPPED)
def test_the_shipped_pipelines_lie_within_the_bounds(name):
    cfg = config.load_pipeline(name)
    assert cfg["name"]


@dataclasses.dataclass
class Example:
    size: int = bounded(4, 1, 10)
    rate: float = bounded(0.5, high=1.0, above=0.0)
    widths: tuple = bounded((8,), 1, 64, length=(1, 3))


@pytest.mark.parametrize("values,message", [
    ({"size": 0}, "size must be >= 1, got 0"),
    ({"size": 11}, "size must be <= 10, got 11"),
    ({"rate": 0.0}, "rate must be > 0.0, got 0.0"),
    ({"rate": math.nan}, "rate must be > 0.0, got nan"),
    ({"rate": math.inf}, "rate must be <= 1.0, got inf"),
    ({"widths": ()}, "widths must list 1 to 3 values, got []"),
    ({"widths": (8, 8, 8, 8)}, "widths must list 1 to 3 values"),
    ({"widths": (8, 65)}, "widths must be <= 64, got (8, 65)"),
])
def test_check_ranges_names_the_setting_and_refuses_nan(values, message):
    check_ranges("example", Example())
    with pytest.raises(SkelpipeError, match="^example: " + re.escape(message)):
        check_ranges("example", Example(**values))


@pytest.mark.parametrize("override,message", [
    ("data.subjects=100000000", "data.subjects: 100000000 is outside [3, 1000]"),
    ("data.seed=-1", "data.seed: -1 is outside [0, 4294967295]"),
    ("pack.frames=100000000", "[pack] frames must be <= 1000, got 100000000"),
    ("pack.max_people=1000", "[pack] max_people must be <= 16, got 1000"),
    ("teacher.channels=[]", "[teacher] channels must list 1 to 32 values, got []"),
    ("teacher.channels=[0]", "[teacher] channels must be >= 1, got (0,)"),
    ("student.channels=[64, 100000]", "[student] channels must be <= 4096"),
    ("teacher.temporal_kernel=0", "[teacher] temporal_kernel must be >= 1, got 0"),
    ("teacher.temporal_kernel=8", "[teacher] temporal_kernel must be odd, got 8"),
    ("teacher.lr=5000", "[teacher] lr must be <= 1000.0, got 5000"),
    ("student.kl_temperature=0", "[student] kl_temperature must be > 0.0, got 0"),
    ("teacher.milestones=[-5]", "[teacher] milestones must be >= 1, got (-5,)"),
    ("teacher.seed=-1", "[teacher] seed must be >= 0, got -1"),
    ("teacher=5", "[teacher] must be a table of settings, got 5"),
    ("extract.max_people=100000", "extract.max_people: 100000 is outside [1, 16]"),
    ("extract.decoder={cif_neighbors=0}", "[extract] decoder: cif_neighbors = 0: expected an integer in [1, 64]"),
    ("align.outlier=-1", "[align] outlier must be >= 0.0, got -1"),
    ("experiments.seeds=[-1]", "experiments.seeds: -1 is outside [0, 4294967295]"),
    (f"experiments.seeds={list(range(201))}", "experiments.seeds: 201 values, at most 100"),
])
def test_a_setting_out_of_bounds_fails_when_the_plan_is_made(override, message):
    with pytest.raises(ConfigError) as e:
        config.load_pipeline("demo", [override])
    assert message in str(e.value)


def test_labels_read_from_files_are_class_indices_below_the_bound():
    assert label_problem(0) is None and label_problem(np.int64(MAX_CLASSES - 1)) is None
    assert label_problem(MAX_CLASSES) == f"label {MAX_CLASSES} is outside [0, {MAX_CLASSES})"
    assert label_problem(-3) == f"label -3 is outside [0, {MAX_CLASSES})"
    assert label_problem(1e9) == "label 1000000000.0 is not an integer"
    assert label_problem(True) == "label True is not an integer"


def test_a_pyskl_label_of_10_to_the_12_fails_before_anything_is_sized_by_it(tmp_path):
    import pickle
    import resource

    from skelpipe.data import pyskl

    item = {"frame_dir": "a", "label": 10**12, "total_frames": 4, "img_shape": (48, 64),
            "keypoint": np.zeros((1, 4, 17, 2), np.float32), "keypoint_score": np.ones((1, 4, 17), np.float32)}
    path = tmp_path / "huge.pkl"
    path.write_bytes(pickle.dumps({"split": {}, "annotations": [item]}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(SkelpipeError, match=r"annotation 0 \(a\): label 1000000000000 is outside \[0, 10000\)"):
        pyskl.import_store(path, tmp_path / "h.h5")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: no list of 10^12 names
    assert not (tmp_path / "h.h5").exists()
