"""NTU RGB+D reader: a .skeleton file written here in the dataset's exact text format (CRLF,
multi-body frames, frames without a body) read back field by field; broken variants rejected
naming the file; benchmark rules on sample names; body selection by motion energy; scans."""

import numpy as np
import pytest
from conftest import ID_A, ID_B, SKELETON_FRAMES, body, skeleton_text

from skelpipe.core.errors import SkelpipeError
from skelpipe.data.datasets import ntu, ntu_skeleton

@pytest.fixture
def skeleton_file(tmp_path):
    path = tmp_path / "S001C002P003R002A013.skeleton"
    path.write_bytes(skeleton_text(SKELETON_FRAMES))
    return path


def test_round_trip_field_by_field(skeleton_file):
    assert b"\r\n" in skeleton_file.read_bytes()
    skel = ntu_skeleton.read_skeleton_file(skeleton_file)
    assert skel["num_frames"] == 4
    assert list(skel["bodies"]) == [ID_A, ID_B]            # order of first appearance
    expected = {ID_A: [(0, SKELETON_FRAMES[0][0]), (1, SKELETON_FRAMES[1][0])],
                ID_B: [(1, SKELETON_FRAMES[1][1]), (3, SKELETON_FRAMES[3][0])]}
    for body_id, occurrences in expected.items():
        b = skel["bodies"][body_id]
        np.testing.assert_array_equal(b["frames"], [f for f, _ in occurrences])
        joints = np.stack([j for _, (_, _, j) in occurrences])
        np.testing.assert_allclose(b["xyz"], joints[..., 0:3], rtol=0, atol=1e-9)
        np.testing.assert_allclose(b["depth_xy"], joints[..., 3:5], rtol=0, atol=1e-9)
        np.testing.assert_allclose(b["color_xy"], joints[..., 5:7], rtol=0, atol=1e-9)
        np.testing.assert_allclose(b["orientation"], joints[..., 7:11], rtol=0, atol=1e-9)
        assert b["tracking"].dtype.kind == "i"
        np.testing.assert_array_equal(b["tracking"], joints[..., 11].astype(int))
        for k, field in enumerate(ntu_skeleton.BODY_FIELDS):
            written = [info[k] for _, (_, info, _) in occurrences]
            np.testing.assert_array_equal(b["info"][field], written)
        assert b["info"]["trackingState"].dtype.kind == "i"
    assert skel["bodies"][ID_B]["info"]["leanX"][1] == -0.5


def test_file_with_no_bodies_at_all(tmp_path):
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_bytes(skeleton_text([[], []]))
    skel = ntu_skeleton.read_skeleton_file(path)
    assert skel == {"num_frames": 2, "bodies": {}}
    arr, ids = ntu_skeleton.to_array(skel)
    assert arr.shape == (2, 2, 25, 3) and not arr.any() and ids == []


def _lines(frames=SKELETON_FRAMES):
    return skeleton_text(frames).decode().split("\r\n")


def _join(lines):
    return "\r\n".join(lines).encode()


