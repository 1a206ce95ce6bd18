"""What the bad-input catalogue (tests/test_faults.py) cannot say in one command line: a non-finite
sample among good ones is reported and skipped, a pack drops what its dtype cannot hold, training
stops on a non-finite loss; an exception, Ctrl-C or a full disk in the middle of training keeps
its finished epochs and the rerun ends bit-identical to an uninterrupted run; a real full disk is
one line; a read-only finished cache still gives its report; run-all's workers die with it."""

import contextlib
import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from conftest import DEMO_REDUCED, TINY, run_all_command

from skelpipe.core.errors import SkelpipeError
from skelpipe.core.work import Work
from skelpipe.data import pack, pyskl, sources
from skelpipe.learn.config import TrainConfig
from skelpipe.learn.train import train
from skelpipe.pipeline.cache import Cache
from skelpipe.skeleton.store import PoseWriter, open_store

ROOT = Path(__file__).resolve().parents[1]


def _env(**extra) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", **extra}


def _run_all(cache: Path, *extra: str) -> list[str]:
    return [*run_all_command(cache, DEMO_REDUCED), *extra]


def _penn_label(path: Path, x=100.0, height=270):
    n = 4
    xs = np.full((n, 13), 100.0)
    xs[2, 5] = x
    scipy.io.savemat(str(path), {
        "action": "squat", "pose": "front", "x": xs, "y": np.full((n, 13), 50.0),
        "visibility": np.ones((n, 13), np.uint8), "train": np.array([[1]]), "bbox": np.zeros((n, 4)),
        "dimensions": np.array([[height, 480, n]]), "nframes": np.array([[n]], np.uint8)})


def test_the_reader_reports_and_skips_a_non_finite_sample(tmp_path):
    labels = tmp_path / "penn" / "labels"
    labels.mkdir(parents=True)
    _penn_label(labels / "0001.mat")
    _penn_label(labels / "0002.mat", x=np.nan)
    _penn_label(labels / "0003.mat", height=0)
    _penn_label(labels / "0004.mat", x=1e39)  # finite in float64, inf in the store's float32
    work = Work(tmp_path / "w")
    sources.write_dataset_store("penn", {}, tmp_path / "penn", tmp_path / "w" / "s.h5", work)
    with open_store(tmp_path / "w" / "s.h5") as store:
        assert store.ids() == ["0001"]
    bad = {Path(b["item"]).stem: b["reason"] for b in work.bad_items()}
    assert bad.keys() == {"0002", "0003", "0004"}
    assert bad["0002"] == bad["0004"] == ("1 keypoint value(s) not finite, the first at (person, frame, "
                                          "joint, channel) (0, 2, 5, 0)")
    assert "field 'dimensions' gives an image of 480 x 0 pixels" in bad["0003"]


def test_a_pyskl_import_skips_a_nan_item_into_bad_items(tmp_path):
    items = []
    for i in range(3):
        kp = np.ones((1, 5, 25, 3), np.float32)
        if i == 1:
            kp[0, 4, 24, 2] = -np.inf
        items.append({"frame_dir": f"S001C001P00{i + 1}R001A001", "label": i % 2, "total_frames": 5,
                      "keypoint": kp})
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"split": {}, "annotations": items}))
    work = Work(tmp_path / "w")
    pyskl.import_store(tmp_path / "p.pkl", tmp_path / "p.h5", work=work)
    with open_store(tmp_path / "p.h5") as store:
        assert store.ids() == ["S001C001P001R001A001", "S001C001P003R001A001"]
    assert [(b["item"], b["reason"][:33]) for b in work.bad_items()] == [
        ("S001C001P002R001A001", "1 keypoint value(s) not finite, t")]



def test_a_pyskl_import_skips_an_item_whose_scores_are_not_finite(tmp_path):
    # a 2D item's score is its keypoints' third channel in the store
    items = [{"frame_dir": f"s{i}", "label": 0, "img_shape": (64, 64), "total_frames": 3,
              "keypoint": np.ones((1, 3, 17, 2), np.float32), "keypoint_score": np.ones((1, 3, 17), np.float32)}
             for i in range(3)]
    items[2]["keypoint_score"][0, 1, 5] = np.nan
    (tmp_path / "p.pkl").write_bytes(pickle.dumps({"split": {}, "annotations": items}))
    work = Work(tmp_path / "w")
    pyskl.import_store(tmp_path / "p.pkl", tmp_path / "p.h5", work=work)
    with open_store(tmp_path / "p.h5") as store:
        assert store.ids() == ["s0", "s1"]
    assert [(b["item"], b["reason"]) for b in work.bad_items()] == [
        ("s2", "1 keypoint value(s) not finite, the first at (person, frame, joint, channel) (0, 1, 5, 2)")]

