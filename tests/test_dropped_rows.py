"""No row or file vanishes without a word: labels.csv rows that are left out are reported with
their line numbers (on the console and in the extract stage's manifest), and one sample id in
two files or rows that disagree is refused in one line naming both, in every reader."""

import json
import pickle

import numpy as np
import pytest
import scipy.io
from click.testing import CliRunner
from conftest import noise_video, pyskl_2d, write_penn_label

from skelpipe.cli import cli
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.work import Work
from skelpipe.data import pyskl
from skelpipe.data.datasets import custom, ntu, penn, sysu


def folder_with(tmp_path, rows, videos):
    for v in videos:
        (tmp_path / v).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / v).write_bytes(b"")
    (tmp_path / "labels.csv").write_text("video,label,split\n" + "\n".join(rows) + "\n")
    return tmp_path


ROWS = ["c/w1.mp4,wave,train",        # 2
        "c/w1.mp4,wave,train",        # 3 a repeat: skipped
        "c/j1.mp4,jump",              # 4 short
        "c/j2.mp4,jump,validation",   # 5 unknown split
        "c/gone.mp4,jump,test",       # 6 no such video
        "c/j3.mp4,jump,test"]         # 7


def test_every_dropped_row_is_reported_with_its_line_into_the_work(tmp_path, capsys):
    folder = folder_with(tmp_path / "data", ROWS, ["c/w1.mp4", "c/j1.mp4", "c/j2.mp4", "c/j3.mp4"])
    work = Work(tmp_path / "work")
    videos = custom.Custom().videos(folder, {}, work)
    assert [v.id for v in videos] == ["c__w1.mp4", "c__j3.mp4"]
    csv = folder / "labels.csv"
    bad = {b["item"]: b["reason"] for b in work.bad_items()}
    assert sorted(bad) == [f"{csv}:{n}" for n in (3, 4, 5, 6)]
    assert "listed again (first on line 2)" in bad[f"{csv}:3"]
    assert "2 fields, expected 3" in bad[f"{csv}:4"]
    assert "'validation' is not train or test" in bad[f"{csv}:5"]
    assert "no such video" in bad[f"{csv}:6"]
    err = capsys.readouterr().err
    assert all(f"labels.csv:{n}" in err for n in (3, 4, 5, 6)), err


@pytest.mark.parametrize("rows,videos,says", [
    (["c/w1.mp4,wave,train", "c/w1.mp4,jump,train"], ["c/w1.mp4"],
     "labels.csv:3: {d}/c/w1.mp4 listed again as 'jump' train (line 2: 'wave' train)"),
    (["c/w1.mp4,wave,train", "./c//w1.mp4,wave,test"], ["c/w1.mp4"], "(line 2: 'wave' train)"),
    (["c/w1.mp4,wave,", "c/w1.mp4,wave,test"], ["c/w1.mp4"], "(line 2: 'wave' (auto))"),
    (["a/b.mp4,wave,train", "a__b.mp4,wave,train"], ["a/b.mp4", "a__b.mp4"],
     "labels.csv:3: {d}/a__b.mp4 and {d}/a/b.mp4 (line 2) both become the sample id 'a__b.mp4'"),
])
def test_rows_that_disagree_about_one_sample_are_refused(tmp_path, rows, videos, says):
    folder = folder_with(tmp_path, rows, videos)
    with pytest.raises(SkelpipeError) as err:
        custom.read_labels(folder)
    assert says.format(d=folder) in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_penn_refuses_two_label_files_of_one_video(tmp_path):
    """``1.mat`` beside ``0001.mat`` had given two samples of one clip: with data.split=dev an
    official test file joined the dev split and one clip landed in dev-train and dev-test."""
    labels = tmp_path / "labels"
    labels.mkdir()
    for i in range(1, 5):
        write_penn_label(labels / f"{i:04d}.mat", train=1)
    write_penn_label(labels / "1.mat", train=-1)
    with pytest.raises(SkelpipeError) as err:
        penn.scan(tmp_path)
    assert str(err.value) == (f"{labels / '0001.mat'} and {labels / '1.mat'} are the same Penn Action video "
                              "'0001'; remove one")
    (labels / "1.mat").unlink()
    assert [s.video_id for s in penn.scan(tmp_path).samples] == ["0001", "0002", "0003", "0004"]