# line numbers (1-based) in the SKELETON_FRAMES file: 1 frame count; 2 bodies of frame 0; 3 body A
# fields; 4 joint count; 5..29 joints; 30 bodies of frame 1; 31 body A fields; 32 joint count..
BROKEN = {
    "truncated in the joints": (lambda ls: _join(ls[:20]), "truncated"),
    "truncated before a frame": (lambda ls: _join(ls[:29]), "truncated"),
    "empty file": (lambda ls: b"", "truncated"),
    "bad token in a joint": (lambda ls: _join(ls[:9] + [" ".join(["0.2x"] + ls[9].split()[1:])]
                                              + ls[10:]), "line 10: bad number '0.2x'"),
    "joint with 11 numbers": (lambda ls: _join(ls[:6] + [ls[6].rsplit(" ", 1)[0]] + ls[7:]),
                              "line 7: expected 12 numbers"),
    "nan in a joint": (lambda ls: _join(ls[:7] + ["nan " + ls[7].split(" ", 1)[1]] + ls[8:]),
                       "line 8: bad number 'nan'"),
    "wrong joint count": (lambda ls: _join(ls[:3] + ["24"] + ls[4:28] + ls[29:]),
                          "line 4: wrong joint count 24, expected 25"),
    "body fields missing": (lambda ls: _join(ls[:2] + [ls[2].rsplit(" ", 2)[0]] + ls[3:]),
                            "line 3: expected 10 body fields"),
    "bad body id": (lambda ls: _join(ls[:2] + ["7205759x" + ls[2][8:]] + ls[3:]),
                    "line 3: bad body id"),
    "bad frame count": (lambda ls: _join(["four"] + ls[1:]), "line 1"),
    "body count not a number": (lambda ls: _join(ls[:29] + ["2.5"] + ls[30:]), "line 30"),
    "extra data at the end": (lambda ls: _join(ls + ["1", "2"]), "unexpected data after"),
    "binary garbage": (lambda ls: b"\x89PNG\r\n\x1a\n\x00\xff", "binary"),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_rejected_naming_the_file(tmp_path, case):
    make, expected = BROKEN[case]
    path = tmp_path / "S001C001P001R001A001.skeleton"
    path.write_bytes(make(_lines()))
    with pytest.raises(SkelpipeError) as err:
        ntu_skeleton.read_skeleton_file(path)
    message = str(err.value)
    assert str(path) in message and expected in message, message
    assert "\n" not in message


def test_missing_file_is_a_skelpipe_error(tmp_path):
    with pytest.raises(SkelpipeError, match="cannot read"):
        ntu_skeleton.read_skeleton_file(tmp_path / "nope.skeleton")


# ----------------------------------------------------------------------------- names, splits


def test_parse_name():
    assert ntu.parse_name("S001C002P003R002A013") == (1, 2, 3, 2, 13)
    s = ntu.parse_name("/data/S017C003P040R001A120_rgb.avi")
    assert (s.setup, s.camera, s.performer, s.replication, s.action) == (17, 3, 40, 1, 120)
    assert ntu.sample_id("S017C003P040R001A120_rgb.avi") == "S017C003P040R001A120"
    for bad in ["S01C002P003R002A013", "video.avi", "s001c002p003r002a013"]:
        with pytest.raises(SkelpipeError, match="not an NTU sample name"):
            ntu.parse_name(bad)


@pytest.mark.parametrize("name, benchmark, split", [
    ("S001C001P001R001A001", "xsub", "train"),
    ("S001C001P003R001A001", "xsub", "test"),
    ("S017C002P038R002A060", "xsub", "train"),
    ("S017C002P040R002A060", "xsub", "test"),
    ("S005C001P001R001A001", "xview", "test"),
    ("S005C002P003R001A001", "xview", "train"),
    ("S005C003P003R001A001", "xview", "train"),
    ("S020C001P045R001A100", "xsub120", "train"),
    ("S020C001P044R001A100", "xsub120", "test"),
    ("S001C001P001R001A001", "xsub120", "train"),
    ("S032C001P103R001A120", "xsub120", "train"),
    ("S032C001P106R001A120", "xsub120", "test"),
    ("S002C001P003R001A001", "xset120", "train"),
    ("S001C001P001R001A001", "xset120", "test"),
    ("S032C003P050R002A061", "xset120", "train"),
    ("S031C003P050R002A061", "xset120", "test"),
])
def test_split_rules(name, benchmark, split):
    assert ntu.split_of(name, benchmark) == split


def test_split_rules_over_all_subjects_setups_and_cameras():
    xsub = [p for p in range(1, 41) if ntu.split_of(f"S001C001P{p:03d}R001A001", "xsub") == "train"]
    assert xsub == [1, 2, 4, 5, 8, 9, 13, 14, 15, 16, 17, 18, 19, 25, 27, 28, 31, 34, 35, 38]
    xsub120 = [p for p in range(1, 107)
               if ntu.split_of(f"S001C001P{p:03d}R001A001", "xsub120") == "train"]
    assert len(xsub120) == 53 and xsub120[:20] == xsub and xsub120[-4:] == [97, 98, 100, 103]
    xset = [s for s in range(1, 33) if ntu.split_of(f"S{s:03d}C001P001R001A001", "xset120") == "train"]
    assert xset == list(range(2, 33, 2))
    assert [ntu.split_of(f"S001C{c:03d}P001R001A001", "xview") for c in (1, 2, 3)] == [
        "test", "train", "train"]


@pytest.mark.parametrize("name, benchmark", [
    ("S001C001P001R001A061", "xsub"),      # an NTU-120 action
    ("S018C001P001R001A001", "xview"),     # an NTU-120 setup
    ("S001C001P001R001A121", "xsub120"),
    ("S001C004P001R001A001", "xview"),     # no camera 4
])
def test_split_rejects_samples_outside_the_benchmark(name, benchmark):
    with pytest.raises(SkelpipeError, match=name):
        ntu.split_of(name, benchmark)


def test_unknown_benchmark():
    with pytest.raises(SkelpipeError, match="unknown NTU benchmark 'cs'"):
        ntu.split_of("S001C001P001R001A001", "cs")


def test_action_names():
    assert len(ntu.ACTIONS_60) == 60 and len(ntu.ACTIONS_120) == 120
    assert len(set(ntu.ACTIONS_120)) == 120
    assert ntu.ACTIONS_120[:3] == ("drink water", "eat meal/snack", "brushing teeth")
    assert ntu.ACTIONS_120[59] == "walking apart from each other"
    assert ntu.ACTIONS_120[60] == "put on headphone"
    assert ntu.ACTIONS_120[119] == "finger-guessing game (playing rock-paper-scissors)"
    assert ntu.action_names("xview") == ntu.ACTIONS_60 and ntu.num_classes("xset120") == 120


def test_shipped_missing_lists(shared_data):
    official = ntu.missing_samples(shared_data / "ntu" / "samples_with_missing_skeletons.txt")
    assert len(official) == 302 and ntu.missing_samples() == official
    ntu120 = ntu.missing_samples(version=120)
    assert len(ntu120) == 535 and official <= ntu120
    assert all(ntu.parse_name(n).setup >= 18 for n in ntu120 - official)


def test_missing_list_with_a_bad_line(tmp_path):
    path = tmp_path / "missing.txt"
    path.write_text("header\nheader\n\nS001C002P005R002A008\nnot-a-name\n")
    with pytest.raises(SkelpipeError, match=r"missing.txt: line 5: not an NTU sample name"):
        ntu.missing_samples(path)


# ----------------------------------------------------------------------------- body selection


def _two_body_skel(tmp_path, still_first=True):
    still = [body(ID_A, 10, scale=0.01) for _ in range(3)]
    moving = [body(ID_B, 20 + t, scale=1.0) for t in range(3)]
    first, second = (still, moving) if still_first else (moving, still)
    frames = [[first[0]], [first[1], second[0]], [first[2], second[1]], [second[2]], []]
    path = tmp_path / "S001C001P001R001A050.skeleton"
    path.write_bytes(skeleton_text(frames))
    return ntu_skeleton.read_skeleton_file(path), still, moving


def test_motion_energy_by_hand():
    xyz = np.zeros((2, 25, 3))
    xyz[1, :, 0] = 2.0                       # x: half the values 0, half 2 → variance 1
    assert ntu_skeleton.motion_energy(xyz) == pytest.approx(1.0)
    xyz[:, :, 2] = np.arange(25)             # z: 0..24 over joints → variance (25²-1)/12 = 52
    assert ntu_skeleton.motion_energy(xyz) == pytest.approx(1.0 + 52.0)


def test_body_selection_by_motion_energy(tmp_path):
    skel, still, moving = _two_body_skel(tmp_path)
    assert list(skel["bodies"]) == [ID_A, ID_B]              # the still body appears first
    assert ntu_skeleton.rank_bodies(skel) == [ID_B, ID_A]             # but the moving one moves more
    arr, ids = ntu_skeleton.to_array(skel)
    assert arr.dtype == np.float32 and arr.shape == (2, 5, 25, 3) and ids == [ID_B, ID_A]
    # each body at its own frame indices: B in frames 1, 2, 3 and A in frames 0, 1, 2
    for t, (_, _, j) in zip([1, 2, 3], moving):
        np.testing.assert_allclose(arr[0, t], j[:, 0:3], atol=1e-6)
    for t, (_, _, j) in zip([0, 1, 2], still):
        np.testing.assert_allclose(arr[1, t], j[:, 0:3], atol=1e-6)
    assert not arr[0, [0, 4]].any() and not arr[1, [3, 4]].any()
    color, color_ids = ntu_skeleton.to_color_array(skel)
    assert color.shape == (2, 5, 25, 2) and color_ids == ids
    np.testing.assert_allclose(color[0, 1], moving[0][2][:, 5:7], atol=1e-3)


def test_one_body_kept_and_frames_padded_or_cut(tmp_path):
    skel, _, moving = _two_body_skel(tmp_path, still_first=False)
    arr, ids = ntu_skeleton.to_array(skel, max_bodies=1, num_frames=8)
    assert arr.shape == (1, 8, 25, 3) and ids == [ID_B]
    assert not arr[0, 3:].any()                              # B in frames 0..2 this time
    cut, _ = ntu_skeleton.to_array(skel, max_bodies=3, num_frames=2)
    assert cut.shape == (3, 2, 25, 3) and not cut[2].any()
    np.testing.assert_allclose(cut[0, 1], moving[1][2][:, 0:3], atol=1e-6)


# ----------------------------------------------------------------------------- scan


def test_scan(tmp_path, skeleton_file):
    root = tmp_path / "skeletons"
    root.mkdir()
    good = skeleton_text(SKELETON_FRAMES)
    names = ["S001C001P001R001A001", "S001C002P003R002A013", "S002C003P002R001A060",
             "S001C002P005R002A008",       # on the official missing list
             "S018C001P045R001A001",       # NTU-120 setup: outside xsub
             "S001C001P001R001A002"]       # truncated below
    for n in names:
        (root / f"{n}.skeleton").write_bytes(good)
    (root / "S001C001P001R001A002.skeleton").write_bytes(good[:200])
    (root / "notes.skeleton").write_bytes(good)

    result = ntu.scan(root, "xsub")
    got = {s.name: (s.label, s.split) for s in result.samples}
    assert got == {"S001C001P001R001A001": (0, "train"), "S001C001P001R001A002": (1, "train"),
                   "S001C002P003R002A013": (12, "test"), "S002C003P002R001A060": (59, "train")}
    assert [p.endswith("notes.skeleton") for p, _ in result.bad] == [True]
    assert sorted(n for n, _ in result.excluded) == ["S001C002P005R002A008", "S018C001P045R001A001"]

    checked = ntu.scan(root, "xsub", check=True)
    assert "S001C001P001R001A002" not in {s.name for s in checked.samples}
    assert any("S001C001P001R001A002" in p and "truncated" in why for p, why in checked.bad)

    xview = ntu.scan(root, "xview")
    assert {s.name: s.split for s in xview.samples}["S001C001P001R001A001"] == "test"
    xset = ntu.scan(root, "xset120")
    assert {s.name: s.split for s in xset.samples}["S018C001P045R001A001"] == "train"  # even setup


def test_scan_of_a_missing_directory(tmp_path):
    with pytest.raises(SkelpipeError, match="no such directory"):
        ntu.scan(tmp_path / "nope", "xsub")