def _aligned(d: Path, big: int | None = None, n: int = 12) -> Path:
    """An aligned HQ/LQ pair of 3D stores (ntu25, 2 classes, 8 train and 4 test instances);
    instance ``big`` has one LQ coordinate of 1e6 (finite in float32, beyond float16)."""
    rng = np.random.default_rng(0)
    d.mkdir(parents=True, exist_ok=True)
    for side in ("hq", "lq"):
        with PoseWriter(d / f"{side}.h5", "ntu25", {"channels": "x,y,z", "class_names": ["a", "b"]}) as w:
            for i in range(n):
                kp = (rng.normal(size=(1, 6, 25, 3)) + i % 2).astype(np.float32)
                if side == "lq" and i == big:
                    kp[0, 3, 5, 0] = 1e6
                w.add(f"s{i:02d}", kp, label=i % 2, split="train" if i < 8 else "test", channels="x,y,z")
    return d


def test_a_pack_drops_an_instance_its_dtype_cannot_hold(tmp_path):
    aligned = _aligned(tmp_path / "aligned", big=3)
    for dtype, rows in (("float32", 8), ("float16", 7)):
        work = Work(tmp_path / dtype)
        counts = pack.pack(aligned, work, frames=6, dtype=dtype)
        assert counts["train"]["n"] == rows and counts["test"]["n"] == 4
        with h5py.File(tmp_path / dtype / "data.h5") as f:
            assert np.isfinite(f["train/lq"][()]).all() and len(f["train/ids"]) == rows
            assert (b"s03" in list(f["train/ids"][()])) == (dtype == "float32")
        assert [b["item"] for b in work.bad_items()] == ([] if dtype == "float32" else ["s03"])
    assert work.bad_items()[0]["reason"] == "pack: not finite once normalised and stored as float16"


@pytest.fixture(scope="module")
def pack_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("pack")
    pack.pack(_aligned(d / "aligned"), Work(d / "pack"), frames=6)
    return d / "pack"


def test_training_stops_on_a_non_finite_loss_and_commits_nothing(tmp_path, pack_dir, monkeypatch):
    # settings are bounded (no learning rate can overflow the loss), so the loss is made NaN here
    cross_entropy = torch.nn.functional.cross_entropy
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", lambda *a, **k: cross_entropy(*a, **k) * float("nan"))
    cfg = TrainConfig(stage="teacher", epochs=3, batch_size=4, **TINY)
    stage = Cache(tmp_path / "cache").stage("teacher", 1, cfg.to_dict(), {})
    with pytest.raises(SkelpipeError, match=r"\.partial: teacher epoch 1: the loss is (nan|inf) \(not finite\)"):
        stage.ensure(lambda work: train(cfg, pack_dir, work.dir))
    assert not stage.done and not list(stage.partial.glob("model.*"))


# A teacher trained through the stage cache (as run-all does), with a fault at optimiser step
# ``at``: an exception, SIGINT (Ctrl-C) or a full disk when the checkpoint of that epoch is saved.
TRAIN_SCRIPT = textwrap.dedent("""
    import errno, os, signal, sys, torch
    from skelpipe.core.errors import SkelpipeError
    from skelpipe.learn.config import TrainConfig
    from skelpipe.learn.train import train
    from skelpipe.pipeline.cache import Cache
    cache, pack_dir, fault, at = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started with SIGINT ignored
    torch.set_num_threads(1)
    step, save, calls = torch.optim.SGD.step, torch.save, [0, 0]
    def faulty_step(self, *a, **k):
        calls[0] += 1
        if calls[0] == at and fault == "sigint":
            os.kill(os.getpid(), signal.SIGINT)
        if calls[0] == at and fault == "exception":
            raise RuntimeError("injected fault")
        return step(self, *a, **k)
    def full_disk_save(obj, f, *a, **k):
        calls[1] += 1
        if calls[1] == at and fault == "enospc":
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
        return save(obj, f, *a, **k)
    torch.optim.SGD.step, torch.save = faulty_step, full_disk_save
    cfg = TrainConfig(stage="teacher", epochs=4, batch_size=4, lr=0.05, milestones=(2,), dropout=0.2,
                      channels=(8, 8, 16, 16), temporal_kernel=3, device="cpu")
    stage = Cache(cache).stage("teacher", 1, cfg.to_dict(), {})
    try:
        stage.ensure(lambda work: train(cfg, pack_dir, work.dir))
    except SkelpipeError as e:
        sys.exit(f"error: {e}")
    print(stage.path)
""")


def _train(tmp_path: Path, cache: Path, pack_dir: Path, fault: str = "none", at: int = 0):
    script = tmp_path / "train_stage.py"
    script.write_text(TRAIN_SCRIPT)
    return subprocess.run([sys.executable, str(script), str(cache), str(pack_dir), fault, str(at)],
                          env=_env(), capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, pack_dir) -> dict:
    tmp = tmp_path_factory.mktemp("straight")
    done = _train(tmp, tmp / "cache", pack_dir)
    assert done.returncode == 0, done.stderr
    return torch.load(Path(done.stdout.strip()) / "model.pt", weights_only=True)


