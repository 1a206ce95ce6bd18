"""pyskl annotation pickles: import (2D COCO-17 with scores, NTU-25 3D), export, round trip, and
bad files refused with one line naming the item."""

import pickle

import numpy as np
import pytest
from click.testing import CliRunner

from skelpipe.cli import cli
from skelpipe.core.errors import SkelpipeError
from skelpipe.data import pyskl
from skelpipe.skeleton.store import open_store


def pyskl_2d(n=4, seed=0):
    """A file in pyskl's exact structure (as its ntu60_hrnet.pkl): 2D HRNet-like poses."""
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        t = 10 + i
        items.append({"frame_dir": f"S001C001P00{i + 1}R001A00{i % 3 + 1}", "label": i % 3,
                      "img_shape": (1080, 1920), "original_shape": (1080, 1920), "total_frames": t,
                      "keypoint": rng.uniform(0, 1000, (2, t, 17, 2)).astype(np.float16),
                      "keypoint_score": rng.uniform(0, 1, (2, t, 17)).astype(np.float16)})
    split = {"xsub_train": [it["frame_dir"] for it in items[:3]], "xsub_val": [items[3]["frame_dir"]],
             "xview_train": [items[0]["frame_dir"]], "xview_val": [it["frame_dir"] for it in items[1:]]}
    return {"split": split, "annotations": items}


def write(path, data):
    path.write_bytes(pickle.dumps(data))
    return path


def test_import_2d_with_labels_splits_and_scores(tmp_path):
    data = pyskl_2d()
    result = CliRunner().invoke(cli, ["import", "pyskl", str(write(tmp_path / "a.pkl", data)), "--out",
                                      str(tmp_path / "a.h5"), "--split", "xview"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    with open_store(tmp_path / "a.h5") as s:
        assert s.layout.name == "coco17" and s.attrs["channels"] == "x,y,conf"
        item = data["annotations"][1]
        smp = s.read(item["frame_dir"])
        np.testing.assert_array_equal(smp.keypoints[..., :2], item["keypoint"].astype(np.float32))
        np.testing.assert_array_equal(smp.keypoints[..., 2], item["keypoint_score"].astype(np.float32))
        assert smp.attrs["label"] == 1 and smp.attrs["split"] == "test" and smp.attrs["image_size"] == [1920, 1080]
        assert s.read(data["annotations"][0]["frame_dir"]).attrs["split"] == "train"


def test_round_trip_2d_and_3d(tmp_path):
    data = pyskl_2d()
    pyskl.import_store(write(tmp_path / "a.pkl", data), tmp_path / "a.h5", "xsub")
    pyskl.export_store(tmp_path / "a.h5", tmp_path / "b.pkl", "xsub")
    back = pickle.loads((tmp_path / "b.pkl").read_bytes())
    assert back["split"]["xsub_train"] == data["split"]["xsub_train"]
    assert back["split"]["xsub_val"] == data["split"]["xsub_val"]
    for a, b in zip(data["annotations"], back["annotations"]):
        assert (a["frame_dir"], a["label"], a["total_frames"], a["img_shape"]) == \
            (b["frame_dir"], b["label"], b["total_frames"], b["img_shape"])
        np.testing.assert_array_equal(a["keypoint"].astype(np.float32), b["keypoint"])
        np.testing.assert_array_equal(a["keypoint_score"].astype(np.float32), b["keypoint_score"])
    rng = np.random.default_rng(1)
    three_d = {"split": {"xsub_train": ["x0"], "xsub_val": ["x1"]},
               "annotations": [{"frame_dir": f"x{i}", "label": i, "total_frames": 8,
                                "keypoint": rng.normal(0, 1, (2, 8, 25, 3)).astype(np.float32)} for i in range(2)]}
    pyskl.import_store(write(tmp_path / "c.pkl", three_d), tmp_path / "c.h5")
    with open_store(tmp_path / "c.h5") as s:
        assert s.layout.name == "ntu25" and s.attrs["channels"] == "x,y,z"
    pyskl.export_store(tmp_path / "c.h5", tmp_path / "d.pkl", "xsub")
    back = pickle.loads((tmp_path / "d.pkl").read_bytes())
    np.testing.assert_array_equal(back["annotations"][1]["keypoint"], three_d["annotations"][1]["keypoint"])
    assert back["split"] == three_d["split"]


class Evil:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned > /tmp/skelpipe-pwned",))


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d["annotations"][2].pop("keypoint"), "annotation 2 (S001C001P003R001A003): missing keypoint"),
    (lambda d: d["annotations"][1].update(keypoint=np.zeros((2, 11, 18, 2), np.float32)),
     "annotation 1 (S001C001P002R001A002): keypoint of shape (2, 11, 18, 2)"),
    (lambda d: d["annotations"][0].update(keypoint=[[0.0]]), "annotation 0 (S001C001P001R001A001): keypoint must be a float array"),
    (lambda d: d["annotations"][0].update(keypoint=np.zeros((2, 10, 17, 2), np.int64)), "keypoint must be a float array, got ndarray of int64"),
    (lambda d: d["annotations"][3].update(keypoint_score=np.zeros((2, 12, 17))), "annotation 3 (S001C001P004R001A001): keypoint_score must be an array of shape (2, 13, 17)"),
    (lambda d: d["annotations"][1].update(label=-1), "annotation 1 (S001C001P002R001A002): label must be an integer >= 0, got -1"),
    (lambda d: d.update(annotations="nope"), "expected a dict with 'split' and 'annotations'"),
    (lambda d: d.pop("annotations"), "expected a dict with 'split' and 'annotations'"),
    (lambda d: d["annotations"].append(Evil()), "asks for posix.system"),
])
def test_bad_files_are_refused_with_one_line(tmp_path, mutate, message):
    data = pyskl_2d()
    mutate(data)
    path = write(tmp_path / "bad.pkl", data)
    with pytest.raises(SkelpipeError) as err:
        pyskl.import_store(path, tmp_path / "bad.h5")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "bad.h5").exists()


