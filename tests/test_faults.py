"""Faults and bad input, end to end.

1. ``run-all`` on a reduced demo killed with SIGKILL at N random moments (each followed by a
   rerun) ends with the results, weights, pack and part matrix of an uninterrupted run. Run it
   alone with more kills or another seed:

       SKELPIPE_FAULT_KILLS=20 SKELPIPE_FAULT_SEED=3 python -m pytest -m slow tests/test_faults.py

2. A catalogue of bad inputs, each with the one line it must give and its exit status.
"""

import json
import os
import pickle
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DEMO_REDUCED, run_all_command, run_outcome, set_args


def run_all(tmp_path, cache: Path, *extra, **popen):
    return subprocess.Popen([*run_all_command(cache, DEMO_REDUCED), "--jobs", "1", *extra], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.mark.slow
def test_sigkill_at_random_moments_then_rerun_gives_the_uninterrupted_result(tmp_path):
    straight = run_all(tmp_path, tmp_path / "straight")
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out
    t0 = time.time()
    expected = run_outcome(tmp_path / "straight")

    kills = int(os.environ.get("SKELPIPE_FAULT_KILLS", "8"))
    rng = random.Random(int(os.environ.get("SKELPIPE_FAULT_SEED", "0")))
    cache, killed = tmp_path / "killed", 0
    for _ in range(kills):
        proc = run_all(tmp_path, cache, start_new_session=True)
        try:
            proc.wait(timeout=rng.uniform(2.0, 5.0))  # (about 3 s of start-up) the run may finish first
            break
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            killed += 1
    final = run_all(tmp_path, cache)
    out, _ = final.communicate(timeout=300)
    assert final.returncode == 0, out
    assert killed >= 1
    got = run_outcome(cache)
    assert got == expected, f"after {killed} kills the result differs"
    print(f"{killed} kills, {time.time() - t0:.0f} s")


# --------------------------------------------------------------------------- bad inputs

def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


# (what, setup(tmp) -> (args, env), exit status, the message the one error line must hold)
class _Payload:
    """Unpickling this calls ``func(*args)``: what a hostile checkpoint does."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _hostile(path: Path) -> Path:
    """A torch checkpoint whose unpickling would run a shell command."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": _Payload(os.system, f"touch {path.parent / 'pwned'}")}, path)
    return path


def _video(t: Path, name: str = "v.avi") -> Path:
    import cv2

    t.mkdir(parents=True, exist_ok=True)
    w = cv2.VideoWriter(str(t / name), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (64, 48))
    for i in range(4):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    return t / name


def _one_clip(t: Path) -> Path:
    """A custom dataset's folder: four clips of two labels and their labels.csv."""
    for name in "abcd":
        _video(t / "clips", f"{name}.avi")
    _write(t / "clips" / "labels.csv", "video,label,split\na.avi,x,train\nb.avi,y,train\nc.avi,x,test\nd.avi,y,test\n")
    return t / "clips"


def _pyskl_label(path: Path, label: int) -> Path:
    item = {"frame_dir": "a", "label": label, "total_frames": 4, "img_shape": (48, 64),
            "keypoint": np.zeros((1, 4, 17, 2), np.float32), "keypoint_score": np.ones((1, 4, 17), np.float32)}
    return _write(path, pickle.dumps({"split": {}, "annotations": [item]}))


def _store(path: Path, damage=None) -> Path:
    """A small COCO-17 pose store (four samples, two labels); ``damage(h5py.File)`` edits it afterwards."""
    import h5py

    from skelpipe.skeleton.store import PoseWriter

    rng = np.random.default_rng(0)
    with PoseWriter(path, "coco17", {"channels": "x,y,conf"}) as w:
        for i in range(4):
            kp = np.concatenate([rng.uniform(0, 60, (1, 8, 17, 2)), np.ones((1, 8, 17, 1))], -1)
            w.add(f"s{i}", kp, label=i % 2, split="train" if i < 2 else "test", image_size=[64, 48])
    if damage:
        with h5py.File(path, "r+") as f:
            damage(f)
    return path


def _pack(t: Path, label=(0, 1), drop=None) -> Path:
    """A pack folder of two COCO-17 test instances (data.h5 as the pack stage lays it out)."""
    import h5py

    arrays = {"lq": np.zeros((2, 3, 8, 17, 1), np.float32), "hq": np.zeros((2, 3, 8, 17, 1), np.float32),
              "has_hq": np.ones(2, bool), "label": np.asarray(label, np.int64), "ids": np.asarray([b"a", b"b"]),
              "length": np.full(2, 8), "hq_available": np.ones(2, bool)}
    (t / "pack").mkdir(parents=True, exist_ok=True)
    with h5py.File(t / "pack" / "data.h5", "w") as f:
        f.attrs.update({"num_classes": 2, "lq_layout": "coco17", "hq_layout": "coco17"})
        for name, a in arrays.items():
            if name != drop:
                f.create_dataset(f"test/{name}", data=a)
    return t / "pack"


