import os
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from skelpipe.core.errors import SkelpipeError
from skelpipe.skeleton.store import PoseWriter, merge_stores, open_store


def _kp(m=2, t=5, v=17, c=3, seed=0):
    return np.random.default_rng(seed).normal(size=(m, t, v, c)).astype(np.float32)


def test_round_trip(tmp_path):
    path = tmp_path / "poses.h5"
    with PoseWriter(path, "coco17", attrs={"source": "simulated:test", "fps": 30.0}) as w:
        w.add("a", _kp(seed=1), arrays={"score": np.ones((2, 5))}, label=3, split="train",
              image_size=(640, 480))
        w.add("b", _kp(t=7, seed=2), label=4, split="test")
    with open_store(path) as s:
        assert s.layout.name == "coco17"
        assert s.attrs["source"] == "simulated:test" and s.attrs["fps"] == 30.0
        assert s.attrs["joints"][0] == "nose"
        assert s.ids() == ["a", "b"] and len(s) == 2 and "a" in s and "c" not in s
        a = s.read("a")
        np.testing.assert_array_equal(a.keypoints, _kp(seed=1))
        np.testing.assert_array_equal(a.arrays["score"], np.ones((2, 5)))
        assert a.attrs == {"label": 3, "split": "train", "image_size": [640, 480]}
        assert [smp.keypoints.shape[1] for smp in s.iterate()] == [5, 7]
        with pytest.raises(SkelpipeError, match="no sample 'c'"):
            s.read("c")


def test_wrong_joint_count_names_file(tmp_path):
    with pytest.raises(SkelpipeError, match=r"poses.h5: sample x: keypoints must be \(M, T, 25, C\)"):
        with PoseWriter(tmp_path / "poses.h5", "ntu25") as w:
            w.add("x", _kp(v=17))
    assert not list(tmp_path.iterdir())  # aborted writer leaves nothing


def test_rejects_foreign_and_incomplete_files(tmp_path):
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(SkelpipeError, match="other.h5: not a skelpipe pose store"):
        open_store(tmp_path / "other.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(SkelpipeError, match="junk.h5: not a readable HDF5 file"):
        open_store(tmp_path / "junk.h5")
    with pytest.raises(SkelpipeError, match="missing.h5: no such pose store"):
        open_store(tmp_path / "missing.h5")
    w = PoseWriter(tmp_path / "half.h5", "coco17")
    w.add("a", _kp())
    w.file.close()  # a writer that never finished, its temp file moved into place by hand
    os.replace(w.tmp, tmp_path / "half.h5")
    with pytest.raises(SkelpipeError, match="half.h5: incomplete pose store"):
        open_store(tmp_path / "half.h5")


WRITER = """
import sys, numpy as np
from skelpipe.skeleton.store import PoseWriter
with PoseWriter(sys.argv[1], "coco17") as w:
    for i in range(100000):
        w.add(f"s{i}", np.zeros((2, 50, 17, 3), np.float32))
        if i == 20:
            print("writing", flush=True)
"""


def test_sigkilled_writer_leaves_nothing_readable(tmp_path):
    path = tmp_path / "poses.h5"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"writing"
    time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not path.exists()
    with pytest.raises(SkelpipeError, match="no such pose store"):
        open_store(path)


def test_merge(tmp_path):
    for name, ids in (("a.h5", ["x", "y"]), ("b.h5", ["z"])):
        with PoseWriter(tmp_path / name, "coco17", attrs={"backbone": "k16"}) as w:
            for i in ids:
                w.add(i, _kp(seed=len(i)), label=1)
    merge_stores(tmp_path / "all.h5", [tmp_path / "a.h5", tmp_path / "b.h5"], attrs={"shards": 2})
    with open_store(tmp_path / "all.h5") as s:
        assert s.ids() == ["x", "y", "z"]
        assert s.attrs["backbone"] == "k16" and s.attrs["shards"] == 2
        assert s.read("z").attrs["label"] == 1
    with pytest.raises(SkelpipeError, match="also in another input"):
        merge_stores(tmp_path / "dup.h5", [tmp_path / "a.h5", tmp_path / "a.h5"])
    assert not (tmp_path / "dup.h5").exists()
