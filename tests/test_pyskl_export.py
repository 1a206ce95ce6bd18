"""pyskl export: every written item passes what pyskl's transforms check (PreNormalize2D /
PreNormalize3D, GenSkeFeat's graphs), other layouts are written on COCO-17 / NTU-25, and
export → import gives the same keypoints."""

import pickle

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import pyskl_2d, pyskl_3d, write_pyskl

from skelpipe.cli import cli
from skelpipe.core.errors import SkelpipeError
from skelpipe.data import pyskl, pyskl_export
from skelpipe.skeleton import layouts
from skelpipe.skeleton.store import PoseWriter, open_store

# The largest joint index of the bone pairs of pyskl's GenSkeFeat per graph (dataset='coco':
# 16, 'nturgb+d': 24): V must exceed it or pyskl fails with an IndexError.
PYSKL_V = {2: 17, 3: 25}


def assert_pyskl_accepts(item):
    """What pyskl asserts or divides by: total_frames == T, V of its graph, 3D with M in 1..2
    (PreNormalize3D; an all-zero sample is skipped), 2D with a score per joint and a non-zero
    img_shape (PreNormalize2D scales x by w / 2 and y by h / 2)."""
    kp = item["keypoint"]
    M, T, V, C = kp.shape
    assert item["total_frames"] == T and V == PYSKL_V[C] and np.isfinite(kp).all()
    if C == 3:
        assert "keypoint_score" not in item and (M in (1, 2) or not kp.any())
    else:
        h, w = item["img_shape"]
        assert h > 0 and w > 0 and item["keypoint_score"].shape == (M, T, V)


def load(path):
    return pickle.loads(path.read_bytes())


@pytest.mark.parametrize("make,split", [(pyskl_2d, "xsub"), (pyskl_3d, "xview")])
def test_export_then_import_gives_the_same_keypoints(tmp_path, make, split):
    data = make()
    pyskl.import_store(write_pyskl(tmp_path / "a.pkl", data, protocol=2), tmp_path / "a.h5", split)
    counts = pyskl_export.export_store(tmp_path / "a.h5", tmp_path / "b.pkl", split)
    assert counts["notes"] == {} and counts["samples"] == len(data["annotations"])
    back = load(tmp_path / "b.pkl")
    assert back["split"] == {f"{split}_train": data["split"][f"{split}_train"],
                             f"{split}_val": data["split"][f"{split}_val"]}
    for a, b in zip(data["annotations"], back["annotations"]):
        assert_pyskl_accepts(b)
        assert (a["frame_dir"], a["label"], a["total_frames"], a.get("img_shape")) == \
            (b["frame_dir"], b["label"], b["total_frames"], b.get("img_shape"))
        np.testing.assert_array_equal(a["keypoint"].astype(np.float32), b["keypoint"])
        if "keypoint_score" in a:
            np.testing.assert_array_equal(a["keypoint_score"].astype(np.float32), b["keypoint_score"])
    pyskl.import_store(tmp_path / "b.pkl", tmp_path / "c.h5", split)          # and back in
    with open_store(tmp_path / "a.h5") as s, open_store(tmp_path / "c.h5") as t:
        for sid in s.ids():
            np.testing.assert_array_equal(s.read(sid).keypoints, t.read(sid).keypoints)
            assert s.read(sid).attrs == t.read(sid).attrs


def penn_store(path, rng):
    """Penn Action's 13 joints in pixels with visibility; the second sample has no image size."""
    with PoseWriter(path, "penn13", {"channels": "x,y,conf"}) as w:
        for i in range(2):
            kp = np.concatenate([rng.uniform(10, 600, (1, 6, 13, 2)), rng.integers(0, 2, (1, 6, 13, 1))], -1)
            kp[0, 2, 4] = 0                                        # a joint not annotated
            w.add(f"p{i}", kp, label=i, split="train" if i else "test",
                  **({"image_size": [640, 480]} if i == 0 else {}))


def test_penn13_is_written_on_coco17_with_a_size_for_2d_without_one(tmp_path):
    penn_store(tmp_path / "p.h5", np.random.default_rng(0))
    counts = pyskl_export.export_store(tmp_path / "p.h5", tmp_path / "p.pkl", "dev")
    assert counts["graph"] == "coco17" and counts["notes"] == {
        "written on coco17": 2, "2D without image size (img_shape from the keypoints' extent)": 1}
    coco, penn = layouts.COCO17, layouts.PENN13
    with open_store(tmp_path / "p.h5") as s:
        for item in load(tmp_path / "p.pkl")["annotations"]:
            assert_pyskl_accepts(item)
            src = s.read(item["frame_dir"]).keypoints
            for joint in layouts.SHARED_JOINTS:
                c, p = coco.index(joint), penn.index(joint)
                np.testing.assert_array_equal(item["keypoint"][..., c, :], src[..., p, :2])
                np.testing.assert_array_equal(item["keypoint_score"][..., c], src[..., p, 2])
            for joint in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):   # at the head
                np.testing.assert_array_equal(item["keypoint"][..., coco.index(joint), :], src[..., 0, :2])
            np.testing.assert_array_equal(item["keypoint_score"][..., 0], src[..., 0, 2])
            assert not item["keypoint_score"][..., 1:5].any()     # eyes and ears: not observed
    p0, p1 = load(tmp_path / "p.pkl")["annotations"]
    assert p0["img_shape"] == (480, 640)
    xy = p1["keypoint"]
    assert p1["img_shape"] == (int(np.ceil(xy[..., 1].max())), int(np.ceil(xy[..., 0].max())))
    h, w = p1["img_shape"]
    normalised = np.abs((xy - [w / 2, h / 2]) / [w / 2, h / 2])   # PreNormalize2D's scaling
    assert normalised.max() <= 1.0