def _model(t: Path, weights: bytes | None = None, classes: int = 2, net=None, **meta) -> Path:
    """A trained-model folder (a small random ST-GCN of ``classes``); ``meta`` overrides model.json and
    ``net`` its model section (None removes a key)."""
    from skelpipe.learn.checkpoint import save_model
    from skelpipe.learn.models import ModelConfig, build_model

    info = {"stage": "student", "T": 8, "config": {"op": 0.0, "occlusion_mode": "track"}}
    model = build_model(ModelConfig("stgcn", "coco17", 3, classes, (8,), 3, 1))
    save_model(t / "m", model, {k: v for k, v in {**info, **meta}.items() if v is not None})
    saved = json.loads((t / "m" / "model.json").read_text())
    saved["model"] = {k: v for k, v in {**saved["model"], **(net or {})}.items() if v is not None}
    (t / "m" / "model.json").write_text(json.dumps(saved))
    if weights is not None:
        (t / "m" / "model.pt").write_bytes(weights)
    return t / "m"

# (what, setup(tmp) -> (args, env), exit status, the message the one error line must hold)
CATALOGUE = [
    ("cache root is a file",
     lambda t: (["run-all", "demo", "--dry-run"], {"SKELPIPE_CACHE": str(_write(t / "f", "x"))}),
     1, "the cache root is not a directory"),
    ("unknown pipeline", lambda t: (["run-all", "nosuch", "--dry-run"], {}), 1, "unknown pipeline 'nosuch'"),
    ("pipeline file with invalid TOML",
     lambda t: (["run-all", str(_write(t / "bad.toml", "name = [")), "--dry-run"], {}), 1, "invalid TOML"),
    ("pipeline whose base includes itself",
     lambda t: (["run-all", str(_write(t / "loop.toml", 'base = "loop.toml"\n')), "--dry-run"], {}), 1,
     "includes itself"),
    ("unknown section", lambda t: (["run-all", "demo", "--dry-run", "--set", "techer.epochs=3"], {}), 2,
     "unknown section [techer] (did you mean 'teacher'?)"),
    ("unknown key", lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.epoch=3"], {}), 2,
     "unknown setting epoch = 3 (did you mean 'epochs'?)"),
    ("wrong type", lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.epochs=abc"], {}), 2,
     "epochs must be an integer, got 'abc'"),
    ("out of range", lambda t: (["run-all", "demo", "--dry-run", "--set", "experiments.op=[1.5]"], {}), 2,
     "experiments.op: 1.5 is outside [0.0, 1.0]"),
    ("unknown KD variant", lambda t: (["run-all", "demo", "--dry-run", "--set", "experiments.kd=['pmcs']"], {}),
     2, "(did you mean 'pmsc'?)"),
    ("zero epochs", lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.epochs=0"], {}), 2,
     "epochs must be >= 1, got 0"),
    ("--device cuda without CUDA", lambda t: (["run-all", "demo", "--device", "cuda"], {}), 1,
     "CUDA is not available here"),
    ("report with nothing finished", lambda t: (["report", "demo"], {}), 1, "nothing to report"),
    ("Penn without a data root", lambda t: (["run-all", "penn"], {"SKELPIPE_PENN_ROOT": ""}), 1,
     "penn data missing: no data root given"),
    ("Penn data root of bad files",
     lambda t: (["run-all", "penn", "--until", "skeletons", "--data-root",
                 str(_write(t / "penn" / "labels" / "0001.mat", b"not MATLAB").parent.parent)], {}),
     1, "no readable penn sample (1 bad:"),
    ("evaluate a folder that is not a trained model",
     lambda t: (["evaluate", "--model", str((t / "m").mkdir() or t / "m"), "--pack", str(t),
                 "--out", str(t / "e")], {}), 1, "model.json: missing (not a finished training run)"),
    ("train on a pack that does not exist",
     lambda t: (["train", "--stage", "teacher", "--pack", str(t / "nope"), "--out", str(t / "o")], {}), 2,
     "does not exist"),
    ("train on a folder that holds no pack",
     lambda t: (["train", "--stage", "teacher", "--pack", str(t), "--out", str(t / "o")], {}), 1,
     "data.h5: no packed data (run the pack stage first)"),
    ("align a store that is not HDF5",
     lambda t: (["align", "--hq", str(_write(t / "hq.h5", b"junk")), "--lq", str(_write(t / "lq.h5", b"junk")),
                 "--cache-dir", str(t / "c")], {}), 1, "hq.h5"),
    ("predict without --model", lambda t: (["predict", str(_write(t / "v.mp4", b"x"))], {}), 1,
     "--model: which trained student?"),
    ("custom dataset without labels.csv",
     lambda t: (["run-all", str(_write(t / "c.toml", CUSTOM)), "--until", "extract", "--data-root",
                 str((t / "clips").mkdir() or t / "clips")], {}), 1, "labels.csv"),
    # -- dropped rows, damaged cache
    ("Penn root with 1.mat beside 0001.mat",
     lambda t: (["run-all", "penn", "--until", "skeletons", "--data-root",
                 str(_files(t / "penn", ["labels/0001.mat", "labels/1.mat"]))], {}), 1,
     "1.mat are the same Penn Action video '0001'; remove one"),
    ("Penn dev split with 1.mat beside 0001.mat",
     lambda t: (["run-all", "penn", "--until", "skeletons", "--data-root",
                 str(_files(t / "penn", ["labels/0001.mat", "labels/1.mat"])), "--set", "data.split='dev'"],
                {}),
     1, "are the same Penn Action video '0001'"),
    ("NTU sample in two folders",
     lambda t: (["run-all", "ntu", "--until", "skeletons", "--data-root",
                 str(_files(t / "ntu", [f"{d}/S001C001P001R001A001.skeleton" for d in "ab"]))],
                {}), 1, "are the same NTU sample 'S001C001P001R001A001'"),
    ("SYSU video in two folders",
     lambda t: (["run-all", "sysu", "--until", "skeletons", "--data-root",
                 str(_files(t / "sysu", ["1/video3/sklWorld.mat", "1/video03/sklWorld.mat"]))], {}), 1,
     "are the same SYSU 3D HOI video"),
    ("custom labels.csv with one clip under two labels",
     lambda t: (["run-all", str(_write(t / "c.toml", CUSTOM)), "--until", "extract", "--data-root",
                 str(_clips(t, "a.mp4,wave,train\na.mp4,jump,train\n", ["a.mp4"]))], {}), 1,
     "a.mp4 listed again as 'jump' train (line 2: 'wave' train)"),
    ("custom labels.csv with two videos of one sample id",
     lambda t: (["run-all", str(_write(t / "c.toml", CUSTOM)), "--until", "extract", "--data-root",
                 str(_clips(t, "x/a.mp4,wave,train\nx__a.mp4,wave,test\n", ["x/a.mp4", "x__a.mp4"]))], {}),
     1, "both become the sample id 'x__a.mp4'"),
    ("pyskl file with one sample twice",
     lambda t: (["import", "pyskl", str(_pyskl(t, frame_dirs=["s1", "s2", "s1"])), "--out", str(t / "o.h5")],
                {}),
     1, "annotations 0 and 2 are both 's1'; a sample id must be unique"),
    ("pyskl file with one sample in both splits",
     lambda t: (["import", "pyskl", str(_pyskl(t, split={"xsub_train": ["s1", "s2"], "xsub_val": ["s2"]})),
                 "--out", str(t / "o.h5")], {}), 1,
     "s2 is in both xsub_train and xsub_val"),
    ("pack from a folder whose manifest is garbage",
     lambda t: (["pack", "--aligned", str(_files(t / "al", ["manifest.json"], b"\x00garbage"))], {}), 1,
     "manifest.json is not a stage manifest"),
    ("pack from a folder whose manifest has no key",
     lambda t: (["pack", "--aligned", str(_files(t / "al", ["manifest.json"], b"[1, 2]"))], {}), 1,
     "manifest.json is not a stage manifest"),
    # -- non-finite data and settings, resources
    ("--set teacher.lr=inf", lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.lr=inf"], {}), 2,
     "teacher.lr = inf: not a finite number"),
    ("--set teacher.lr=nan", lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.lr=nan"], {}), 2,
     "teacher.lr = nan: not a finite number"),
    ("--set teacher.lr=1e400 (inf in TOML)",
     lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.lr=1e400"], {}), 2, "teacher.lr = inf"),
    ("--set student.alpha=nan", lambda t: (["run-all", "demo", "--dry-run", "--set", "student.alpha=nan"], {}),
     2, "student.alpha = nan: not a finite number"),
    ("--set student.tau=-inf", lambda t: (["run-all", "demo", "--dry-run", "--set", "student.tau=-inf"], {}),
     2, "student.tau = -inf"),
    ("--set student.op=nan (training occlusion)",
     lambda t: (["run-all", "demo", "--dry-run", "--set", "student.op=nan"], {}), 2, "student.op = nan"),
    ("--set experiments.op=[0.3, nan]",
     lambda t: (["run-all", "demo", "--dry-run", "--set", "experiments.op=[0.3, nan]"], {}), 2,
     "experiments.op = nan"),
    ("--set pack.hq_fraction=nan", lambda t: (["run-all", "demo", "--dry-run", "--set", "pack.hq_fraction=nan"],
                                              {}), 2, "pack.hq_fraction = nan"),
    ("--set align.outlier=inf", lambda t: (["run-all", "demo", "--dry-run", "--set", "align.outlier=inf"], {}),
     2, "align.outlier = inf"),
    ("a simulated source's noise profile with nan",
     lambda t: (["run-all", "demo", "--dry-run", "--set", "sources.k16.profile={jitter=nan}"], {}), 2,
     "sources.k16.profile.jitter = nan"),
    ("a pipeline file with lr = inf",
     lambda t: (["run-all", str(_write(t / "inf.toml", 'base = "demo"\n[teacher]\nlr = inf\n')), "--dry-run"],
                {}), 2, "teacher.lr = inf: not a finite number"),
    ("custom data.test_fraction=nan",
     lambda t: (["run-all", str(_write(t / "c.toml", CUSTOM)), "--dry-run", "--set", "data.test_fraction=nan"],
                {}), 2, "data.test_fraction = nan"),
    ("train --lr inf", lambda t: (["train", "--stage", "teacher", "--pack", str(t), "--out", str(t / "o"),
                                   "--lr", "inf"], {}), 2, "Invalid value for '--lr': inf is not in the range 0.0<x<=1000.0"),
    ("train --alpha nan", lambda t: (["train", "--stage", "student", "--kd", "kl", "--pack", str(t), "--out",
                                      str(t / "o"), "--alpha", "nan"], {}), 2, "Invalid value for '--alpha': 'nan' is not a finite number"),
    ("a part matrix with NaN (.npy)",
     lambda t: (["train", "--stage", "student", "--kd", "pmsc", "--pack", str(t), "--out", str(t / "o"),
                 "--teacher", str(t), "--part-matrix", str(_npy(t / "E.npy", np.full((3, 5), np.nan)))], {}), 1,
     "E.npy: the part matrix holds 15 value(s) that are not finite"),
    ("a part matrix with inf (.json)",
     lambda t: (["train", "--stage", "student", "--kd", "pmsc", "--pack", str(t), "--out", str(t / "o"),
                 "--teacher", str(t), "--part-matrix", str(_write(t / "E.json", "[[1, 0, 0, 0, Infinity]]"))],
                {}), 1, "E.json: the part matrix holds 1 value(s) that are not finite"),
    ("Penn label file with NaN coordinates",
     lambda t: (["run-all", "penn", "--until", "skeletons", "--data-root", str(_penn(t, x=np.nan))], {}), 1,
     "no readable penn sample (1 bad: 2 keypoint value(s) not finite"),
    ("Penn label file with inf coordinates",
     lambda t: (["run-all", "penn", "--until", "skeletons", "--data-root", str(_penn(t, y=np.inf))], {}), 1,
     "keypoint value(s) not finite"),
    ("Penn label file with an image size of 0",
     lambda t: (["run-all", "penn", "--until", "skeletons", "--data-root",
                 str(_penn(t, dimensions=[[0, 0, 4]]))], {}), 1,
     "field 'dimensions' gives an image of 0 x 0 pixels"),
    ("NTU coordinate 1e300 (inf in float32)",
     lambda t: (["run-all", "ntu", "--until", "skeletons", "--data-root", str(_ntu(t, "1e300"))], {}), 1,
     "no readable ntu sample (1 bad: 1 keypoint value(s) not finite"),
    ("NTU coordinate nan", lambda t: (["run-all", "ntu", "--until", "skeletons", "--data-root", str(_ntu(t, "nan"))],
                                      {}), 1, "bad number 'nan'"),
    ("NTU coordinate -inf", lambda t: (["run-all", "ntu", "--until", "skeletons", "--data-root",
                                        str(_ntu(t, "-inf"))], {}), 1, "bad number '-inf'"),
    ("SYSU skeleton with NaN",
     lambda t: (["run-all", "sysu", "--until", "skeletons", "--data-root", str(_sysu(t))], {}), 1,
     "holds NaN or infinite values"),
    ("pyskl keypoints with NaN",
     lambda t: (["import", "pyskl", str(_pyskl_nan(t / "p.pkl")), "--out", str(t / "p.h5")], {}), 1,
     "sample S001C001P001R001A001: 1 keypoint value(s) not finite"),
    ("evaluate a model whose weights hold NaN",
     lambda t: (["evaluate", "--model", str(_nan_model(t / "m")), "--pack", str(t), "--out", str(t / "e")], {}), 1,
     "model.pt: weights that are not finite (NaN or inf)"),
    ("less free space than the reserve",
     lambda t: (["run-all", "demo", "--until", "skeletons"], {"SKELPIPE_MIN_FREE_MB": "1e12"}), 1,
     "not enough free space for the skeletons stage"),
    ("$SKELPIPE_MIN_FREE_MB not a number",
     lambda t: (["run-all", "demo", "--until", "skeletons"], {"SKELPIPE_MIN_FREE_MB": "lots"}), 1,
     "$SKELPIPE_MIN_FREE_MB = 'lots': expected a number of MiB"),
    # -- checkpoints, bounds, malformed inputs
    ("extract with a checkpoint whose pickle calls os.system",
     lambda t: (["extract", "--videos", str(_video(t)), "--backbone", "mobilenetv3small", "--checkpoint",
                 str(_hostile(t / "evil.pt")), "--out", str(t / "p.h5")], {}),
     1, "evil.pt: not a loadable OpenPifPaf checkpoint (it names posix.system"),
    ("extract with a bare pickle (protocol 2) as checkpoint",
     lambda t: (["extract", "--videos", str(_video(t)), "--backbone", "mobilenetv3small", "--checkpoint",
                 str(_write(t / "evil.pkl", pickle.dumps({"model": _Payload(os.system, "true")}, protocol=2))),
                 "--out", str(t / "p.h5")], {}), 1, "it names posix.system, which an OpenPifPaf network never needs"),
    ("extract with an empty checkpoint",
     lambda t: (["extract", "--videos", str(_video(t)), "--backbone", "mobilenetv3small", "--checkpoint",
                 str(_write(t / "empty.pt", b"")), "--out", str(t / "p.h5")], {}),
     1, "empty.pt: not a loadable OpenPifPaf checkpoint (EOFError)"),
    ("a pipeline source whose checkpoint calls os.system",
     lambda t: (["run-all", str(_write(t / "c.toml", CUSTOM.replace(
         'kind = "estimator"\n', f'kind = "estimator"\ncheckpoint = "{_hostile(t / "evil.pt")}"\n'))),
                 "--until", "extract", "--data-root", str(_one_clip(t))], {}), 1, "it names posix.system"),
    ("data.subjects=100000000", lambda t: (["run-all", "demo", "--dry-run", "--set", "data.subjects=100000000"], {}),
     2, "data.subjects: 100000000 is outside [3, 1000]"),
    ("pack.frames=100000000", lambda t: (["run-all", "demo", "--dry-run", "--set", "pack.frames=100000000"], {}),
     2, "[pack] frames must be <= 1000, got 100000000"),
    ("teacher.channels=[]", lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.channels=[]"], {}),
     2, "[teacher] channels must list 1 to 32 values, got []"),
    ("teacher.channels=[0]", lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.channels=[0]"], {}),
     2, "[teacher] channels must be >= 1, got (0,)"),
    ("teacher.temporal_kernel=0",
     lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.temporal_kernel=0"], {}),
     2, "temporal_kernel must be >= 1, got 0"),
    ("an even temporal kernel", lambda t: (["run-all", "demo", "--dry-run", "--set", "student.temporal_kernel=4"], {}),
     2, "[student] temporal_kernel must be odd, got 4"),
    ("a batch of 10^8", lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher.batch_size=100000000"], {}),
     2, "batch_size must be <= 65536"),
    ("experiments.splits=100000",
     lambda t: (["run-all", "demo", "--dry-run", "--set", "experiments.splits=100000"], {}),
     2, "experiments.splits: 100000 is outside [1, 30]"),
    ("extract.long_edge=10^6", lambda t: (["run-all", "demo", "--dry-run", "--set", "extract.long_edge=1000000"], {}),
     2, "extract.long_edge: 1000000 is outside [32, 8192]"),
    ("an occlusion probability above 1", lambda t: (["run-all", "demo", "--dry-run", "--set", "experiments.op=[2]"],
                                                    {}), 2, "experiments.op: 2 is outside [0.0, 1.0]"),
    ("a source of 10^6 classes",
     lambda t: (["run-all", "demo", "--dry-run", "--set", "sources.k16.num_classes=1000000"], {}),
     2, "sources.k16.num_classes: 1000000 is outside [1, 10000]"),
    ("a decoder setting of the wrong type at plan time",
     lambda t: (["run-all", "demo", "--dry-run", "--set", 'extract.decoder={seed_threshold="x"}'], {}),
     2, "[extract] decoder: seed_threshold = 'x': expected a number in [0, 1]"),
    ("a pyskl file whose label is 10^12",
     lambda t: (["import", "pyskl", str(_pyskl_label(t / "huge.pkl", 10**12)), "--out", str(t / "h.h5")], {}),
     1, "huge.pkl: annotation 0 (a): label 1000000000000 is outside [0, 10000)"),
    ("a binary pipeline file",
     lambda t: (["run-all", str(_write(t / "bin.toml", bytes(range(256)))), "--dry-run"], {}), 1, "invalid TOML"),
    ("a deeply nested pipeline file",
     lambda t: (["run-all", str(_write(t / "deep.toml", "a = " + "[" * 100_000 + "]" * 100_000)), "--dry-run"], {}),
     1, "deep.toml: invalid TOML (nested too deeply)"),
    ("a base that is not a name", lambda t: (["run-all", str(_write(t / "b.toml", "base = 5\n")), "--dry-run"], {}),
     2, "base = 5: expected the name or path of another pipeline"),
    ("--set teacher=5", lambda t: (["run-all", "demo", "--dry-run", "--set", "teacher=5"], {}), 2,
     "[teacher] must be a table of settings, got 5"),
    ("evaluate --op 5",
     lambda t: (["evaluate", "--model", str(_model(t)), "--pack", str(t), "--out", str(t / "e"), "--op", "5"], {}),
     2, "Invalid value for '--op': 5.0 is not in the range 0.0<=x<=1.0"),
    ("evaluate --batch-size 0",
     lambda t: (["evaluate", "--model", str(_model(t)), "--pack", str(t), "--out", str(t / "e"), "--batch-size",
                 "0"], {}), 2, "Invalid value for '--batch-size'"),
    ("extract --long-edge -5",
     lambda t: (["extract", "--videos", str(_video(t)), "--backbone", "mobilenetv3small", "--out", str(t / "p.h5"),
                 "--long-edge", "-5"], {}), 2, "Invalid value for '--long-edge': -5 is not in the range 32<=x<=8192"),
    ("extract --max-people 0",
     lambda t: (["extract", "--videos", str(_video(t)), "--backbone", "mobilenetv3small", "--out", str(t / "p.h5"),
                 "--max-people", "0"], {}), 2, "Invalid value for '--max-people'"),
    ("extract --decoder-setting cif_neighbors=-5",
     lambda t: (["extract", "--videos", str(_video(t)), "--backbone", "mobilenetv3small", "--out", str(t / "p.h5"),
                 "--decoder-setting", "cif_neighbors=-5"], {}), 1, "cif_neighbors = -5: expected an integer in [1, 64]"),
    ("align --outlier nan",
     lambda t: (["align", "--hq", str(_store(t / "hq.h5")), "--lq", str(_store(t / "lq.h5")), "--outlier", "nan"], {}),
     2, "'nan' is not a finite number"),
    ("partmatrix --batch-size 0",
     lambda t: (["partmatrix", "--teacher", str(_model(t)), "--pack", str(t), "--batch-size", "0"], {}),
     2, "Invalid value for '--batch-size': 0 is not in the range 1<=x<=65536"),
    ("a store without its layout",
     lambda t: (["export", "pyskl", "--store", str(_store(t / "s.h5", lambda f: f.attrs.__delitem__("layout"))),
                 "--out", str(t / "s.pkl")], {}), 1, "s.h5: damaged pose store (no layout attribute)"),
    ("a store without samples",
     lambda t: (["export", "pyskl", "--store", str(_store(t / "s.h5", lambda f: f.__delitem__("samples"))),
                 "--out", str(t / "s.pkl")], {}), 1, "s.h5: damaged pose store (no samples group)"),
    ("a store sample without keypoints",
     lambda t: (["align", "--hq", str(_store(t / "hq.h5")), "--lq", str(_store(
         t / "lq.h5", lambda f: f["samples/s0"].__delitem__("keypoints"))), "--cache-dir", str(t / "c")], {}),
     1, "lq.h5: sample 's0' has no keypoints array"),
    ("a store label of -3",
     lambda t: (["export", "pyskl", "--store", str(_store(t / "s.h5", lambda f: f["samples/s1"].attrs.__setitem__(
         "label", -3))), "--out", str(t / "s.pkl")], {}), 1, "sample s1: label -3 is outside [0, 10000)"),
    ("a store label of 1e9",
     lambda t: (["export", "pyskl", "--store", str(_store(t / "s.h5", lambda f: f["samples/s1"].attrs.__setitem__(
         "label", 1e9))), "--out", str(t / "s.pkl")], {}), 1, "sample s1: label 1000000000.0 is not an integer"),
    ("an empty model.pt given to predict",
     lambda t: (["predict", str(_write(t / "v.mp4", b"x")), "--model", str(_model(t, weights=b""))], {}),
     1, "model.pt: cannot load the weights (EOFError)"),
    ("an empty model.pt given to evaluate",
     lambda t: (["evaluate", "--model", str(_model(t, weights=b"")), "--pack", str(t), "--out", str(t / "e")], {}),
     1, "model.pt: cannot load the weights (EOFError)"),
    ("an empty model.pt given to export onnx",
     lambda t: (["export", "onnx", "--model", str(_model(t, weights=b"")), "--out", str(t / "m.onnx")], {}),
     1, "model.pt: cannot load the weights (EOFError)"),
    ("model.json without backbone",
     lambda t: (["export", "onnx", "--model", str(_model(t, net={"backbone": None})), "--out", str(t / "m.onnx")], {}),
     1, "model.json: the model section lacks backbone"),
    ("model.json of 10^12 classes",
     lambda t: (["evaluate", "--model", str(_model(t, net={"num_classes": 10**12})), "--pack", str(t), "--out", str(t / "e")],
                {}), 1, "model.json: num_classes must be an integer in [1, 10000], got 1000000000000"),
    ("model.json without its training config, given to evaluate",
     lambda t: (["evaluate", "--model", str(_model(t, config=None)), "--pack", str(t), "--out", str(t / "e")], {}),
     1, "model.json: no training config and stage"),
    ("a cache folder under a file",
     lambda t: (["run-all", "demo", "--until", "skeletons", "--cache-dir", str(_write(t / "f", "x") / "c")], {}),
     1, "f/c/skeletons: Not a directory"),
    ("an output store under a file",
     lambda t: (["import", "pyskl", str(_pyskl_label(t / "a.pkl", 0)), "--out", str(_write(t / "f", "x") / "a.h5")], {}),
     1, "f: a file, not a directory"),
    ("an output file in a missing folder",
     lambda t: (["export", "pyskl", "--store", str(_store(t / "s.h5")), "--out", str(t / "nodir" / "s.pkl")], {}),
     1, "nodir/s.pkl: its folder does not exist or is not a directory"),
    ("cache gc --older-than -5", lambda t: (["cache", "gc", "--older-than", "-5"], {}), 2,
     "Invalid value for '--older-than': -5.0 is not in the range x>=0"),
    ("cache gc --older-than nan", lambda t: (["cache", "gc", "--older-than", "nan"], {}), 2,
     "'nan' is not a finite number"),
    ("a pack whose labels are not indices of its classes",
     lambda t: (["evaluate", "--model", str(_model(t)), "--pack", str(_pack(t, label=[0, 50])), "--out",
                 str(t / "e")], {}), 1, "data.h5: the test split holds labels outside [0, 2) (0 to 50)"),
    ("a pack split without its LQ array",
     lambda t: (["evaluate", "--model", str(_model(t)), "--pack", str(_pack(t, drop="lq")), "--out", str(t / "e")],
                {}), 1, "data.h5: the test split has no lq (not written by the pack stage)"),
    ("a model of other classes than its pack",
     lambda t: (["evaluate", "--model", str(_model(t, classes=3)), "--pack", str(_pack(t)), "--out",
                 str(t / "e")], {}), 1, "model of 3 classes, the data of"),
    ("a decoder threshold of NaN",
     lambda t: (["extract", "--videos", str(_video(t)), "--backbone", "mobilenetv3small", "--out", str(t / "p.h5"),
                 "--decoder-setting", "seed_threshold=NaN"], {}), 1, "seed_threshold = nan: expected a number in [0, 1]"),
    ("extract --fps 0",
     lambda t: (["extract", "--videos", str(_video(t)), "--backbone", "mobilenetv3small", "--out", str(t / "p.h5"),
                 "--fps", "0"], {}), 2, "Invalid value for '--fps'"),
    ("import pyskl --num-classes 100000",
     lambda t: (["import", "pyskl", str(_pyskl_label(t / "a.pkl", 0)), "--out", str(t / "a.h5"), "--num-classes",
                 "100000"], {}), 2, "Invalid value for '--num-classes': 100000 is not in the range 1<=x<=10000"),
    ("bench train --frames 0", lambda t: (["bench", "train", "--frames", "0"], {}), 2,
     "Invalid value for '--frames': 0 is not in the range 1<=x<=1000"),
    ("201 seeds", lambda t: (["run-all", "demo", "--dry-run", "--set", f"experiments.seeds={list(range(201))}"], {}),
     2, "experiments.seeds: 201 values, at most 100"),
    ("a pyskl source without its file",
     lambda t: (["run-all", "demo", "--dry-run", "--set", 'sources.k16.kind="pyskl"'], {}), 2,
     "sources.k16.file missing (a source of kind 'pyskl' needs one)"),
    ("a simulated estimator that simulates from itself",
     lambda t: (["run-all", "demo", "--dry-run", "--set", 'sources.k16.simulate_from="k16"'], {}), 2,
     "sources.k16 simulates from 'k16', which is not a dataset or pyskl source"),
]


def _files(root: Path, names, content: bytes = b"junk") -> Path:
    for name in names:
        _write(root / name, content)
    return root


def _clips(t: Path, rows: str, videos) -> Path:
    _files(t / "clips", videos, b"")
    _write(t / "clips" / "labels.csv", "video,label,split\n" + rows)
    return t / "clips"


def _pyskl(t: Path, frame_dirs=("s1", "s2"), split=None) -> Path:
    items = [{"frame_dir": f, "label": 0, "img_shape": (64, 64), "total_frames": 2,
              "keypoint": np.zeros((1, 2, 17, 2), np.float32),
              "keypoint_score": np.ones((1, 2, 17), np.float32)}
             for f in frame_dirs]
    return _write(t / "a.pkl", pickle.dumps({"split": split or {}, "annotations": items}))


def _nan_model(out: Path) -> Path:
    """A finished training run (model.json, model.pt) of a tiny teacher with one NaN weight."""
    from skelpipe.learn.checkpoint import save_model
    from skelpipe.learn.models import ModelConfig, build_model
    model = build_model(ModelConfig("stgcn", "ntu25", 3, 3, (8, 8, 16, 16), 3, 2, 0.0, "mean"))
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] = float("nan")
    save_model(out, model, {"config_key": "nan"})
    return out


