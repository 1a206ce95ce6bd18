"""A cache that checks what it reuses: each finished stage's manifest records its files (size,
checksum); a stage whose files changed since is "damaged", shown so by ``cache ls``, reported in
one line and recomputed by the next run, and never reused."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import DEMO_TINY_NETS, run_outcome

from skelpipe.cli import cli
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fingerprint import END_BYTES
from skelpipe.pipeline.cache import Cache

BIG = 3 * END_BYTES + 17  # hashed by its first and last MiB


def _content(n: int, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


FILES = {"model.pt": _content(1000), "tensorboard/events": _content(50, 1), "data.h5": _content(BIG, 2)}


def _build(work):
    for name, data in FILES.items():
        (work.dir / name).parent.mkdir(parents=True, exist_ok=True)
        (work.dir / name).write_bytes(data)


def finished(root):
    st = Cache(root).stage("teacher", 1, {"epochs": 1})
    assert st.ensure(_build)
    return st


def test_the_manifest_records_every_file_with_its_size_and_checksum(tmp_path):
    st = finished(tmp_path)
    files = st.manifest()["files"]
    assert sorted(files) == ["data.h5", "model.pt", "tensorboard/events"]  # no bookkeeping, no manifest
    assert files["model.pt"] == {"size": 1000, "sha256": hashlib.sha256(FILES["model.pt"]).hexdigest()}
    big = FILES["data.h5"]
    assert files["data.h5"] == {"size": BIG,
                                "sha256": hashlib.sha256(big[:END_BYTES] + big[-END_BYTES:]).hexdigest()}
    assert st.state == "done" and st.done


def _delete(p):
    p.unlink()


def _truncate(p):
    os.truncate(p, p.stat().st_size // 2)


def _flip(offset):
    def flip(p):
        data = bytearray(p.read_bytes())
        data[offset] ^= 0xFF
        p.write_bytes(bytes(data))
    return flip


@pytest.mark.parametrize("name,damage,says", [
    ("model.pt", _delete, "model.pt is missing (1,000 bytes recorded)"),
    ("model.pt", _truncate, "model.pt has 500 bytes, 1,000 recorded"),
    ("model.pt", _flip(500), "model.pt does not match its recorded checksum"),   # same size, garbage
    ("tensorboard/events", _delete, "tensorboard/events is missing"),
    ("data.h5", _truncate, f"data.h5 has {BIG // 2:,} bytes"),
    ("data.h5", _flip(10), "data.h5 does not match its recorded checksum"),      # its head
    ("data.h5", _flip(BIG - 1), "data.h5 does not match its recorded checksum"),  # its tail
])
def test_a_damaged_file_is_reported_in_one_line_and_the_stage_recomputed(tmp_path, capsys, name, damage,
                                                                          says):
    st = finished(tmp_path)
    damage(st.path / name)
    assert st.state == "damaged" and not st.done
    with pytest.raises(SkelpipeError, match="has not finished"):
        st.manifest()
    capsys.readouterr()
    assert st.ensure(_build)  # computed again
    lines = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(lines) == 1 and f"teacher/{st.key}" in lines[0] and says in lines[0], lines
    assert st.done and all((st.path / n).read_bytes() == d for n, d in FILES.items())
    assert not st.partial.exists()


@pytest.mark.parametrize("manifest,says", [
    (None, "manifest.json is missing"),
    (b"", "not a readable manifest"),
    (b"\x00\xff\xfe garbage", "not a readable manifest"),
    (b'{"key": ', "not a readable manifest"),
    (b"[1, 2]", "is not a stage manifest"),
    (b'{"key": "KEY", "files": 5}', "is not a stage manifest"),
    (b'{"key": "KEY", "files": {"model.pt": 7}}', "malformed file record"),
    (b'{"key": "0123456789abcdef", "files": {}}', "names key '0123456789abcdef'"),
])
def test_cache_ls_shows_a_bad_manifest_as_damaged_and_a_run_recomputes_it(tmp_path, manifest, says):
    st = finished(tmp_path)
    if manifest is None:
        (st.path / "manifest.json").unlink()
    else:
        (st.path / "manifest.json").write_bytes(manifest.replace(b"KEY", st.key.encode()))
    result = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path), "ls"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if line.startswith("│ teacher")]
    assert len(rows) == 1 and "damaged" in rows[0] and "done" not in rows[0], result.output
    assert f"damaged teacher/{st.key}: " in result.output and says in result.output, result.output
    assert st.state == "damaged" and not st.done
    assert st.ensure(_build) and st.done and st.manifest()["files"]["model.pt"]["size"] == 1000


def test_a_manifest_without_a_record_is_trusted(tmp_path):
    """Stages finished before records were kept stay reusable (no recomputation on upgrade)."""
    st = finished(tmp_path)
    manifest = json.loads((st.path / "manifest.json").read_text())
    del manifest["files"]
    (st.path / "manifest.json").write_text(json.dumps(manifest))
    assert st.done and not st.ensure(_build)


def test_gc_removes_damaged_stages_and_keeps_sound_ones(tmp_path):
    cache = Cache(tmp_path)
    sound, damaged = cache.stage("pack", 1, {"T": 1}), cache.stage("pack", 1, {"T": 2})
    for st in (sound, damaged):
        st.ensure(lambda work: (work.dir / "data.h5").write_bytes(b"x" * 100))
    os.truncate(damaged.path / "data.h5", 10)
    result = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path), "gc"])
    unwrapped = "".join(result.output.split())
    assert result.exit_code == 0 and f"removing{damaged.path}" in unwrapped, result.output
    assert damaged.state == "missing" and sound.done


# --------------------------------------------------------------------------- a whole run

SMALL = ["data.subjects=6", "data.reps=1", "data.test_reps=1", *DEMO_TINY_NETS, "experiments.op=[0.3]",
         "experiments.kd=['pmsc']"]


def run_all(tmp_path, cache, *extra):
    args = ["run-all", "demo", "--cache-dir", str(cache), "--report-dir", str(cache) + "-report",
            "--device", "cpu", "--jobs", "1", *[a for o in SMALL for a in ("--set", o)], *extra]
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    return result


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One undamaged reduced demo (about 10 s on 2 cores)."""
    cache = tmp_path_factory.mktemp("ref") / "cache"
    result = run_all(cache.parent, cache)
    assert result.exit_code == 0, result.output
    return cache, run_outcome(cache)


