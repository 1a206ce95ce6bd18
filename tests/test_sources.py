"""Dataset skeletons → pose store (the pipeline's first stage): NTU .skeleton files written in
the dataset's format, the real Penn labels, the demo; bad files reported, chunks resumable."""

import numpy as np
import pytest
from conftest import SKELETON_FRAMES, skeleton_text

from skelpipe.core.errors import SkelpipeError
from skelpipe.data import sources
from skelpipe.pipeline.cache import Cache
from skelpipe.skeleton.store import open_store


def _ntu_root(tmp_path):
    root = tmp_path / "ntu" / "nturgb+d_skeletons"
    root.mkdir(parents=True)
    for name in ("S001C001P001R001A001", "S001C002P003R002A013", "S002C003P008R001A060"):
        (root / f"{name}.skeleton").write_bytes(skeleton_text(SKELETON_FRAMES))
    (root / "S001C001P001R001A002.skeleton").write_bytes(skeleton_text(SKELETON_FRAMES)[:300])  # truncated
    # on the missing list
    (root / "S001C002P005R002A008.skeleton").write_bytes(skeleton_text(SKELETON_FRAMES))
    return root.parent


def test_ntu_store(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "CHUNK", 2)  # several chunks, each its own resumable unit
    stage = Cache(tmp_path / "cache").stage("skeletons", 1, {"dataset": "ntu"})
    with stage.run() as work:
        sources.write_dataset_store("ntu", {"version": 60}, _ntu_root(tmp_path), work.dir / "s.h5", work)
        assert len(work.done_units()) == 2
    manifest = stage.manifest()
    assert [b["item"] for b in manifest["bad_items"]] == ["S001C001P001R001A002"]
    assert "S001C001P001R001A002.skeleton: truncated" in manifest["bad_items"][0]["reason"]
    with open_store(stage.path / "s.h5") as s:
        assert s.layout.name == "ntu25" and s.ids() == ["S001C001P001R001A001", "S001C002P003R002A013",
                                                         "S002C003P008R001A060"]
        smp = s.read("S001C002P003R002A013")
        assert smp.attrs["label"] == 12 and smp.attrs["label_name"] == "tear up paper"
        assert smp.keypoints.shape == (2, 4, 25, 3) and smp.arrays["color_xy"].shape == (2, 4, 25, 2)
        # frame 2 has nobody: zeros for both bodies
        assert not smp.keypoints[:, 2].any()
    assert not list(stage.path.glob("chunk*"))


def test_penn_store_from_real_labels(shared_data, tmp_path):
    stage = Cache(tmp_path / "cache").stage("skeletons", 1, {"dataset": "penn"})
    with stage.run() as work:
        sources.write_dataset_store("penn", {}, shared_data / "penn_action", work.dir / "s.h5", work)
    with open_store(stage.path / "s.h5") as s:
        assert len(s) == 30 and s.layout.name == "penn13"
        splits = [s.read(i).attrs["split"] for i in s.ids()]
        assert splits.count("train") == 15 and splits.count("test") == 15
        smp = s.read("0001")
        assert smp.attrs["label_name"] == "baseball_pitch" and smp.keypoints.shape[2:] == (13, 3)
        assert set(np.unique(smp.keypoints[..., 2])) <= {0.0, 1.0}


def test_demo_store(tmp_path):
    stage = Cache(tmp_path / "cache").stage("skeletons", 1, {"dataset": "demo"})
    with stage.run() as work:
        sources.write_dataset_store("demo", {"subjects": 3, "reps": 1}, None, work.dir / "s.h5", work)
    with open_store(stage.path / "s.h5") as s:
        assert s.layout.name == "ntu25" and len(s) == 3 * 12


def test_missing_root_and_videos(tmp_path):
    with pytest.raises(SkelpipeError, match="no data root"):
        sources.dataset_videos("ntu", {}, None)
    (tmp_path / "nturgb+d_rgb").mkdir()
    (tmp_path / "nturgb+d_rgb" / "S001C001P001R001A001_rgb.avi").write_bytes(b"x")
    assert sources.dataset_videos("ntu", {}, tmp_path) == [  # labelled from the sample name
        ("S001C001P001R001A001", tmp_path / "nturgb+d_rgb" / "S001C001P001R001A001_rgb.avi",
         {"label": 0, "label_name": "drink water"})]
    with pytest.raises(SkelpipeError, match="no .*frames"):
        sources.dataset_videos("penn", {}, tmp_path)