def _npy(path: Path, array) -> Path:
    np.save(path, array)
    return path


def _penn(t: Path, **override) -> Path:
    """A Penn root holding one label file; ``x`` / ``y``: the value of two joints in frame 2,
    ``dimensions``: the field itself."""
    import scipy.io
    n = 4
    fields = {"action": "squat", "pose": "front", "x": np.full((n, 13), 100.0), "y": np.full((n, 13), 50.0),
              "visibility": np.ones((n, 13), np.uint8), "train": np.array([[1]]), "bbox": np.zeros((n, 4)),
              "dimensions": np.array([[270, 480, n]]), "nframes": np.array([[n]], np.uint8)}
    for name, value in override.items():
        if name in ("x", "y"):
            fields[name][1, 2:4] = value
        else:
            fields[name] = np.array(value)
    (t / "penn" / "labels").mkdir(parents=True)
    scipy.io.savemat(str(t / "penn" / "labels" / "0001.mat"), fields)
    return t / "penn"


def _ntu(t: Path, value: str) -> Path:
    """An NTU root holding one two-frame .skeleton file whose joint 4 of frame 2 has x = ``value``."""
    lines = ["2"]
    for frame in range(2):
        lines += ["1", "72057594037931101 0 1 1 0 1 0 0.05 0.02 2", "25"]
        lines += [" ".join([value if (frame, j) == (1, 3) else "0.1"] + ["0.2"] * 10 + ["2"]) for j in range(25)]
    return _write(t / "ntu" / "nturgb+d_skeletons" / "S001C001P001R001A001.skeleton",
                  "\r\n".join(lines) + "\r\n").parent.parent


