"""Penn Action reader: the real label files in ../shared/data (skipped when absent) and label
files written with scipy.io.savemat in the dataset's layout (uint8 and uint16 nframes)."""

from collections import Counter

import numpy as np
import pytest
from conftest import write_penn_label

from skelpipe.core.errors import SkelpipeError
from skelpipe.data.datasets import penn


def test_real_label_files(shared_data):
    root = shared_data / "penn_action"
    samples, bad = penn.scan(root)
    assert bad == [] and len(samples) == 30
    per_action = Counter((penn.ACTIONS[s.label], s.split) for s in samples)
    assert set(per_action) == {(a, sp) for a in penn.ACTIONS for sp in ("train", "test")}
    assert set(per_action.values()) == {1}                  # one train, one test per action
    for s in samples:
        label = penn.read_label_file(s.path)
        n = label["nframes"]
        assert isinstance(n, int) and n == s.nframes and label["dimensions"][2] == n
        assert label["x"].shape == label["y"].shape == label["visibility"].shape == (n, 13)
        assert label["visibility"].dtype == bool and label["bbox"].shape == (n, 4)
        assert label["action"] in penn.ACTIONS and label["pose"] in {"front", "back", "left", "right"}
        arr = penn.to_array(label)
        assert arr.shape == (1, n, 13, 3) and arr.dtype == np.float32
        np.testing.assert_allclose(arr[0, :, :, 0], label["x"], rtol=1e-6)
        np.testing.assert_array_equal(arr[0, :, :, 2], label["visibility"])
    first = penn.read_label_file(root / "labels" / "0001.mat")
    assert (first["action"], first["pose"], first["train"], first["nframes"]) == (
        "baseball_pitch", "back", False, 151)
    assert first["dimensions"] == (360, 480, 151)
    assert first["x"][0, 0] == 136.5 and first["y"][0, 0] == 71.25
    long = penn.read_label_file(root / "labels" / "0702.mat")   # nframes stored as uint16
    assert long["nframes"] == 318 and long["x"].shape == (318, 13)


@pytest.mark.parametrize("nframes, dtype", [(40, np.uint8), (255, np.uint8), (300, np.uint16)])
def test_written_label_file_round_trip(tmp_path, nframes, dtype):
    path = tmp_path / "0042.mat"
    written = write_penn_label(path, n=nframes, nframes_dtype=dtype, train=-1)
    label = penn.read_label_file(path)
    assert label["nframes"] == nframes and type(label["nframes"]) is int
    assert label["nframes"] + 1 == nframes + 1                 # no uint8 wrap-around
    assert (label["action"], label["pose"], label["train"]) == ("tennis_serve", "left", False)
    assert label["label"] == penn.ACTIONS.index("tennis_serve") == 14
    for name in ("x", "y", "bbox"):
        np.testing.assert_array_equal(label[name], written[name])
    np.testing.assert_array_equal(label["visibility"], written["visibility"].astype(bool))
    assert label["dimensions"] == (270, 480, nframes)
    arr = penn.to_array(label)
    assert arr.shape == (1, nframes, 13, 3)
    np.testing.assert_allclose(arr[0, ..., 1], written["y"], rtol=1e-6)


@pytest.mark.parametrize("kwargs, message", [
    ({"drop": ("x",)}, "missing field 'x'"),
    ({"drop": ("train",)}, "missing field 'train'"),
    ({"x": np.zeros((40, 12))}, "field 'x' has shape (40, 12)"),
    ({"visibility": np.zeros((39, 13))}, "field 'visibility' has shape (39, 13)"),
    ({"visibility": np.full((40, 13), 2)}, "field 'visibility' holds values other than 0 and 1"),
    ({"train": np.array([[0]])}, "field 'train' is 0"),
    ({"action": "dancing"}, "field 'action' is 'dancing'"),
    ({"action": np.array([[1.0]])}, "field 'action' is not a string"),
    ({"nframes": np.array([[40, 41]])}, "field 'nframes' should hold 1 integer"),
    ({"bbox": np.zeros((40, 3))}, "field 'bbox' has shape (40, 3)"),
    ({"dimensions": np.array([[270, 480]])}, "field 'dimensions' should hold 3 integer"),
])
def test_bad_label_files_name_file_and_field(tmp_path, kwargs, message):
    path = tmp_path / "0007.mat"
    write_penn_label(path, **kwargs)
    with pytest.raises(SkelpipeError) as err:
        penn.read_label_file(path)
    assert str(path) in str(err.value) and message in str(err.value), str(err.value)


def test_not_a_mat_file(tmp_path):
    path = tmp_path / "0001.mat"
    path.write_bytes(b"this is not MATLAB data at all")
    with pytest.raises(SkelpipeError, match="0001.mat: not a readable MATLAB label file"):
        penn.read_label_file(path)
    with pytest.raises(SkelpipeError, match="no such label file"):
        penn.read_label_file(tmp_path / "0002.mat")


