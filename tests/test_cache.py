import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from skelpipe.cli import cli
from skelpipe.core.errors import SkelpipeError
from skelpipe.pipeline.cache import Cache, Lock

UNITS = [f"video{i}" for i in range(6)]

# A stage that processes six units, one file each; killed with SIGKILL after a given unit.
STAGE = """
import os, signal, sys
from skelpipe.pipeline.cache import Cache
root, kill_after = sys.argv[1], int(sys.argv[2])
st = Cache(root).stage("extract", version=1, config={"backbone": "k16"})
with st.run() as work:
    for i in range(6):
        unit = f"video{i}"
        if work.is_done(unit):
            continue
        (work.dir / f"{unit}.txt").write_text(f"{os.getpid()}")
        work.mark_done(unit, {"frames": i})
        print(unit, flush=True)
        if i == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
"""


def _run_stage(root, kill_after):
    return subprocess.run([sys.executable, "-c", STAGE, str(root), str(kill_after)],
                          capture_output=True, text=True)


def test_resume_after_kill(tmp_path):
    first = _run_stage(tmp_path, kill_after=2)
    assert first.returncode == -signal.SIGKILL
    st = Cache(tmp_path).stage("extract", version=1, config={"backbone": "k16"})
    assert st.state == "partial" and not st.done
    second = _run_stage(tmp_path, kill_after=-1)
    assert second.returncode == 0
    assert second.stdout.split() == ["video3", "video4", "video5"]  # finished units not redone
    assert st.done
    pids = {(st.path / f"{u}.txt").read_text() for u in UNITS}
    assert len(pids) == 2
    manifest = st.manifest()
    assert manifest["units"] == 6 and manifest["config"] == {"backbone": "k16"}
    assert not st.partial.exists()


def test_keys_change_downstream_only(tmp_path):
    cache = Cache(tmp_path)

    def chain(extract_cfg, pack_cfg):
        a = cache.stage("extract", 1, extract_cfg)
        b = cache.stage("align", 1, {"missing": "solitary"}, {"extract": a.key})
        c = cache.stage("pack", 1, pack_cfg, {"align": b.key})
        return a.key, b.key, c.key

    base = chain({"backbone": "k16"}, {"T": 300})
    assert chain({"backbone": "k16"}, {"T": 300}) == base
    changed_pack = chain({"backbone": "k16"}, {"T": 64})
    assert changed_pack[:2] == base[:2] and changed_pack[2] != base[2]
    changed_extract = chain({"backbone": "k30"}, {"T": 300})
    assert all(x != y for x, y in zip(changed_extract, base))
    assert cache.stage("extract", 2, {"backbone": "k16"}).key != base[0]  # code version


def test_lock_names_holder(tmp_path):
    st = Cache(tmp_path).stage("train", 1, {"epochs": 1})
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,time; from skelpipe.pipeline.cache import Cache;"
         "st = Cache(sys.argv[1]).stage('train', 1, {'epochs': 1});"
         "cm = st.run(); cm.__enter__(); print('locked', flush=True); time.sleep(60)",
         str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline().strip() == b"locked"
        with pytest.raises(SkelpipeError, match=rf"train/{st.key} is in use by pid {holder.pid} "):
            with st.run():
                pass
        assert Cache(tmp_path).is_locked("train", st.key)
    finally:
        holder.kill()
        holder.wait()
    with st.run() as work:  # the kernel released the dead holder's lock
        (work.dir / "model.pt").write_text("w")
    assert st.done


def test_failure_keeps_partial_and_bad_items_reach_manifest(tmp_path):
    st = Cache(tmp_path).stage("extract", 1, {})
    with pytest.raises(RuntimeError):
        with st.run() as work:
            work.report_bad("broken.avi", "zero-byte file")
            work.mark_done("good.avi")
            raise RuntimeError("crash")
    assert st.state == "partial"
    with st.run() as work:
        assert work.is_done("good.avi") and not work.is_done("broken.avi")
        work.note(videos=1)
    m = st.manifest()
    assert m["bad_items"] == [{"item": "broken.avi", "reason": "zero-byte file"}]
    assert m["videos"] == 1 and m["units"] == 1


def test_shards_commit_when_all_done(tmp_path):
    st = Cache(tmp_path).stage("extract", 1, {"shards": 2})
    merged = []
    for i in (1, 0):
        with st.run(shard=(i, 2), on_commit=lambda d: merged.append(sorted(p.name for p in d.glob("*.h5")))) as work:
            (work.dir / f"shard{i}.h5").write_text("x")
        assert st.done == (i == 0)
    assert merged == [["shard0.h5", "shard1.h5"]]


