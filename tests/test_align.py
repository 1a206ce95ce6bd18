import json

import numpy as np
import pytest
from click.testing import CliRunner

from skelpipe.cli import cli
from skelpipe.core.work import Work
from skelpipe.data.align import AlignConfig, align_stores, associate, time_index
from skelpipe.pipeline.cache import Cache
from skelpipe.pipeline.stages import run_align
from skelpipe.pose.simulate import to_coco17
from skelpipe.skeleton import layouts
from skelpipe.skeleton.store import PoseWriter, open_store

NTU = layouts.get("ntu25")


def _person_colour(x0, T, rng):
    """Colour-image joints (T, 25, 2) of a person standing at x0, ~450 px tall, moving a bit."""
    rest = np.zeros((25, 2))
    for name, (dx, y) in {"head": (0, 300), "neck": (0, 350), "spine_shoulder": (0, 370),
                          "spine_mid": (0, 450), "spine_base": (0, 540),
                          "left_shoulder": (60, 380), "right_shoulder": (-60, 380),
                          "left_elbow": (80, 470), "right_elbow": (-80, 470),
                          "left_wrist": (90, 550), "right_wrist": (-90, 550),
                          "left_hand": (92, 570), "right_hand": (-92, 570),
                          "left_hip": (40, 560), "right_hip": (-40, 560),
                          "left_knee": (45, 680), "right_knee": (-45, 680),
                          "left_ankle": (50, 800), "right_ankle": (-50, 800),
                          "left_foot": (60, 820), "right_foot": (-60, 820)}.items():
        rest[NTU.index(name)] = (x0 + dx, y)
    return (rest + rng.normal(0, 4, (T, 25, 2))).astype(np.float32)


