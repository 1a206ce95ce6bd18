"""The synthetic demo dataset: determinism, shapes, splits, persons, rigid bones, the motions
being the labelled ones, projection, and the HQ store round trip."""

import numpy as np
import pytest

from skelpipe.data.datasets import demo
from skelpipe.skeleton import layouts
from skelpipe.skeleton.geometry import project

NTU = layouts.get("ntu25")
J = {name: i for i, name in enumerate(NTU.joints)}


@pytest.fixture(scope="module")
def small():
    return demo.generate(num_subjects=3, reps_per_subject=1, seed=0)


def test_actions_and_their_parts():
    assert len(demo.ACTIONS) >= 10 and len(set(demo.ACTIONS)) == len(demo.ACTIONS)
    assert set(demo.ACTION_PARTS) == set(demo.ACTIONS)
    for parts in demo.ACTION_PARTS.values():
        assert parts and set(parts) <= set(layouts.PARTS)
    # arm-only, leg-only, whole-body and two-person actions are all there
    assert {"wave_right", "wave_left", "kick_right", "kick_left", "squat"} <= set(demo.ACTIONS)
    assert set(demo.TWO_PERSON) <= set(demo.ACTIONS) and len(demo.TWO_PERSON) >= 2


def test_same_seed_same_arrays_other_seed_other_arrays(small):
    again = demo.generate(num_subjects=3, reps_per_subject=1, seed=0)
    other = demo.generate(num_subjects=3, reps_per_subject=1, seed=1)
    assert [i.id for i in small] == [i.id for i in again] == [i.id for i in other]
    for a, b in zip(small, again):
        assert a.camera == b.camera and np.array_equal(a.xyz, b.xyz)
    assert not any(a.xyz.shape == c.xyz.shape and np.allclose(a.xyz, c.xyz)
                   for a, c in zip(small, other))


def test_instances_do_not_depend_on_how_many_are_generated(small):
    fewer = demo.generate(num_subjects=2, reps_per_subject=1, seed=0)
    by_id = {i.id: i for i in small}
    assert len(fewer) == 2 * len(demo.ACTIONS)
    for inst in fewer:
        assert np.array_equal(inst.xyz, by_id[inst.id].xyz)


def test_shapes_lengths_and_ids(small):
    assert len(small) == 3 * len(demo.ACTIONS)
    assert len({i.id for i in small}) == len(small)
    lengths = set()
    for inst in small:
        assert inst.xyz.dtype == np.float32 and inst.xyz.ndim == 4
        M, T, V, C = inst.xyz.shape
        assert (M, V, C) == (2, 25, 3)
        assert demo.MIN_FRAMES <= T <= demo.MAX_FRAMES
        assert np.isfinite(inst.xyz).all()
        lengths.add(T)
    assert len(lengths) > 5                       # sequence lengths vary


def test_cross_subject_split_has_every_class_on_both_sides(small):
    train = [i for i in small if demo.split_of(i) == "train"]
    test = [i for i in small if demo.split_of(i) == "test"]
    assert train and test and len(train) + len(test) == len(small)
    assert {i.label for i in train} == {i.label for i in test} == set(range(len(demo.ACTIONS)))
    assert not {i.subject for i in train} & {i.subject for i in test}


def test_second_person_only_in_two_person_actions(small):
    for inst in small:
        second = inst.xyz[1]
        if demo.ACTIONS[inst.label] in demo.TWO_PERSON:
            assert (np.abs(second).sum(axis=(1, 2)) > 0).all()      # present in every frame
            gap = np.linalg.norm(inst.xyz[0, :, J["spine_base"]] - second[:, J["spine_base"]], axis=-1)
            assert (gap > 0.5).all() and (gap < 1.6).all()
        else:
            assert not second.any()


def test_bones_are_rigid_and_human_sized(small):
    a, b = np.array(NTU.edges).T
    for inst in small:
        for m in range(2):
            x = inst.xyz[m].astype(np.float64)
            if not x.any():
                continue
            length = np.linalg.norm(x[:, a] - x[:, b], axis=-1)       # (T, edges)
            assert np.abs(length - length[0]).max() < 1e-4, inst.id
            height = np.linalg.norm(x[0, J["head"]] - x[0, J["spine_base"]])
            assert 0.5 < height < 0.9, inst.id
            assert 0.2 < np.linalg.norm(x[0, J["left_knee"]] - x[0, J["left_hip"]]) < 0.6


def test_camera_frame_like_kinect(small):
    for inst in small:
        present = np.abs(inst.xyz).sum(axis=(1, 2, 3)) > 0
        z = inst.xyz[present][..., 2]
        assert 1.5 < z.min() and z.max() < 5.0, inst.id
        first = inst.xyz[0, 0]
        assert first[J["head"], 1] > first[J["spine_base"], 1] > first[J["left_ankle"], 1]
        assert set(inst.camera) >= {"yaw", "pitch", "distance", "focal", "cx", "cy", "W", "H"}


def _energy(inst, part, m=0):
    """How much the joints of ``part`` move relative to the spine base."""
    x = inst.xyz[m] - inst.xyz[m, :, J["spine_base"]][:, None]
    return x[:, list(NTU.parts[part])].std(axis=0).sum()