# 8 training instances, batch 4: 2 steps an epoch; step 6 is the second of epoch 3, save 3 the
# checkpoint after epoch 3. Each fault leaves epochs 1 and 2 in last.pt.
@pytest.mark.parametrize("fault,at,status,message", [
    ("exception", 6, 1, "RuntimeError: injected fault"),
    ("sigint", 6, -signal.SIGINT, "KeyboardInterrupt"),
    ("enospc", 3, 1, "error: {partial}/last.pt: no space left on device"),
])
def test_an_interrupted_training_stage_keeps_its_epochs_and_resumes_bit_identical(
        fault, at, status, message, tmp_path, pack_dir, straight):
    cache = tmp_path / "cache"
    failed = _train(tmp_path, cache, pack_dir, fault, at)
    (partial,) = (cache / "teacher").glob("*.partial")
    assert failed.returncode == status, failed.stderr
    assert message.format(partial=partial) in failed.stderr
    if fault == "enospc":  # one line, naming the file it could not write
        assert len(re.findall(r"^error", failed.stderr, re.M)) == 1 and "Traceback" not in failed.stderr
        assert f"error: {partial / 'last.pt'}: no space left on device; nothing was committed" in failed.stderr
    assert torch.load(partial / "last.pt", weights_only=True)["epoch"] == 2
    assert not list((cache / "teacher").glob("*/manifest.json"))
    resumed = _train(tmp_path, cache, pack_dir)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr + resumed.stdout
    weights = torch.load(Path(resumed.stdout.strip().splitlines()[-1]) / "model.pt", weights_only=True)
    assert weights.keys() == straight.keys()
    assert all(torch.equal(weights[k], straight[k]) for k in weights)


def _unshare() -> bool:
    """Whether this machine lets an unprivileged process mount in its own namespace."""
    return shutil.which("unshare") is not None and subprocess.run(
        ["unshare", "-rm", "true"], capture_output=True).returncode == 0


@pytest.mark.skipif(not _unshare(), reason="needs user namespaces (unshare -rm) to mount a small tmpfs")
@pytest.mark.parametrize("what,size", [("run-all", "2m"), ("train", "16k")])
def test_a_really_full_disk_is_one_line_and_commits_nothing(what, size, tmp_path, pack_dir):
    """On a tmpfs of ``size`` with no reserve, run-all fills it with its pose stores (HDF5),
    ``train`` with its checkpoint (torch's own "iostream error")."""
    small = tmp_path / "small"
    small.mkdir()
    command = _run_all(small, "--until", "pack") if what == "run-all" else [
        sys.executable, "-m", "skelpipe", "train", "--stage", "teacher", "--pack", str(pack_dir), "--out",
        str(small / "run"), "--channels", "8,8,16,16", "--temporal-kernel", "3", "--epochs", "2",
        "--batch-size", "4", "--device", "cpu"]
    shell = f'mount -t tmpfs -o size={size} none "$0" && exec "$@"'
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell, str(small), *command],
                          env=_env(SKELPIPE_MIN_FREE_MB="0"), capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    errors = re.findall(r"^(?:error|Error|Traceback|Exception).*", proc.stderr, re.M)
    assert proc.returncode == 1, proc.stderr
    assert len(errors) == 1 and errors[0].startswith("error: ") and "space" in errors[0], proc.stderr
    if what == "train":
        assert errors[0].startswith(f"error: {small / 'run' / 'last.pt'}: no space left on device")
    else:  # nothing committed, no half-written store left behind
        assert not list(small.glob("*/*/manifest.json")) and not list(small.glob("*/*/*.partial-*"))


@pytest.mark.skipif(not _unshare(), reason="needs user namespaces (unshare -rm) for a read-only bind mount")
def test_a_finished_read_only_cache_still_gives_its_report(tmp_path):
    cache = tmp_path / "cache"
    first = subprocess.run(_run_all(cache, "--jobs", "1"), env=_env(), capture_output=True, text=True,
                           timeout=300, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    shell = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    again = _run_all(cache, "--jobs", "1")
    again[again.index("--report-dir") + 1] = str(tmp_path / "second-report")
    proc = subprocess.run(["unshare", "-rm", "sh", "-c", shell, str(cache), *again], env=_env(),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "second-report" / "results.json").read_text())
    assert report == json.loads((tmp_path / "cache-report" / "results.json").read_text())


def _workers(parent: int) -> list[int]:
    """The worker processes (multiprocessing spawn) whose parent is ``parent``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_sigterm_to_run_all_ends_its_workers(tmp_path):
    # students long enough to be caught training in the two workers
    proc = subprocess.Popen(_run_all(tmp_path / "cache", "--jobs", "2", "--set", "student.epochs=500"),
                            env=_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline, workers = time.time() + 120, []
        while len(workers) < 2 and time.time() < deadline and proc.poll() is None:
            time.sleep(0.2)
            workers = _workers(proc.pid)
        assert len(workers) == 2, "run-all did not start two workers"
        while len(list((tmp_path / "cache").glob("student/*.partial/last.pt"))) < 2 and time.time() < deadline:
            time.sleep(0.2)  # until both train (an epoch done)
        assert all(_alive(w) for w in workers)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
        deadline = time.time() + 5
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], "workers outlived their parent"
    finally:  # whatever is left of the process group this test started
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
