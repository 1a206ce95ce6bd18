import json

import h5py
import numpy as np
import pytest
import torch

from skelpipe.core.errors import SkelpipeError
from skelpipe.core.work import Work
from skelpipe.data.pack import PackConfig, frame_indices, normalise_2d, normalise_3d, pack
from skelpipe.data.split import DiskRows, degrade, load_split
from skelpipe.pipeline.cache import Cache
from skelpipe.pipeline.stages import run_pack
from skelpipe.skeleton import layouts
from skelpipe.skeleton.noise import instance_seeds, occlusion_mask, sample_keys
from skelpipe.skeleton.store import PoseWriter


def _aligned_pair(d, n=12, classes=3, T=40, no_hq=()):
    """A hand-made aligned pair: ntu25 3D HQ and coco17 2D LQ (1920x1080), 2 people."""
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    with PoseWriter(d / "hq.h5", "ntu25", {"source": "kinect_v2"}) as hw, \
            PoseWriter(d / "lq.h5", "coco17", {"source": "simulated:shufflenetv2k16",
                                              "extractor": "simulated"}) as lw:
        for i in range(n):
            sid = f"s{i:03d}"
            t = T - i % 12  # different lengths
            label = i % classes
            split = "train" if i < n * 2 // 3 else "test"
            hq = rng.normal(0, 0.3, (2, t, 25, 3)).astype(np.float32) + [0.0, 0.0, 3.0]
            hq[1] = 0  # one person
            lq = np.zeros((2, t, 17, 3), np.float32)
            lq[0, ..., 0] = rng.uniform(100, 1800, (t, 17))
            lq[0, ..., 1] = rng.uniform(100, 1000, (t, 17))
            lq[0, ..., 2] = rng.uniform(0.1, 1, (t, 17))
            lq[0, 3, 5] = 0  # a missed joint
            attrs = dict(label=label, label_name=f"class{label}", split=split, image_size=[1920, 1080])
            lw.add(sid, lq, channels="x,y,conf", has_hq=i not in no_hq, **attrs)
            if i not in no_hq:
                hw.add(sid, hq, channels="x,y,z", **attrs)
    return d


def test_normalise_2d_exact():
    kp = np.zeros((1, 2, 17, 3), np.float32)
    kp[0, 0, 0] = [960, 540, 0.9]
    kp[0, 0, 1] = [1920, 0, 0.5]
    out = normalise_2d(kp, (1920, 1080))
    np.testing.assert_allclose(out[0, 0, 0], [0, 0, 0.9])
    np.testing.assert_allclose(out[0, 0, 1], [0.5, -540 / 1920, 0.5])
    assert not out[0, 1].any() and not out[0, 0, 2:].any()  # missing joints stay zero


def test_normalise_3d_centres_spine_mid_of_first_frame():
    kp = np.zeros((2, 3, 25, 3), np.float32)
    kp[0, 1:] = np.arange(25 * 3).reshape(25, 3) + 1.0  # person 0 appears at frame 1
    kp[1, :] = 5.0
    out = normalise_3d(kp, layouts.get("ntu25"))
    np.testing.assert_allclose(out[0, 1, 1], 0)  # spine_mid (index 1) is the origin
    np.testing.assert_allclose(out[1, 0, 0], 5.0 - kp[0, 1, 1])
    assert not out[0, 0].any()  # absent frame stays zero


