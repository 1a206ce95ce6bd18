"""Crash-safe writes: the target holds the old or the new content, never a half; temporaries of
killed writers are found and removed."""

import pytest

from skelpipe.core import atomic


def test_replacing_commits_on_success_and_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "data.h5"
    atomic.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic.replacing(target) as tmp:
            assert tmp.suffix == ".h5" and tmp.parent == tmp_path
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["data.h5"]
    atomic.write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'


def test_remove_stale_removes_only_the_targets_temporaries(tmp_path):
    target = tmp_path / "data.h5"
    with atomic.replacing(target) as tmp:
        tmp.write_text("new")
        stale = tmp.with_name(tmp.name.replace(tmp.name.split("-")[1].split(".")[0], "99999"))
        stale.write_text("left by a killed writer")
    (tmp_path / "other.h5").write_text("keep")
    atomic.remove_stale(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.h5", "other.h5"]