def test_motions_use_their_discriminative_parts():
    insts = demo.generate(num_subjects=4, reps_per_subject=1, seed=3)
    for inst in insts:
        name = demo.ACTIONS[inst.label]
        if name in ("wave_right", "drink", "touch_head"):
            assert _energy(inst, "right_arm") > _energy(inst, "left_arm"), inst.id
        if name == "wave_left":
            assert _energy(inst, "left_arm") > _energy(inst, "right_arm"), inst.id
        if name in ("kick_right", "kick_left"):
            side, other = ("right", "left") if name == "kick_right" else ("left", "right")
            kick = inst.xyz[0, :, J[f"{side}_ankle"], 1] - inst.xyz[0, :, J[f"{other}_ankle"], 1]
            assert kick.max() > 0.2, inst.id                      # the kicking foot goes up
            assert _energy(inst, f"{side}_leg") > 2 * _energy(inst, f"{other}_leg"), inst.id
        if name in ("wave_right", "wave_left"):
            side = name.split("_")[1]
            hand_up = inst.xyz[0, :, J[f"{side}_hand"], 1] - inst.xyz[0, :, J["neck"], 1]
            assert hand_up.max() > 0.05, inst.id                  # the hand goes above the neck
        if name == "jump":
            feet = inst.xyz[0, :, [J["left_foot"], J["right_foot"]], 1].min(axis=0)
            assert feet.max() - feet[0] > 0.05, inst.id
        if name in ("squat", "bow"):
            drop = inst.xyz[0, 0, J["head"], 1] - inst.xyz[0, :, J["head"], 1].min()
            assert drop > 0.2, inst.id


def test_projection_is_a_pinhole_inside_the_image():
    cam = {"focal": 1000.0, "cx": 960.0, "cy": 540.0}
    pts = np.array([[0.0, 0.0, 3.0], [1.0, 0.5, 2.0], [0.0, 0.0, 0.0]])
    uv = project(pts, cam)
    assert np.allclose(uv, [[960, 540], [1460, 290], [0, 0]])     # y up → v up; absent → (0, 0)

    for inst in demo.generate(num_subjects=6, reps_per_subject=2, seed=0):
        uv = project(inst.xyz, inst.camera)
        assert uv.shape == inst.xyz.shape[:-1] + (2,) and uv.dtype == np.float32
        present = np.abs(inst.xyz).sum(-1) > 0
        W, H = inst.camera["W"], inst.camera["H"]
        assert (W, H) == demo.IMAGE_SIZE
        u, v = uv[..., 0][present], uv[..., 1][present]
        assert (u > 0).all() and (u < W).all() and (v > 0).all() and (v < H).all(), inst.id
        assert not uv[~present].any()


def test_write_stores_round_trip(tmp_path):
    from skelpipe.skeleton.store import open_store

    path = demo.write_stores(tmp_path / "demo", num_subjects=3, reps_per_subject=1, seed=0)
    expected = {i.id: i for i in demo.generate(num_subjects=3, reps_per_subject=1, seed=0)}
    with open_store(path) as store:
        assert store.layout.name == "ntu25"
        assert store.attrs["dataset"] == "demo"
        assert store.attrs["class_names"] == demo.ACTIONS
        assert sorted(store.ids()) == sorted(expected)
        for smp in store.iterate():
            inst = expected[smp.id]
            assert np.array_equal(smp.keypoints, inst.xyz)
            a = smp.attrs
            assert a["label"] == inst.label and a["label_name"] == demo.ACTIONS[inst.label]
            assert a["split"] == demo.split_of(inst) and a["subject"] == inst.subject
            assert a["camera"] == pytest.approx(inst.camera)
            assert a["fps"] == 30 and a["num_frames"] == inst.xyz.shape[1]
            assert list(a["image_size"]) == [1920, 1080] and a["channels"] == "x,y,z"


def _body_aligned(inst, frames=16):
    """3D features that ignore the view: centred on the first spine base, turned so the hips
    of the first frame lie along x, resampled to ``frames`` frames."""
    x = inst.xyz.astype(np.float64)
    present = np.abs(x).sum(axis=(1, 2, 3)) > 0
    hip = x[0, 0, J["left_hip"]] - x[0, 0, J["right_hip"]]
    a = np.arctan2(hip[2], hip[0])
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    x = (x - x[0, 0, J["spine_base"]]) @ R.T
    x[~present] = 0
    return x[:, np.linspace(0, x.shape[1] - 1, frames).round().astype(int)].ravel()


def test_classes_are_learnable_across_subjects():
    """A nearest-centroid classifier trained on the train subjects recognises the test
    subjects' actions far above chance (1/12): the labels mean something."""
    insts = demo.generate(num_subjects=6, reps_per_subject=2, seed=0)
    X = np.stack([_body_aligned(i) for i in insts])
    y = np.array([i.label for i in insts])
    train = np.array([demo.split_of(i) == "train" for i in insts])
    centroids = np.stack([X[train & (y == k)].mean(0) for k in range(len(demo.ACTIONS))])
    pred = ((X[~train, None] - centroids[None]) ** 2).sum(-1).argmin(1)
    assert (pred == y[~train]).mean() > 0.6


def test_test_reps_enlarge_only_the_test_subjects():
    base = demo.generate(num_subjects=3, reps_per_subject=1, seed=0)
    more = demo.generate(num_subjects=3, reps_per_subject=1, seed=0, test_reps=3)
    test = [i for i in more if demo.split_of(i) == "test"]
    assert len(test) == 3 * len(demo.ACTIONS) and {i.subject for i in test} == {2}
    assert [i.id for i in more if demo.split_of(i) == "train"] == [i.id for i in base if demo.split_of(i) == "train"]
    kept = {i.id: i for i in more}
    for inst in base:  # existing instances unchanged
        np.testing.assert_array_equal(kept[inst.id].xyz, inst.xyz)