def test_frame_indices():
    assert list(frame_indices(5, PackConfig(frames=10))) == [0, 1, 2, 3, 4]
    assert list(frame_indices(20, PackConfig(frames=10))) == list(range(10))
    idx = frame_indices(100, PackConfig(sample_frames=5))
    assert list(idx) == [0, 25, 50, 74, 99]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_pack_and_load_split(tmp_path, dtype):
    d = _aligned_pair(tmp_path / "aligned", no_hq=(1,))
    counts = pack(d, Work(tmp_path), frames=32, dtype=dtype)
    assert counts["train"]["n"] == 8 and counts["test"]["n"] == 4
    sp = load_split(tmp_path / "data.h5", "train")
    assert sp.lq.dtype == np.float32 and sp.hq.dtype == np.float32
    assert sp.lq.shape == (8, 3, 32, 17, 2) and sp.hq.shape == (8, 3, 32, 25, 2)
    assert sp.label.dtype == np.int64 and list(sp.label) == [0, 1, 2, 0, 1, 2, 0, 1]
    assert sp.ids[:2] == ["s000", "s001"]
    assert sp.has_hq.tolist() == [True, False] + [True] * 6
    assert not sp.hq[1].any()  # no HQ: zeros
    assert sp.attrs["hq_layout"] == "ntu25" and sp.attrs["lq_layout"] == "coco17"
    assert sp.attrs["class_names"] == ["class0", "class1", "class2"] and sp.attrs["num_classes"] == 3
    assert sp.attrs["T"] == 32 and sp.attrs["extractor"] == "simulated"
    assert "max(W,H)" in sp.attrs["lq_normalisation"] and "spine_mid" in sp.attrs["hq_normalisation"]
    # lengths, truncation and padding: s000 has 40 frames (truncated to 32), s009 31 (padded)
    assert sp.length[0] == 32
    assert np.abs(sp.lq[:, :2]).max() <= 0.5 + 1e-3
    assert not sp.lq[:, :, :, :, 1].any()  # second person absent
    assert sp.lq[0, :, 3, 5, 0].tolist() == [0, 0, 0]  # the missed joint stays zero
    te = load_split(tmp_path / "data.h5", "test")
    assert te.length.tolist() == [32, 31, 30, 29] and not te.lq[1, :, 31:].any() and te.lq[1, :, 30].any()
    assert te.has_hq.all()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_disk_rows_read_what_memory_holds(tmp_path, dtype):
    d = _aligned_pair(tmp_path / "aligned", no_hq=(1,))
    pack(d, Work(tmp_path), frames=32, dtype=dtype)
    full = load_split(tmp_path, "train")
    disk = load_split(tmp_path, "train", rows="disk")
    assert isinstance(disk.lq, DiskRows) and disk.lq.shape == full.lq.shape and len(disk.hq) == len(full.hq)
    assert disk.lq.dtype == np.dtype(dtype) and disk.hq.dtype == np.dtype(dtype)  # the stored dtype
    for index in (slice(None), slice(2, 5), slice(1, 8, 3), [4, 0, 4, 7], np.array([6, 2]),
                  torch.tensor([3, 1]), np.arange(8) % 2 == 0):
        got = disk.lq[index]
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), full.lq[index])
    np.testing.assert_array_equal(disk.hq[5].numpy(), full.hq[5])
    assert not disk.hq[[1]].any()  # the unwritten row (no HQ) reads as zeros
    assert disk.lq[[]].shape == (0,) + full.lq.shape[1:]
    with pytest.raises(IndexError):
        disk.lq[[8]]
    # "auto" keeps a split this small in memory
    assert isinstance(load_split(tmp_path, "train", rows="auto").lq, np.ndarray)


def test_disk_rows_report_a_truncated_file(tmp_path):
    d = _aligned_pair(tmp_path / "aligned")
    pack(d, Work(tmp_path), frames=32)
    disk = load_split(tmp_path, "test", rows="disk")
    with open(tmp_path / "data.h5", "r+b") as f:
        f.truncate(disk.hq.offset + disk.hq.row_bytes)
    with pytest.raises(SkelpipeError, match="truncated"):
        disk.hq[[2]]


def test_hq_fraction_draw_stored(tmp_path):
    d = _aligned_pair(tmp_path / "aligned", n=60)
    pack(d, Work(tmp_path), frames=16, hq_fraction=0.7, pair_seed=4)
    sp = load_split(tmp_path / "data.h5", "train")
    for c in range(3):
        n_c = (sp.label == c).sum()
        assert sp.has_hq[sp.label == c].sum() == int(np.floor(0.7 * n_c + 0.5))
    assert sp.hq_available.all() and sp.attrs["hq_fraction"] == 0.7
    # the test split keeps every available HQ (no draw) for the teacher's evaluation
    assert load_split(tmp_path / "data.h5", "test").has_hq.all()


def test_temporal_sampling(tmp_path):
    d = _aligned_pair(tmp_path / "aligned")
    pack(d, Work(tmp_path), sample_frames=8)
    sp = load_split(tmp_path / "data.h5", "train")
    assert sp.lq.shape[2] == 8 and sp.attrs["T"] == 8 and (sp.length == 8).all()