def test_kinect20_3d_is_written_on_ntu25_with_the_two_bodies_present_most(tmp_path):
    rng = np.random.default_rng(2)
    kp = rng.normal(0, 1, (3, 10, 20, 3)).astype(np.float32)
    kp[1, 3:] = 0                                   # body 1 present in 3 of 10 frames
    with PoseWriter(tmp_path / "k.h5", "kinect20", {"channels": "x,y,z"}) as w:
        w.add("k0", kp, label=4)
        w.add("k1", kp[:1], label=5)
    counts = pyskl_export.export_store(tmp_path / "k.h5", tmp_path / "k.pkl")
    assert counts["graph"] == "ntu25" and counts["notes"] == {
        "written on ntu25": 2, "3D with more than two bodies (kept the two present most)": 1}
    assert load(tmp_path / "k.pkl")["split"] == {}                  # no sample has a split
    k0, k1 = load(tmp_path / "k.pkl")["annotations"]
    for item in (k0, k1):
        assert_pyskl_accepts(item)
    ntu, kin = layouts.NTU25, layouts.KINECT20
    kept = kp[[0, 2]]                               # bodies 0 and 2, in their order
    for target, source in (("left_knee", "left_knee"), ("spine_base", "hip_center"),
                           ("spine_shoulder", "shoulder_center"), ("neck", "shoulder_center"),
                           ("right_thumb", "right_hand")):
        np.testing.assert_array_equal(k0["keypoint"][:, :, ntu.index(target)], kept[:, :, kin.index(source)])
    assert k1["keypoint"].shape == (1, 10, 25, 3)


def test_2d_or_3d_is_decided_per_sample(tmp_path):
    """A store whose attributes say x, y, z holding COCO 2D samples (their own channels say so)."""
    rng = np.random.default_rng(3)
    with PoseWriter(tmp_path / "a.h5", "coco17", {"channels": "x,y,z"}) as w:
        for i in range(2):
            w.add(f"c{i}", rng.uniform(1, 99, (1, 4, 17, 3)), label=i, channels="x,y,conf",
                  image_size=[100, 100])
    pyskl_export.export_store(tmp_path / "a.h5", tmp_path / "a.pkl")
    for item in load(tmp_path / "a.pkl")["annotations"]:
        assert_pyskl_accepts(item)
        assert item["keypoint"].shape == (1, 4, 17, 2)
    with PoseWriter(tmp_path / "b.h5", "ntu25", {"channels": "x,y,z"}) as w:
        w.add("n0", rng.normal(0, 1, (1, 4, 25, 3)), label=0)
        w.add("n1", rng.uniform(1, 99, (1, 4, 25, 3)), label=0, channels="x,y,conf", image_size=[100, 100])
    with pytest.raises(SkelpipeError, match=r"b.h5: sample n0 is 2D and n1 3D|sample n1 is 2D and n0 3D"):
        pyskl_export.export_store(tmp_path / "b.h5", tmp_path / "b.pkl")
    assert not (tmp_path / "b.pkl").exists()


def test_what_has_no_pyskl_graph_is_refused_with_one_line(tmp_path):
    with PoseWriter(tmp_path / "a.h5", "coco17", {"channels": "x,y,z"}) as w:
        w.add("lifted", np.ones((1, 4, 17, 3)), label=0)
    with pytest.raises(SkelpipeError) as err:
        pyskl_export.export_store(tmp_path / "a.h5", tmp_path / "a.pkl")
    assert "sample lifted: 3D coco17 poses cannot be written on pyskl's ntu25 graph (no joint for its " \
           "spine_base)" in str(err.value) and "\n" not in str(err.value)


def test_the_command_says_what_it_changed(tmp_path):
    penn_store(tmp_path / "p.h5", np.random.default_rng(4))
    result = CliRunner().invoke(cli, ["export", "pyskl", "--store", str(tmp_path / "p.h5"), "--out",
                                      str(tmp_path / "p.pkl"), "--split-name", "dev"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())
    assert "2 annotations on coco17 (1 in dev_train, 1 in dev_val)" in said
    assert "written on coco17: 2 samples" in said
    assert "2D without image size (img_shape from the keypoints' extent): 1 sample" in said
    assert set(load(tmp_path / "p.pkl")["split"]) == {"dev_train", "dev_val"}
