"""SYSU 3D HOI reader: a release-layout fixture written here with scipy.io.savemat
(<subject>/video<k>/sklWorld.mat with SW (20, 3, T)), bad files, and the seeded splits."""

from collections import Counter

import h5py
import numpy as np
import pytest
import scipy.io

from skelpipe.core.errors import SkelpipeError
from skelpipe.data.datasets import sysu


def world(T, seed):
    return np.round(np.random.default_rng(seed).normal(size=(20, 3, T)), 5)


@pytest.fixture
def release(tmp_path):
    """Three subjects (folder names as numbers, to check numeric order), a few videos each."""
    root = tmp_path / "SYSU3DAction" / "3DvideoNorm"
    written = {}
    for subject, videos in {"2": [1, 12], "10": [3], "1": [1, 2]}.items():
        for k in videos:
            d = root / subject / f"video{k}"
            (d / "rgb").mkdir(parents=True)
            sw = world(5 + k, seed=k * 100 + int(subject))
            scipy.io.savemat(str(d / "sklWorld.mat"), {"SW": sw})
            scipy.io.savemat(str(d / "sklImage.mat"), {"S": np.round(sw[:, :2] * 100 + 320, 2)})
            written[(subject, k)] = sw
    return root, written


def test_read_release_files(release):
    root, written = release
    sw = written[("2", 12)]
    joints = sysu.read_skeleton_file(root / "2" / "video12" / "sklWorld.mat")
    assert joints.shape == (17, 20, 3)
    np.testing.assert_array_equal(joints, sw.transpose(2, 0, 1))
    image = sysu.read_skeleton_file(root / "2" / "video12" / "sklImage.mat")
    assert image.shape == (17, 20, 2)
    np.testing.assert_array_equal(image[3, 7], np.round(sw[7, :2, 3] * 100 + 320, 2))
    arr = sysu.to_array(joints)
    assert arr.shape == (1, 17, 20, 3) and arr.dtype == np.float32


def test_other_variable_names_and_layouts(tmp_path):
    sw = world(6, seed=1)
    scipy.io.savemat(str(tmp_path / "a.mat"), {"skeleton": sw.transpose(2, 0, 1)})   # (T, 20, 3)
    scipy.io.savemat(str(tmp_path / "b.mat"), {"whatever": sw, "fps": 30.0})       # one 3-D array
    for name in ("a.mat", "b.mat"):
        np.testing.assert_array_equal(sysu.read_skeleton_file(tmp_path / name), sw.transpose(2, 0, 1))
    # MATLAB v7.3: HDF5 behind a 512-byte MATLAB header, axes stored reversed
    with h5py.File(tmp_path / "v73.mat", "w", userblock_size=512) as f:
        f["SW"] = sw.T
    header = b"MATLAB 7.3 MAT-file, written by a test".ljust(116) + b"\0" * 8 + b"\x00\x02IM"
    with open(tmp_path / "v73.mat", "r+b") as f:
        f.write(header)
    np.testing.assert_array_equal(sysu.read_skeleton_file(tmp_path / "v73.mat"), sw.transpose(2, 0, 1))


@pytest.mark.parametrize("content, message", [
    ({"SW": np.zeros((25, 3, 10))}, "variable SW has shape (25, 3, 10)"),
    ({"SW": np.zeros((20, 3))}, "variable SW is not a numeric 3-D array"),
    ({"a": np.zeros((20, 3, 4)), "b": np.zeros((20, 3, 4))}, "no skeleton array: expected a variable SW"),
    ({"label": np.array([[3]])}, "no skeleton array"),
    ({"SW": np.full((20, 3, 4), np.nan)}, "NaN"),
])
def test_bad_files_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "sklWorld.mat"
    scipy.io.savemat(str(path), content)
    with pytest.raises(SkelpipeError) as err:
        sysu.read_skeleton_file(path)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_garbage_and_missing_files(tmp_path):
    (tmp_path / "x.mat").write_bytes(b"not a mat file")
    with pytest.raises(SkelpipeError, match="x.mat: not a readable MATLAB file"):
        sysu.read_skeleton_file(tmp_path / "x.mat")
    with pytest.raises(SkelpipeError, match="no such file"):
        sysu.read_skeleton_file(tmp_path / "y.mat")


