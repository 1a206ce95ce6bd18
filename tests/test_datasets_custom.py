"""Custom datasets: labels.csv (video,label[,split]) read with videos resolved against the
folder, bad rows reported with their line numbers, and the seeded stratified auto split."""

from collections import Counter

import pytest

from skelpipe.core.errors import SkelpipeError
from skelpipe.data.datasets import custom


def make_folder(tmp_path, csv_text, videos):
    for v in videos:
        (tmp_path / v).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / v).write_bytes(b"")
    (tmp_path / "labels.csv").write_text(csv_text)
    return tmp_path


def test_labels_with_splits_and_bad_rows(tmp_path):
    outside = tmp_path / "elsewhere" / "far.mp4"
    folder = make_folder(tmp_path / "data", "\n".join([
        "video,label,split",
        "clips/w1.mp4,wave,train",           # 2
        "clips/w2.mp4,wave,TEST",            # 3 (case-insensitive split)
        "clips/missing.mp4,wave,train",      # 4 bad: no such video
        "",                                  # 5 blank: skipped
        "clips/j1.mp4,jump,validation",      # 6 bad: unknown split
        "clips/j2.mp4,jump",                 # 7 bad: 2 fields
        "clips//w1.mp4,wave,train",          # 8 bad: a repeat of line 2
        "clips/j3.mp4,,train",               # 9 bad: empty label
        f"{outside},jump,test",              # 10 absolute path
        '"clips/a, b.mp4",clap,train',       # 11 quoted comma
    ]) + "\n", ["clips/w1.mp4", "clips/w2.mp4", "clips/j1.mp4", "clips/j2.mp4", "clips/j3.mp4",
                "clips/a, b.mp4"])
    outside.parent.mkdir(parents=True)
    outside.write_bytes(b"")
    labels = custom.read_labels(folder)
    assert labels.class_names == ["clap", "jump", "wave"]
    assert [(i.id, i.label_name, i.label, i.split, i.line) for i in labels] == [
        ("clips__w1.mp4", "wave", 2, "train", 2), ("clips__w2.mp4", "wave", 2, "test", 3),
        (str(outside).strip("/").replace("/", "__"), "jump", 1, "test", 10),
        ("clips__a, b.mp4", "clap", 0, "train", 11)]
    assert not any("/" in i.id for i in labels)
    assert labels.items[0].video == folder / "clips" / "w1.mp4" and len(labels) == 4
    csv_path = str(folder / "labels.csv")
    assert [(w.rsplit(":", 1)[1], w.rsplit(":", 1)[0]) for w, _ in labels.bad] == [
        (str(n), csv_path) for n in (4, 6, 7, 8, 9)]
    reasons = dict((w.rsplit(":", 1)[1], r) for w, r in labels.bad)
    assert "no such video" in reasons["4"] and "'validation' is not train or test" in reasons["6"]
    assert "2 fields, expected 3" in reasons["7"] and "first on line 2" in reasons["8"]
    assert "empty video or label" in reasons["9"]
    assert custom.read_labels(folder / "labels.csv").items == labels.items


def test_auto_split_is_stratified_and_seeded(tmp_path):
    videos = [f"a{i}.mp4" for i in range(10)] + [f"b{i}.mp4" for i in range(5)] + ["c0.mp4"]
    rows = [f"{v},{v[0]}" for v in videos]
    folder = make_folder(tmp_path, "video,label\n" + "\n".join(rows) + "\n", videos)
    labels = custom.read_labels(folder)
    tests = Counter(i.label_name for i in labels if i.split == "test")
    assert tests == {"a": 2, "b": 1}                         # 20 %, at least one; c has one video
    assert [i.split for i in labels] == [i.split for i in custom.read_labels(folder)]
    other_seed = [i.split for i in custom.read_labels(folder, seed=1)]
    assert Counter(s for s, i in zip(other_seed, labels) if i.label_name == "a")["test"] == 2
    assert all(i.split == "train" for i in custom.read_labels(folder, test_fraction=0))


def test_explicit_splits_kept_and_empty_cells_auto_split(tmp_path):
    videos = [f"v{i}.mp4" for i in range(6)]
    text = "video,label,split\n" + "".join(f"v{i}.mp4,x,{'test' if i == 0 else ''}\n"
                                           for i in range(6))
    labels = custom.read_labels(make_folder(tmp_path, text, videos))
    splits = {i.video.name: i.split for i in labels}
    assert splits["v0.mp4"] == "test"
    assert Counter(s for v, s in splits.items() if v != "v0.mp4") == {"train": 4, "test": 1}


@pytest.mark.parametrize("text, message", [
    ("file,class\na.mp4,x\n", "line 1: header must be video,label or video,label,split; got file,class"),
    ("", "got nothing"),
    ("video,label\nnope.mp4,x\n", "no usable row (1 bad; first: line 2: no such video"),
])
def test_bad_files(tmp_path, text, message):
    (tmp_path / "labels.csv").write_text(text)
    with pytest.raises(SkelpipeError) as err:
        custom.read_labels(tmp_path)
    assert str(tmp_path / "labels.csv") in str(err.value) and message in str(err.value), str(err.value)


def test_missing_labels_file(tmp_path):
    with pytest.raises(SkelpipeError, match="labels.csv: no such file"):
        custom.read_labels(tmp_path)


def test_videos_carry_their_labels_and_splits_into_extraction(tmp_path):
    """What ``Custom.videos`` hands to extraction: each video with its label and split, so the
    extracted poses can be packed (the dataset has no skeletons of its own)."""
    folder = make_folder(tmp_path, "video,label,split\nc/w1.mp4,wave,train\nc/j1.mp4,jump,test\n",
                         ["c/w1.mp4", "c/j1.mp4"])
    videos = {v.id: v for v in custom.Custom().videos(folder, {})}
    assert videos["c__w1.mp4"].attrs == {"label": 1, "label_name": "wave", "split": "train"}
    assert videos["c__j1.mp4"].attrs == {"label": 0, "label_name": "jump", "split": "test"}
    assert videos["c__j1.mp4"].path == folder / "c" / "j1.mp4"