def _sysu(t: Path) -> Path:
    """A SYSU root holding one video whose world skeleton has a NaN."""
    import scipy.io
    world = np.ones((20, 3, 6))
    world[4, 1, 2] = np.nan
    (t / "sysu" / "1" / "video1").mkdir(parents=True)
    scipy.io.savemat(str(t / "sysu" / "1" / "video1" / "sklWorld.mat"), {"SW": world})
    return t / "sysu"


def _pyskl_nan(path: Path) -> Path:
    """A pyskl file of one NTU-25 3D item with a NaN coordinate."""
    import pickle
    kp = np.ones((1, 5, 25, 3), np.float32)
    kp[0, 2, 7, 0] = np.nan
    items = [{"frame_dir": "S001C001P001R001A001", "label": 0, "total_frames": 5, "keypoint": kp}]
    return _write(path, pickle.dumps({"split": {}, "annotations": items}))


CUSTOM = """name = "mine"
dataset = "custom"
[sources.a]
kind = "estimator"
backbone = "shufflenetv2k16"
[sources.b]
kind = "estimator"
backbone = "mobilenetv3small"
[[settings]]
name = "s"
hq = "a"
lq = "b"
[teacher]
[student]
[[experiments]]
kd = ["none"]
"""


@pytest.mark.slow
@pytest.mark.parametrize("what,setup,status,message", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_input_catalogue(what, setup, status, message, tmp_path):
    args, env = setup(tmp_path)
    env = {**os.environ, "SKELPIPE_CACHE": str(tmp_path / "cache"), "CUDA_VISIBLE_DEVICES": "", **env}
    if env.get("SKELPIPE_PENN_ROOT") == "":
        del env["SKELPIPE_PENN_ROOT"]
    proc = subprocess.run([sys.executable, "-m", "skelpipe", *args], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=120)
    errors = [line for line in proc.stderr.splitlines() if re.match(r"(error|Error|Usage)", line)]
    assert proc.returncode == status, proc.stderr
    assert "Traceback" not in proc.stderr
    assert message in proc.stderr, proc.stderr
    assert errors and (len([e for e in errors if e.startswith("error:")]) <= 1)