def test_test_occlusion_is_a_fixed_function_of_instance(tmp_path):
    d = _aligned_pair(tmp_path / "aligned")
    pack(d, Work(tmp_path), frames=32)
    te = load_split(tmp_path / "data.h5", "test")
    a = degrade(tmp_path / "data.h5", "test", 0.5, "track", seed=3)
    mask = occlusion_mask(instance_seeds(3, sample_keys(te.ids), "eval", "test"), 0.5, te.lq.shape[2:]).numpy()
    np.testing.assert_array_equal(a, te.lq * mask)
    np.testing.assert_array_equal(a, degrade(tmp_path / "data.h5", "test", 0.5, "track", seed=3))
    pack(_aligned_pair(tmp_path / "aligned2"), Work(tmp_path / "p2"), frames=32, test_seed=3)
    np.testing.assert_array_equal(a, degrade(tmp_path / "p2", "test", 0.5))  # the pack's test seed


def test_stage_cached_and_bad_instance_reported(tmp_path):
    d = _aligned_pair(tmp_path / "aligned")
    import shutil

    from skelpipe.skeleton.store import open_store
    # rebuild lq.h5 with one sample lacking image_size
    with open_store(d / "lq.h5") as src, PoseWriter(d / "lq2.h5", "coco17", src.attrs) as w:
        for s in src.iterate():
            attrs = dict(s.attrs)
            if s.id == "s002":
                attrs.pop("image_size")
            w.add(s.id, s.keypoints, **attrs)
    shutil.move(d / "lq2.h5", d / "lq.h5")
    cache = Cache(tmp_path / "cache")
    path = run_pack(cache, d, PackConfig(frames=16))
    manifest = json.loads((path / "manifest.json").read_text())
    assert [b["item"] for b in manifest["bad_items"]] == ["s002"]
    assert manifest["counts"]["train"]["n"] == 7
    assert "s002" not in load_split(path, "train").ids
    mtime = (path / "data.h5").stat().st_mtime_ns
    assert run_pack(cache, d, PackConfig(frames=16)) == path  # served from the cache
    assert (path / "data.h5").stat().st_mtime_ns == mtime
    assert run_pack(cache, d, PackConfig(frames=8)) != path  # another setting, another key


def test_unknown_setting_and_benchmark(tmp_path):
    with pytest.raises(SkelpipeError, match="unknown setting"):
        pack(tmp_path, Work(tmp_path), T=3)
    with pytest.raises(SkelpipeError, match="unknown benchmark"):
        PackConfig(benchmark="nope")


def test_ntu_benchmark_uses_sample_names_and_falls_back_to_split_attr():
    from skelpipe.data.pack import split_of
    cfg = PackConfig(benchmark="xsub")
    assert split_of("S001C001P001R001A001", {}, cfg) == "train"   # subject 1: training
    assert split_of("S001C001P003R001A001", {}, cfg) == "test"    # subject 3: test
    assert split_of("demo_s02_r0_a00", {"split": "test"}, cfg) == "test"
    assert split_of("S018C001P003R001A001", {}, cfg) is None  # NTU-120 setup
    assert split_of("S001C001P003R001A061", {}, cfg) is None  # NTU-120 action
    assert split_of("S001C001P001R001A061", {}, PackConfig(benchmark="xsub120")) == "train"
    assert split_of("x", {}, PackConfig()) is None


def test_load_split_errors(tmp_path):
    with pytest.raises(SkelpipeError, match="no packed data"):
        load_split(tmp_path, "train")
    with h5py.File(tmp_path / "data.h5", "w"):
        pass
    with pytest.raises(SkelpipeError, match="no 'train' group"):
        load_split(tmp_path, "train")
    with pytest.raises(SkelpipeError, match="unknown split"):
        load_split(tmp_path, "val")


def _penn_hq_store(labels_dir, out_path):
    """The real Penn Action label files as an HQ store (penn13, x, y, visibility)."""
    from skelpipe.data.datasets import penn

    paths = sorted(labels_dir.glob("*.mat"))
    with PoseWriter(out_path, "penn13", {"source": "human annotation", "channels": "x,y,conf",
                                         "class_names": list(penn.ACTIONS)}) as w:
        for path in paths:
            label = penn.read_label_file(path)
            h, wd = int(label["dimensions"][0]), int(label["dimensions"][1])
            w.add(path.stem, penn.to_array(label), label=penn.ACTIONS.index(label["action"]),
                  label_name=label["action"], split="train" if label["train"] else "test",
                  image_size=[wd, h], channels="x,y,conf")
    return len(paths)