def _one(cache, stage, name):
    (path,) = cache.glob(f"{stage}/*/{name}")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("stage,name,damage", [
    ("teacher", "model.pt", _delete),
    ("student", "model.pt", _truncate),
    ("pack", "data.h5", _truncate),
    ("evaluate", "metrics.json", _truncate),
    ("partmatrix", "manifest.json", lambda p: p.write_text("garbage")),
    ("skeletons", "manifest.json", _delete),
])
def test_a_damaged_stage_of_a_finished_run_is_recomputed_to_the_same_result(
        reference, tmp_path, stage, name, damage):
    ref_cache, expected = reference
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    shutil.copytree(f"{ref_cache}-report", f"{cache}-report")
    target = sorted(cache.glob(f"{stage}/*/{name}"))[0]  # (the first of the two evaluations)
    key = target.parent.name
    damage(target)
    result = run_all(tmp_path, cache)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("damaged")]
    assert len(lines) == 1 and f"{stage}/{key}: " in lines[0] and name in lines[0], result.output
    assert run_outcome(cache) == expected
    assert not list(cache.glob("*/*.partial"))


@pytest.mark.slow
def test_only_a_later_stage_names_its_damaged_input(reference, tmp_path):
    ref_cache, _ = reference
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    teacher = _one(cache, "teacher", "model.pt")
    teacher.unlink()
    shutil.rmtree(cache / "student")
    result = run_all(tmp_path, cache, "--only", "student")
    assert result.exit_code == 1
    message = str(result.exception)
    assert f"whose output is damaged ({teacher} is missing" in message and "\n" not in message, message


@pytest.mark.slow
def test_report_leaves_damaged_stages_out_in_one_line_each(reference, tmp_path):
    ref_cache, expected = reference
    cache = tmp_path / "cache"
    shutil.copytree(ref_cache, cache)
    report = ["report", "demo", "--cache-dir", str(cache), "--report-dir", str(tmp_path / "r"),
              *[a for o in SMALL for a in ("--set", o)]]
    metrics = sorted(cache.glob("evaluate/*/metrics.json"))[0]
    os.truncate(metrics, 10)
    result = CliRunner().invoke(cli, report)
    assert result.exit_code == 0, result.output
    assert f"left out evaluate/{metrics.parent.name}: {metrics} has 10 bytes" in result.output
    records = json.loads((tmp_path / "r" / "results.json").read_text())
    assert len(records) == len(expected["results"]) // 2  # one cell of two
    pack = _one(cache, "pack", "data.h5")
    os.truncate(pack, 1000)
    result = CliRunner().invoke(cli, report)
    assert result.exit_code == 1 and "nothing to report" in str(result.exception)
    assert f"left out pack/{pack.parent.name}: {pack} has 1,000 bytes" in result.output


def test_an_extract_stage_commits_its_merged_store_only_even_when_killed_while_merging(tmp_path):
    """``merge_and_drop`` (an extract stage's last step before its commit) leaves the merged
    store alone, and a rerun after a kill that followed the drop commits that store as it is."""
    from skelpipe.core.work import Work
    from skelpipe.pose import extract
    from skelpipe.skeleton.store import PoseWriter, open_store

    st = Cache(tmp_path).stage("extract", 1, {})

    def build(work: Work):
        (work.dir / "videos").mkdir()
        for i, sid in enumerate(("a", "b")):
            with PoseWriter(work.dir / "videos" / f"{sid}.h5", "coco17", {}) as w:
                w.add(sid, np.full((1, 2, 17, 3), i, np.float32), label=i)
            work.mark_done(sid, {"file": f"{sid}.h5"})

    with pytest.raises(KeyboardInterrupt):  # killed after the drop, before the commit
        with st.run(on_commit=lambda d: extract.merge_and_drop(d, "skeletons.h5")) as work:
            build(work)
            extract.merge_and_drop(work.dir, "skeletons.h5")
            raise KeyboardInterrupt
    assert sorted(p.name for p in st.partial.iterdir() if not p.name.startswith(".")) == ["skeletons.h5"]
    with st.run(on_commit=lambda d: extract.merge_and_drop(d, "skeletons.h5")):
        pass  # every unit done: nothing to redo
    assert sorted(st.manifest()["files"]) == ["skeletons.h5"] and st.done
    with open_store(st.path / "skeletons.h5") as store:
        assert store.ids() == ["a", "b"] and store.read("b").keypoints.max() == 1
