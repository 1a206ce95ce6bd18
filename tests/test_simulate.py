import numpy as np
import pytest

from skelpipe.core.errors import SkelpipeError
from skelpipe.pose.simulate import (
    PROFILES,
    get_profile,
    simulate_sample,
    simulate_store,
    to_coco17,
)
from skelpipe.skeleton import layouts
from skelpipe.skeleton.geometry import body_size, image_points
from skelpipe.skeleton.store import PoseWriter, Sample, open_store

COCO = layouts.get("coco17")
NTU = layouts.get("ntu25")


def _ntu_colour_sample(sid="S001C001P001R001A001", T=30, seed=0):
    """An ntu25 sample with colour coordinates of an upright person (about 500 px tall)."""
    rng = np.random.default_rng(seed)
    xyz = rng.normal(0, 0.2, (2, T, 25, 3)).astype(np.float32) + [0, 0, 3]
    xyz[1] = 0
    base = {"head": (960, 300), "neck": (960, 350), "spine_shoulder": (960, 370),
            "left_shoulder": (1020, 380), "right_shoulder": (900, 380), "left_elbow": (1040, 470),
            "right_elbow": (880, 470), "left_wrist": (1050, 550), "right_wrist": (870, 550),
            "left_hip": (1000, 560), "right_hip": (920, 560), "left_knee": (1005, 680),
            "right_knee": (915, 680), "left_ankle": (1010, 800), "right_ankle": (910, 800)}
    colour = np.zeros((2, T, 25, 2), np.float32)
    colour[0] = 960, 500
    for name, p in base.items():
        colour[0, :, NTU.index(name)] = p
    colour[0] += np.linspace(0, 40, T)[:, None, None]  # walks right
    return Sample(sid, xyz, {"color_xy": colour},
                  {"label": 0, "split": "train", "image_size": [1920, 1080], "channels": "x,y,z"})


def test_to_coco17_copies_shared_joints_and_synthesises_face():
    s = _ntu_colour_sample()
    xy, present, size = image_points(s, NTU)
    assert size == (1920, 1080) and present[0].all() and not present[1].any()
    coco, ok = to_coco17(xy, present, NTU)
    assert coco.shape == (2, 30, 17, 2) and ok[0].all() and not ok[1].any() and not coco[1].any()
    for name in layouts.SHARED_JOINTS:
        np.testing.assert_array_equal(coco[0, :, COCO.index(name)], xy[0, :, NTU.index(name)])
    f = {n: coco[0, 0, COCO.index(n)] for n in ("nose", "left_eye", "right_eye", "left_ear", "right_ear")}
    # the person faces the camera: their left is the image's right; eyes above the nose
    assert f["left_eye"][0] > f["nose"][0] > f["right_eye"][0]
    assert f["left_ear"][0] > f["left_eye"][0] and f["right_ear"][0] < f["right_eye"][0]
    assert f["left_eye"][1] < f["nose"][1]
    assert abs(f["nose"][0] - 960) < 1 and 280 < f["nose"][1] < 320


def test_penn_face_from_head_and_shoulders():
    penn = layouts.get("penn13")
    xy = np.zeros((1, 1, 13, 2), np.float32)
    xy[0, 0, penn.index("head")] = (100, 50)
    xy[0, 0, penn.index("left_shoulder")] = (130, 100)
    xy[0, 0, penn.index("right_shoulder")] = (70, 100)
    present = np.zeros((1, 1, 13), bool)
    present[0, 0, [0, 1, 2]] = True
    coco, ok = to_coco17(xy, present, penn)
    assert ok[0, 0, :7].all() and not ok[0, 0, 7:].any()
    assert coco[0, 0, COCO.index("left_eye"), 0] > 100 > coco[0, 0, COCO.index("right_eye"), 0]


def test_body_size_is_median_bbox_diagonal():
    xy = np.zeros((1, 3, 2, 2), np.float32)
    xy[0, :, 1] = [[30, 40], [60, 80], [3, 4]]
    present = np.ones((1, 3, 2), bool)
    assert body_size(xy, present)[0] == pytest.approx(50)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_noise_statistics(name):
    s = _ntu_colour_sample(T=200)
    prof = get_profile(name)
    kp, size, order = simulate_sample(s, NTU, prof, seed=1, shuffle_people=False)
    assert kp.shape == (2, 200, 17, 3) and kp.dtype == np.float32 and list(order) == [0, 1]
    assert not kp[1].any()  # the absent person stays absent
    xy, present = to_coco17(*image_points(s, NTU)[:2], NTU)
    found = kp[0, ..., 2] > 0
    assert not kp[0][~found].any()  # a missed joint: x = y = conf = 0
    missed = 1 - found.mean()
    assert prof.miss * 0.5 < missed < prof.miss + 1.5 * prof.dropout * prof.dropout_len[1] + 0.1
    err = np.linalg.norm(kp[0, ..., :2] - xy[0], axis=-1)[found] / body_size(xy, present)[0]
    assert 0.3 * prof.jitter < np.median(err) < 3 * prof.jitter
    assert np.corrcoef(err, kp[0, ..., 2][found])[0, 1] < -0.5  # confidence falls as error grows