def test_penn_skeletons_take_the_video_id_as_sample_id(tmp_path):
    """A label file named ``7.mat`` gives sample ``0007``, the id of its frame folder."""
    labels = tmp_path / "labels"
    labels.mkdir()
    write_penn_label(labels / "7.mat")
    skeletons = penn.Penn().skeletons(tmp_path, {}, Work(tmp_path / "w"))
    assert [item[0] for item in skeletons.items] == ["0007"]
    assert skeletons.read(skeletons.items[0])[0] == "0007"


def test_penn_refuses_two_frame_folders_of_one_video(tmp_path):
    for name in ("0003", "3"):
        (tmp_path / "frames" / name).mkdir(parents=True)
    with pytest.raises(SkelpipeError, match=r"frames/0003 and .*frames/3 are the same Penn Action video"):
        penn.Penn().videos(tmp_path, {})


def test_ntu_refuses_one_sample_in_two_files(tmp_path):
    for sub in ("a", "b/c"):
        (tmp_path / sub).mkdir(parents=True)
        (tmp_path / sub / "S001C001P001R001A001.skeleton").write_text("1\n")
    with pytest.raises(SkelpipeError) as err:
        ntu.scan(tmp_path, "xsub")
    assert str(err.value) == (f"{tmp_path / 'a' / 'S001C001P001R001A001.skeleton'} and "
                              f"{tmp_path / 'b' / 'c' / 'S001C001P001R001A001.skeleton'} are the same NTU "
                              "sample 'S001C001P001R001A001'; remove one")


def test_sysu_refuses_one_video_in_two_folders(tmp_path):
    for name in ("video3", "video03"):
        (tmp_path / "1" / name).mkdir(parents=True)
        scipy.io.savemat(str(tmp_path / "1" / name / "sklWorld.mat"), {"SW": np.zeros((20, 3, 4))})
    with pytest.raises(SkelpipeError, match=r"video0?3 and .*video0?3 are the same SYSU 3D HOI video"):
        sysu.scan(tmp_path)


def test_pyskl_refuses_a_repeated_sample_and_one_in_both_splits(tmp_path):
    data = pyskl_2d()
    data["annotations"].append(dict(data["annotations"][1], label=2))
    path = tmp_path / "dup.pkl"
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(SkelpipeError) as err:
        pyskl.read(path)
    assert str(err.value) == (f"{path}: annotations 1 and 4 are both 'S001C001P002R001A002'; "
                              "a sample id must be unique")
    data = pyskl_2d()
    data["split"]["xsub_val"].append(data["split"]["xsub_train"][0])
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(SkelpipeError) as err:
        pyskl.import_store(path, tmp_path / "out.h5", "xsub")
    assert str(err.value) == f"{path}: S001C001P001R001A001 is in both xsub_train and xsub_val"
    assert not (tmp_path / "out.h5").exists()


CUSTOM = """name = "mine"
dataset = "custom"
[extract]
long_edge = 161
decoder_workers = 0
decoder = {{ cif_neighbors = 1 }}
[sources.a]
kind = "estimator"
backbone = "mobilenetv3small"
checkpoint = "{checkpoint}"
[[settings]]
name = "s"
hq = "a"
lq = "a"
[teacher]
[student]
[[experiments]]
kd = ["none"]
"""


def test_the_extract_stage_reports_dropped_rows_in_its_manifest_and_reuses_its_output(tmp_path):
    pytest.importorskip("openpifpaf", reason="OpenPifPaf is not installed (skelpipe install-openpifpaf)")
    from skelpipe.pose import network

    checkpoint = network.random_checkpoint("mobilenetv3small", tmp_path / "k.pkl", biased=True)
    folder = folder_with(tmp_path / "data", ROWS, ["c/j1.mp4", "c/j2.mp4"])
    for name in ("w1", "j3"):
        noise_video(folder / "c" / f"{name}.mp4", n=3)
    pipeline = tmp_path / "mine.toml"
    pipeline.write_text(CUSTOM.format(checkpoint=checkpoint))
    args = ["run-all", str(pipeline), "--until", "extract", "--data-root", str(folder),
            "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    (stage,) = (tmp_path / "cache" / "extract").glob("*/manifest.json")
    manifest = json.loads(stage.read_text())
    csv = folder / "labels.csv"
    assert sorted(b["item"] for b in manifest["bad_items"]) == [f"{csv}:{n}" for n in (3, 4, 5, 6)]
    assert manifest["units"] == 2 and sorted(manifest["files"]) == ["skeletons.h5"]  # per-video files merged
    assert all(f"labels.csv:{n}" in result.output for n in (3, 4, 5, 6))
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 0 and "skipped" not in again.output  # reused as it is: nothing re-read