def test_real_penn_labels_simulated_aligned_packed(shared_data, tmp_path):
    from skelpipe.data.align import align_stores
    from skelpipe.pose.simulate import simulate_store

    n = _penn_hq_store(shared_data / "penn_action" / "labels", tmp_path / "hq.h5")
    assert n == 30
    simulate_store(tmp_path / "hq.h5", tmp_path / "lq.h5", "resnet152", seed=0)
    stats = align_stores(tmp_path / "hq.h5", tmp_path / "lq.h5", Work(tmp_path / "aligned"))
    assert stats["paired"] == 30 and stats["no_lq_person"] == 0 and not stats["outliers"]
    assert stats["align_error"]["max"] < 0.05  # resnet152 profile: about 1-2 % of body size
    counts = pack(tmp_path / "aligned", Work(tmp_path / "pack"), frames=150, dtype="float16")
    assert counts["train"]["n"] == 15 and counts["test"]["n"] == 15
    tr, te = load_split(tmp_path / "pack", "train"), load_split(tmp_path / "pack", "test")
    assert tr.lq.shape == (15, 3, 150, 17, 2) and tr.hq.shape == (15, 3, 150, 13, 2)
    assert sorted(tr.label.tolist()) == list(range(15)) == sorted(te.label.tolist())
    assert tr.attrs["lq_source"] == "simulated:resnet152" and tr.attrs["extractor"] == "simulated"
    assert tr.attrs["class_names"][0] == "baseball_pitch" and tr.attrs["num_classes"] == 15
    assert tr.has_hq.all() and not tr.lq[..., 1].any()  # one person
    # normalised coordinates of the annotated joints lie inside the image box
    assert np.abs(tr.hq[:, :2]).max() <= 0.5 + 1e-2 and np.abs(tr.lq[:, :2]).max() <= 0.5 + 1e-2


def test_pack_cli(tmp_path):
    from click.testing import CliRunner

    from skelpipe.cli import cli

    d = _aligned_pair(tmp_path / "aligned")
    res = CliRunner().invoke(cli, ["pack", "--aligned", str(d), "--frames", "16", "--float16",
                                   "--hq-fraction", "0.5", "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    path = res.output.strip().splitlines()[-1]
    sp = load_split(path, "train")
    assert sp.lq.shape[2] == 16 and sp.attrs["dtype"] == "float16" and sp.has_hq.sum() == 5
    assert "Example:" in CliRunner().invoke(cli, ["pack", "--help"]).output


def test_sysu_settings_use_the_readers_seeded_splits():
    from skelpipe.data.datasets import sysu
    from skelpipe.data.pack import split_of

    ids = [sysu.sample_id(s, a) for s in range(1, 41) for a in range(12)]
    for setting in (1, 2):
        a = [split_of(i, {}, PackConfig(benchmark=f"setting{setting}", split=0)) for i in ids]
        b = [split_of(i, {}, PackConfig(benchmark=f"setting{setting}", split=1)) for i in ids]
        assert a == [sysu.split_of(i, setting, 0) for i in ids] and a != b
        assert a.count("train") == len(ids) // 2


def test_a_pack_that_cannot_give_a_result_is_an_error(tmp_path):
    """One training class, or a split with no instance: an error naming the data, no file."""
    one_class = _aligned_pair(tmp_path / "one", n=6, classes=1)
    with pytest.raises(SkelpipeError, match=r"the training split has 4 instance\(s\) of 1 class\(es\)"):
        pack(one_class, Work(tmp_path / "p1"), frames=16)
    no_train = _aligned_pair(tmp_path / "none", n=1, classes=1)  # its one instance is a test one
    with pytest.raises(SkelpipeError, match=r"puts no instance in the train split \(1 in the other\)"):
        pack(no_train, Work(tmp_path / "p2"), frames=16)
    assert not (tmp_path / "p1" / "data.h5").exists() and not (tmp_path / "p2" / "data.h5").exists()