def test_profiles_ordered_by_severity():
    s = _ntu_colour_sample(T=200)
    xy, present = to_coco17(*image_points(s, NTU)[:2], NTU)
    medians = []
    for name in ("resnet152", "shufflenetv2k16", "mobilenetv3small"):
        kp = simulate_sample(s, NTU, get_profile(name), seed=0, shuffle_people=False)[0]
        found = kp[0, ..., 2] > 0
        medians.append(np.median(np.linalg.norm(kp[0, ..., :2] - xy[0], axis=-1)[found]))
    assert medians[0] < medians[1] < medians[2]


def test_seeded_per_instance():
    s = _ntu_colour_sample()
    prof = get_profile("shufflenetv2k16")
    a = simulate_sample(s, NTU, prof, seed=3)[0]
    np.testing.assert_array_equal(a, simulate_sample(s, NTU, prof, seed=3)[0])
    assert not np.array_equal(a, simulate_sample(s, NTU, prof, seed=4)[0])
    other = Sample("S001C001P001R001A002", s.keypoints, s.arrays, s.attrs)
    assert not np.array_equal(a, simulate_sample(other, NTU, prof, seed=3)[0])


def test_unknown_profile():
    with pytest.raises(SkelpipeError, match="unknown simulated estimator profile"):
        get_profile("nope")
    assert get_profile("ShuffleNetv2x1") == PROFILES["shufflenetv2k16"]


def test_simulate_store_labels_its_output(tmp_path):
    with PoseWriter(tmp_path / "hq.h5", "ntu25", {"source": "kinect_v2", "class_names": ["a"]}) as w:
        for i in range(3):
            s = _ntu_colour_sample(f"S001C001P001R001A00{i + 1}", seed=i)
            w.add(s.id, s.keypoints, s.arrays, **s.attrs)
    counts = simulate_store(tmp_path / "hq.h5", tmp_path / "lq.h5", "mobilenetv3small", seed=0)
    assert counts == {"written": 3, "skipped": 0}
    with open_store(tmp_path / "lq.h5") as lq:
        assert lq.layout.name == "coco17" and lq.attrs["source"] == "simulated:mobilenetv3small"
        assert lq.attrs["extractor"] == "simulated" and lq.attrs["class_names"] == ["a"]
        smp = lq.read("S001C001P001R001A002")
        assert smp.keypoints.shape == (2, 30, 17, 3)
        assert smp.attrs["source"] == "simulated:mobilenetv3small" and smp.attrs["channels"] == "x,y,conf"
        assert smp.attrs["label"] == 0 and smp.attrs["split"] == "train"


def test_demo_projection_path(tmp_path):
    from skelpipe.data.datasets import demo

    path = demo.write_stores(tmp_path, num_subjects=1, reps_per_subject=1)
    simulate_store(path, tmp_path / "lq.h5", "resnet152", seed=0)
    with open_store(path) as hq, open_store(tmp_path / "lq.h5") as lq:
        assert lq.ids() == hq.ids()
        for sid in hq.ids():
            h, l = hq.read(sid), lq.read(sid)
            xy, present, _ = image_points(h, hq.layout, hq.attrs)
            coco, ok = to_coco17(xy, present, hq.layout)
            order = l.attrs["simulated_person_order"]
            kp = np.zeros_like(l.keypoints)
            kp[order] = l.keypoints
            found = kp[..., 2] > 0
            assert found.sum() > 0.9 * ok.sum()
            err = np.linalg.norm(kp[..., :2] - coco, axis=-1)[found]
            assert np.median(err) < 20  # pixels, on people about 500 px tall


def test_a_source_profile_overrides_fields_and_refuses_bad_ones():
    base = get_profile("resnet152")
    prof = get_profile("resnet152", {"jitter": 0.05, "miss": 0.3, "dropout_len": [2, 9]})
    assert prof.jitter == 0.05 and prof.miss == 0.3 and prof.dropout_len == (2, 9)
    assert prof.bias == base.bias and get_profile("resnet152") == base   # the named profile is untouched
    for bad, message in (({"jiter": 0.1}, "unknown field 'jiter'"), ({"miss": 1.5}, "miss = 1.5"),
                         ({"jitter": float("nan")}, "jitter = nan"), ({"dropout_len": [5, 2]}, "dropout_len"),
                         ({"conf_scale": 0}, "conf_scale")):
        with pytest.raises(SkelpipeError, match=message):
            get_profile("resnet152", bad)