def test_cache_cli_ls_and_gc(tmp_path):
    cache = Cache(tmp_path)
    with cache.stage("pack", 1, {"T": 64}).run() as work:
        (work.dir / "data.h5").write_bytes(b"0" * 2048)
    cache.stage("train", 1, {}).partial.mkdir(parents=True)
    runner = CliRunner()
    out = runner.invoke(cli, ["cache", "--cache-dir", str(tmp_path), "ls"])
    assert out.exit_code == 0, out.output
    assert "pack" in out.output and "done" in out.output and "partial" in out.output
    out = runner.invoke(cli, ["cache", "--cache-dir", str(tmp_path), "gc"])
    assert out.exit_code == 0 and "removing" in out.output
    assert not cache.stage("train", 1, {}).partial.exists()
    assert cache.stage("pack", 1, {"T": 64}).done


def test_lock_blocks_second_holder_in_process(tmp_path):
    with Lock(tmp_path / "x.lock", "thing"):
        with pytest.raises(SkelpipeError, match=r"thing is in use by pid \d+"):
            Lock(tmp_path / "x.lock", "thing").acquire()


# Two processes at one stage: the build writes its pid to a log and waits for a go file.
ENSURE = """
import os, sys, time
from skelpipe.pipeline.cache import Cache
root, log, go = sys.argv[1], sys.argv[2], sys.argv[3]
st = Cache(root).stage("teacher", 1, {"epochs": 1})
def build(work):
    print("computing", flush=True)
    with open(log, "a") as f:
        f.write(f"{os.getpid()}\\n")
    while not os.path.exists(go):
        time.sleep(0.05)
    (work.dir / "model.pt").write_text("w")
print("computed" if st.ensure(build) else "reused", flush=True)
"""


def test_two_processes_at_one_stage_compute_it_once(tmp_path):
    """The second process waits for the first one's lock, sees the stage finished, reuses it;
    the first one's result is never deleted by the second."""
    log, go = tmp_path / "computations.log", tmp_path / "go"
    args = [sys.executable, "-c", ENSURE, str(tmp_path / "c"), str(log), str(go)]
    first = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert first.stdout.readline().strip() == "computing"  # holds the lock now
    second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in second.stdout:  # until it says it waits for the first one
        seen.append(line)
        if "waiting" in line:
            break
    go.touch()  # now let the first one finish
    rest, _ = second.communicate(timeout=60)
    first.wait(timeout=60)
    assert first.returncode == 0 and second.returncode == 0, "".join(seen) + rest
    assert first.stdout.read().strip() == "computed"
    assert "waiting" in "".join(seen) and rest.strip().endswith("reused")
    assert len(log.read_text().splitlines()) == 1  # exactly one computed
    st = Cache(tmp_path / "c").stage("teacher", 1, {"epochs": 1})
    assert st.done and (st.path / "model.pt").read_text() == "w" and not st.partial.exists()


def test_a_commit_never_replaces_a_finished_stage(tmp_path):
    st = Cache(tmp_path).stage("pack", 1, {})
    with st.run() as work:
        (work.dir / "data.h5").write_text("first")
    st.partial.mkdir()  # a racing run's partial output arrives after the stage finished
    (st.partial / ".started").write_text("now")
    from skelpipe.core.work import Work
    st._commit(Work(st.partial), 1.0)
    assert (st.path / "data.h5").read_text() == "first" and not st.partial.exists()


def test_a_failed_stage_that_finished_nothing_leaves_no_partial(tmp_path):
    st = Cache(tmp_path).stage("skeletons", 1, {})
    with pytest.raises(RuntimeError):
        with st.run() as work:
            work.report_bad("a.mat", "unreadable")
            raise RuntimeError("every file bad")
    assert not st.partial.exists() and st.state == "missing"


HOLD = """
import sys, time
from skelpipe.pipeline.cache import Cache
cache = Cache(sys.argv[1])
with cache.hold([cache.stage("pack", 1, {"T": 64})]):
    print("holding", flush=True)
    time.sleep(60)
"""


def test_gc_skips_stages_a_running_plan_uses(tmp_path):
    cache = Cache(tmp_path)
    st = cache.stage("pack", 1, {"T": 64})
    with st.run() as work:
        (work.dir / "data.h5").write_text("x")
    plan = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert plan.stdout.readline().strip() == "holding"
        result = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path), "gc", "--older-than", "0"])
        assert result.exit_code == 0 and "in use by a running plan" in result.output
        assert st.done
    finally:
        plan.kill()
        plan.wait()
    result = CliRunner().invoke(cli, ["cache", "--cache-dir", str(tmp_path), "gc", "--older-than", "0"])
    assert "removing" in result.output and not st.done