def _scene(d, T_hq=40, T_lq=None, swap=True, n=1, bad=None):
    """HQ ntu25 store (xyz + color_xy) and LQ coco17 store of two people standing apart.

    The LQ people arrive in swapped order when ``swap``; LQ has ``T_lq`` frames (time-stretched).
    ``bad``: {"no_lq": sid, "no_hq": sid} instances broken on purpose.
    """
    rng = np.random.default_rng(0)
    bad = bad or {}
    T_lq = T_lq or T_hq
    with PoseWriter(d / "hq.h5", "ntu25", {"source": "kinect_v2"}) as hw, \
            PoseWriter(d / "lq.h5", "coco17", {"source": "openpifpaf:test"}) as lw:
        for i in range(n):
            sid = f"S001C001P001R001A{i + 1:03d}"
            colour = np.stack([_person_colour(600, T_hq, rng), _person_colour(1300, T_hq, rng)])
            xyz = rng.normal(0, 0.3, (2, T_hq, 25, 3)).astype(np.float32) + [0, 0, 3]
            coco, ok = to_coco17(colour, np.ones(colour.shape[:3], bool), NTU)
            idx = np.minimum((np.arange(T_lq) * T_hq) // T_lq, T_hq - 1)
            lq = np.concatenate([coco[:, idx], np.full((2, T_lq, 17, 1), 0.8, np.float32)], -1)
            lq[..., :2] += rng.normal(0, 3, lq[..., :2].shape)
            if swap:
                lq = lq[::-1].copy()
            attrs = {"label": i % 2, "split": "train", "image_size": [1920, 1080]}
            if sid != bad.get("no_hq"):
                hw.add(sid, xyz, {"color_xy": colour}, channels="x,y,z", **attrs)
            if sid == bad.get("no_lq"):
                lq[:] = 0
            lw.add(sid, lq, channels="x,y,conf", **attrs)
    return d / "hq.h5", d / "lq.h5"


def test_time_index():
    assert list(time_index(4, 4)) == [0, 1, 2, 3]
    assert list(time_index(4, 8)) == [1, 3, 5, 7]
    assert list(time_index(6, 3)) == [0, 0, 1, 1, 2, 2]


def test_associate_hungarian_and_inf():
    assert associate(np.array([[5.0, 1.0], [1.0, 5.0]])) == [(0, 1), (1, 0)]
    assert associate(np.array([[np.inf, 2.0], [np.inf, np.inf]])) == [(0, 1)]
    assert associate(np.full((2, 2), np.inf)) == []


def test_swapped_people_reordered(tmp_path):
    hq_path, lq_path = _scene(tmp_path)
    stats = align_stores(hq_path, lq_path, Work(tmp_path / "out"))
    assert stats["paired"] == 1 and stats["reordered"] == 1 and stats["frame_mismatch"] == 0
    with open_store(tmp_path / "out" / "lq.h5") as lq, open_store(lq_path) as raw:
        smp = lq.read("S001C001P001R001A001")
        orig = raw.read("S001C001P001R001A001").keypoints
        np.testing.assert_array_equal(smp.keypoints[0], orig[1])
        np.testing.assert_array_equal(smp.keypoints[1], orig[0])
        assert smp.attrs["lq_order"] == [1, 0] and smp.attrs["has_hq"] is True
        assert smp.attrs["align_method"] == "joints"
        # 3 px noise on each side plus Kinect-vs-COCO nothing else: a small error / body size
        assert 0.0 < smp.attrs["align_error"] < 0.02
        assert stats["align_error"]["mean"] == pytest.approx(smp.attrs["align_error"])
    # in order already: nothing moves
    (tmp_path / "b").mkdir()
    _scene(tmp_path / "b", swap=False)
    stats = align_stores(tmp_path / "b" / "hq.h5", tmp_path / "b" / "lq.h5", Work(tmp_path / "b" / "out"))
    assert stats["reordered"] == 0


def test_frame_count_mismatch(tmp_path):
    hq_path, lq_path = _scene(tmp_path, T_hq=40, T_lq=47)
    stats = align_stores(hq_path, lq_path, Work(tmp_path / "out"))
    assert stats["frame_mismatch"] == 1
    assert stats["frame_mismatches"] == [{"id": "S001C001P001R001A001", "frames_hq": 40, "frames_lq": 47}]
    with open_store(tmp_path / "out" / "lq.h5") as lq, open_store(tmp_path / "out" / "hq.h5") as hq:
        smp = lq.read("S001C001P001R001A001")
        assert smp.keypoints.shape[1] == 40 == hq.read(smp.id).keypoints.shape[1]
        assert smp.attrs["frames_lq"] == 47 and smp.attrs["num_frames"] == 40
        assert smp.attrs["align_error"] < 0.03  # time-aligned frames still match


@pytest.mark.parametrize("missing", ["solitary", "drop"])
def test_bad_instances_reported_and_kept_or_dropped(tmp_path, missing):
    bad = {"no_lq": "S001C001P001R001A002", "no_hq": "S001C001P001R001A003"}
    hq_path, lq_path = _scene(tmp_path, n=4, bad=bad)
    path = run_align(Cache(tmp_path / "cache"), hq_path, lq_path, AlignConfig(missing=missing))
    manifest = json.loads((path / "manifest.json").read_text())
    reported = {b["item"]: b["reason"] for b in manifest["bad_items"]}
    assert set(reported) == set(bad.values())
    assert "no detected person" in reported[bad["no_lq"]] and "no HQ" in reported[bad["no_hq"]]
    import csv
    rows = {r["id"]: r for r in csv.DictReader(open(path / "alignment.csv"))}
    assert len(rows) == 4 and rows["S001C001P001R001A001"]["status"] == "paired"
    assert float(rows["S001C001P001R001A001"]["error"]) < 0.02
    assert rows[bad["no_hq"]]["status"].startswith("dropped" if missing == "drop" else "kept")
    with open_store(path / "lq.h5") as lq, open_store(path / "hq.h5") as hq:
        if missing == "drop":
            assert lq.ids() == hq.ids() == ["S001C001P001R001A001", "S001C001P001R001A004"]
            assert manifest["align"]["dropped"] == 2
        else:
            assert len(lq) == 4 and bad["no_hq"] not in hq
            assert lq.read(bad["no_hq"]).attrs["has_hq"] is False
            no_lq = lq.read(bad["no_lq"])
            assert no_lq.attrs["has_hq"] is True and not no_lq.keypoints.any()
            assert no_lq.keypoints.shape == (2, 40, 17, 3)
            assert manifest["align"]["dropped"] == 0


def test_outlier_flagged(tmp_path):
    hq_path, lq_path = _scene(tmp_path)
    stats = align_stores(hq_path, lq_path, Work(tmp_path / "out"), AlignConfig(outlier=0.001))
    assert [o["id"] for o in stats["outliers"]] == ["S001C001P001R001A001"]
    with open_store(tmp_path / "out" / "lq.h5") as lq:
        assert lq.read("S001C001P001R001A001").attrs["align_outlier"] is True


def test_no_image_coordinates_pairs_by_order(tmp_path):
    """SYSU-like: HQ 2D estimator poses, LQ Kinect v1 3D with no image coordinates."""
    rng = np.random.default_rng(1)
    with PoseWriter(tmp_path / "hq.h5", "coco17") as hw, PoseWriter(tmp_path / "lq.h5", "kinect20") as lw:
        hw.add("P01A01", rng.uniform(100, 500, (1, 20, 17, 3)).astype(np.float32),
               label=0, split="train", image_size=[640, 480], channels="x,y,conf")
        lw.add("P01A01", rng.normal(0, 1, (1, 25, 20, 3)).astype(np.float32), channels="x,y,z")
    stats = align_stores(tmp_path / "hq.h5", tmp_path / "lq.h5", Work(tmp_path / "out"))
    assert stats["paired"] == 1 and "align_error" not in stats and stats["frame_mismatch"] == 1
    with open_store(tmp_path / "out" / "lq.h5") as lq:
        smp = lq.read("P01A01")
        assert smp.attrs["align_method"] == "order" and smp.attrs["label"] == 0
        assert smp.keypoints.shape == (2, 20, 20, 3)


def test_align_cli(tmp_path):
    hq_path, lq_path = _scene(tmp_path)
    res = CliRunner().invoke(cli, ["align", "--hq", str(hq_path), "--lq", str(lq_path),
                                   "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    out = res.output.strip().splitlines()[-1]
    assert (tmp_path / "cache" / "align").exists() and out.startswith(str(tmp_path / "cache" / "align"))
    assert "Example:" in CliRunner().invoke(cli, ["align", "--help"]).output


def test_one_detected_person_goes_to_its_hq_slot(tmp_path):
    hq_path, _ = _scene(tmp_path, swap=False)
    with open_store(tmp_path / "lq.h5") as raw:
        smp = raw.read("S001C001P001R001A001")
    one = np.zeros_like(smp.keypoints)
    one[0] = smp.keypoints[1]  # only HQ person 1 was detected, as the estimator's person 0
    with PoseWriter(tmp_path / "lq1.h5", "coco17") as w:
        w.add(smp.id, one, **smp.attrs)
    align_stores(hq_path, tmp_path / "lq1.h5", Work(tmp_path / "out"))
    with open_store(tmp_path / "out" / "lq.h5") as lq:
        out = lq.read(smp.id)
        assert not out.keypoints[0].any()
        np.testing.assert_array_equal(out.keypoints[1], smp.keypoints[1])
        assert out.attrs["reordered"] is True and out.attrs["align_pairs"] == [[1, 0]]


def test_rerun_after_kill_leaves_no_stale_files(tmp_path):
    hq_path, lq_path = _scene(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "lq.h5.partial-99999").write_bytes(b"half written")  # a killed writer's file
    align_stores(hq_path, lq_path, Work(out))
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["alignment.csv", "hq.h5", "lq.h5"]