def test_scan_reports_bad_files_and_continues(tmp_path):
    (tmp_path / "labels").mkdir()
    write_penn_label(tmp_path / "labels" / "0001.mat", action="bowl", train=1)
    write_penn_label(tmp_path / "labels" / "0002.mat", action="squat", train=-1, n=33)
    write_penn_label(tmp_path / "labels" / "0003.mat", drop=("y",))
    (tmp_path / "labels" / "0004.mat").write_bytes(b"garbage")
    samples, bad = penn.scan(tmp_path)
    assert [(s.video_id, penn.ACTIONS[s.label], s.split, s.nframes) for s in samples] == [
        ("0001", "bowl", "train", 40), ("0002", "squat", "test", 33)]
    assert [p.rsplit("/", 1)[1] for p, _ in bad] == ["0003.mat", "0004.mat"]
    assert "missing field 'y'" in bad[0][1]
    found = penn.scan(tmp_path / "labels")                 # the labels folder itself
    assert found.samples == samples and found.paths == [s.path for s in samples]
    with pytest.raises(SkelpipeError, match="no such directory"):
        penn.scan(tmp_path / "nope")


def test_frame_folders(tmp_path):
    assert penn.frames_dir(tmp_path, 7) == tmp_path / "frames" / "0007"
    assert penn.frames_dir(tmp_path, "labels/0123.mat") == tmp_path / "frames" / "0123"
    folder = tmp_path / "frames" / "0007"
    folder.mkdir(parents=True)
    with pytest.raises(SkelpipeError, match="no frames"):
        penn.frame_files(tmp_path, "0007")
    for i in (2, 1, 10):
        (folder / f"{i:06d}.jpg").write_bytes(b"")
    assert [p.name for p in penn.frame_files(tmp_path, 7)] == ["000001.jpg", "000002.jpg",
                                                               "000010.jpg"]
    with pytest.raises(SkelpipeError, match="not a Penn Action video id"):
        penn.video_id("abc")


def _samples(per_class):
    """Penn samples: ``per_class[c]`` training samples of class c, and as many test samples."""
    out, vid = [], 1
    for c, n in enumerate(per_class):
        for split in ("train", "test"):
            for _ in range(n):
                out.append(penn.Sample(f"{vid:04d}", None, c, split, 40))
                vid += 1
    return out


def test_dev_split_is_a_stratified_seeded_holdout_of_the_training_set():
    samples = _samples([10, 20, 7])
    dev = penn.dev_split(samples, fraction=0.3, seed=0)
    train_ids = {s.video_id for s in samples if s.split == "train"}
    assert set(dev) == train_ids                                   # the official test split never enters
    held = Counter(s.label for s in samples if dev.get(s.video_id) == "test")
    assert held == {0: 3, 1: 6, 2: 2}                              # 30 % of each class, rounded
    assert dev == penn.dev_split(samples, fraction=0.3, seed=0)
    assert dev != penn.dev_split(samples, fraction=0.3, seed=1)
    with pytest.raises(SkelpipeError, match="dev_fraction"):
        penn.dev_split(samples, fraction=1.0)


def test_dev_split_of_the_real_training_labels(shared_data):
    found = penn.scan(shared_data / "penn_action" / "train_labels")
    assert found.bad == [] and len(found.samples) == 1258
    assert {s.split for s in found.samples} == {"train"}
    dev = penn.dev_split(found.samples)
    assert Counter(dev.values()) == {"train": 882, "test": 376}
    per_class = Counter(s.label for s in found.samples)
    held = Counter(s.label for s in found.samples if dev[s.video_id] == "test")
    assert all(abs(held[c] - 0.3 * n) <= 0.5 for c, n in per_class.items())


def test_dev_split_in_the_skeleton_stage(tmp_path):
    from skelpipe.data import sources
    from skelpipe.pipeline.cache import Cache
    from skelpipe.skeleton.store import open_store

    labels = tmp_path / "labels"
    labels.mkdir()
    for i in range(12):
        write_penn_label(labels / f"{i + 1:04d}.mat", action=penn.ACTIONS[i % 2], train=1 if i < 8 else -1)

    stage = Cache(tmp_path / "cache").stage("skeletons", 1, {"split": "dev"})
    with stage.run() as work:
        out = sources.write_dataset_store("penn", {"split": "dev", "dev_fraction": 0.25}, tmp_path,
                                          work.dir / "dev.h5", work)
        with open_store(out) as store:
            splits = {sid: store.read_attrs(sid)["split"] for sid in store.ids()}
    assert set(splits) == {f"{i + 1:04d}" for i in range(8)}        # official test files left out
    assert Counter(splits.values()) == {"train": 6, "test": 2}
    with pytest.raises(SkelpipeError, match="data.split"):
        with Cache(tmp_path / "cache").stage("skeletons", 1, {"split": "val"}).run() as work:
            sources.write_dataset_store("penn", {"split": "val"}, tmp_path, work.dir / "x.h5", work)