def test_a_label_out_of_range_and_a_file_that_is_not_a_pickle(tmp_path):
    path = write(tmp_path / "a.pkl", pyskl_2d())
    with pytest.raises(SkelpipeError, match=r"annotation 2 \(S001C001P003R001A003\): label 2 out of range for 2 classes"):
        pyskl.import_store(path, tmp_path / "a.h5", num_classes=2)
    (tmp_path / "junk.pkl").write_bytes(b"\x00junk")
    with pytest.raises(SkelpipeError, match="not a pyskl annotation pickle"):
        pyskl.import_store(tmp_path / "junk.pkl", tmp_path / "b.h5")
    with pytest.raises(SkelpipeError, match="no split 'xset'"):
        pyskl.import_store(path, tmp_path / "c.h5", "xset")


def test_a_pyskl_file_as_the_lq_source_of_a_pipeline(tmp_path):
    """pyskl's HRNet poses as NTU's LQ: an import stage keyed on the file's content."""
    from skelpipe.pipeline.cache import Cache
    from skelpipe.pipeline.config import load_pipeline
    from skelpipe.pipeline.plan import Plan

    pkl = write(tmp_path / "hrnet.pkl", pyskl_2d())
    toml = tmp_path / "hrnet.toml"
    toml.write_text(f'''base = "ntu"
name = "ntu-hrnet"
[sources.hrnet]
kind = "pyskl"
file = "{pkl}"
split = "xsub"
label = "pyskl HRNet 2D"
[[settings]]
name = "hrnet"
hq = "kinect"
lq = "hrnet"
[[experiments]]
table = 1
settings = ["hrnet"]
benchmarks = ["xsub"]
op = [0.0]
kd = ["none", "pmsc"]
''')
    plan = Plan(load_pipeline(str(toml)), Cache(tmp_path / "cache"), None, "cpu").build()
    (step,) = [s for s in plan.ordered() if s.stage == "import"]
    assert step.meta["label"] == "pyskl HRNet 2D" and step.entry.config["split"] == "xsub"
    write(pkl, pyskl_2d(seed=1))  # other poses in the same file: another key
    again = Plan(load_pipeline(str(toml)), Cache(tmp_path / "cache"), None, "cpu").build()
    assert [s.key for s in again.ordered() if s.stage == "import"] != [step.key]
    from skelpipe.core.work import Work
    from skelpipe.pipeline.plan import build_imported
    work = Work(tmp_path / "w")
    build_imported(plan, step, work)
    with open_store(work.dir / "skeletons.h5") as s:
        assert len(s) == 4 and s.layout.name == "coco17"