def test_scan(release):
    root, written = release
    (root / "10" / "video13").mkdir()                       # no activity 13
    (root / "10" / "video4").mkdir()                        # no skeleton file
    (root / "1" / "video2" / "sklWorld.mat").write_bytes(b"garbage")
    instances, bad = sysu.scan(root.parent)                 # the folder holding 3DvideoNorm
    assert [(i.sample_id, i.subject_name, sysu.ACTIONS[i.label]) for i in instances] == [
        ("P01A01", "1", "drinking"), ("P01A02", "1", "pouring"),
        ("P02A01", "2", "drinking"), ("P02A12", "2", "sweeping"),
        ("P03A03", "10", "calling phone")]
    assert instances[3].video_dir == root / "2" / "video12"
    assert sorted(p.rsplit("/", 1)[1] for p, _ in bad) == ["video13", "video4"]
    assert sysu.scan(root).paths == [i.video_dir for i in instances]
    inst = sysu.read_instance(instances[3])
    assert (inst["id"], inst["label"], inst["subject"], inst["subject_name"]) == ("P02A12", 11, 2, "2")
    assert inst["xyz"].shape == (1, 17, 20, 3) and inst["image_xy"].shape == (1, 17, 20, 2)
    np.testing.assert_allclose(inst["xyz"][0], written[("2", 12)].transpose(2, 0, 1), rtol=1e-6)
    by_path = sysu.read_instance(root / "10" / "video3")  # numbered among its sibling subjects
    assert by_path["id"] == "P03A03" and by_path["subject_name"] == "10"
    first = sysu.SYSU().videos(root, {})[0]  # with what extraction stores beside the poses
    assert first == ("P01A01", root / "1" / "video1" / "rgb", {"label": 0, "label_name": sysu.ACTIONS[0],
                                                                  "subject": 1})
    checked, bad = sysu.scan(root, check=True)
    assert "P01A02" not in [i.sample_id for i in checked]
    assert any("video2/sklWorld.mat" in p for p, _ in bad)
    with pytest.raises(SkelpipeError, match="no RGB frames"):
        sysu.frame_files(root / "1" / "video1")
    (root / "1" / "video1" / "rgb" / "0002.jpg").write_bytes(b"")
    (root / "1" / "video1" / "rgb" / "0001.jpg").write_bytes(b"")
    assert [p.name for p in sysu.frame_files(root / "1" / "video1")] == ["0001.jpg", "0002.jpg"]


def test_actions():
    assert len(sysu.ACTIONS) == 12 and sysu.ACTIONS[0] == "drinking" and sysu.ACTIONS[-1] == "sweeping"


ALL_IDS = [sysu.sample_id(s, a) for s in range(1, 41) for a in range(12)]


def test_setting_1_halves_each_activity():
    for seed_index in (0, 29):
        parts = sysu.splits(ALL_IDS, 1, seed_index)
        assert len(parts["train"]) == len(parts["test"]) == 240
        per_action = Counter(sysu.parse_id(s)[1] for s in parts["train"])
        assert set(per_action.values()) == {20} and len(per_action) == 12
        # instances, not subjects: some subject has training and test instances
        subjects_both = {sysu.parse_id(s)[0] for s in parts["train"]} & {
            sysu.parse_id(s)[0] for s in parts["test"]}
        assert subjects_both


def test_setting_2_halves_the_subjects():
    parts = sysu.splits(ALL_IDS, 2, 3)
    train = {sysu.parse_id(s)[0] for s in parts["train"]}
    test = {sysu.parse_id(s)[0] for s in parts["test"]}
    assert len(train) == len(test) == 20 and not train & test
    assert len(parts["train"]) == 240


def test_splits_are_seeded_and_distinct():
    for setting in (1, 2):
        draws = [frozenset(sysu.splits(ALL_IDS, setting, i)["train"]) for i in range(30)]
        assert len(set(draws)) == 30
        assert draws[7] == frozenset(sysu.splits(ALL_IDS, setting, 7)["train"])
    assert sysu.split_of("P05A03", 1, 0) in ("train", "test")
    inst = sysu.Instance("P05A03", 5, "5", 2, None)
    assert sysu.splits([inst], 2, 0)[sysu.split_of("P05A03", 2, 0)] == [inst]


@pytest.mark.parametrize("args, message", [
    (("P05A03", 3, 0), "setting 3"), (("P05A03", 1, 30), "split 30"),
    (("P41A01", 1, 0), "not a SYSU 3D HOI sample id"), (("P05A13", 1, 0), "not a SYSU"),
])
def test_split_errors(args, message):
    with pytest.raises(SkelpipeError, match=message):
        sysu.split_of(*args)
