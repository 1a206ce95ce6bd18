"""Shared test fixtures and the setups several test modules use: reduced demo runs and plans,
synthetic splits, packs and teachers, and files as the datasets and tools write them. Tests run
on 2 CPU cores, never touch the network, and use the real files in ../shared/data only when
present (skipping cleanly otherwise)."""

import json
import os
import pickle
import pickletools
import re
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data, or skip the test when this checkout has none beside it."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own cache root, so nothing leaks into ./cache."""
    monkeypatch.setenv("SKELPIPE_CACHE", str(tmp_path / "cache"))


# Overrides that make the demo small enough to run end to end in a test: DEMO_REDUCED, 6 subjects,
# one repetition, one OP and seed, a few epochs; DEMO_TINY_NETS, short clips and networks of three
# small blocks trained 2 epochs (the caller adds the data.* settings).
DEMO_REDUCED = ["data.subjects=6", "data.reps=1", "data.test_reps=1", "experiments.op=[0.3]",
                "experiments.seeds=[0]", "teacher.epochs=8", "student.epochs=6", "teacher.milestones=[6]",
                "student.milestones=[4]", "experiments.init=['random']"]
DEMO_TINY_NETS = ["pack.frames=32", "experiments.seeds=[0]",
                  "teacher.channels=[8, 8, 16]", "student.channels=[8, 8, 16]",
                  "teacher.epochs=2", "student.epochs=2", "teacher.milestones=[1]", "student.milestones=[1]",
                  "teacher.batch_size=16", "student.batch_size=16", "experiments.init=['random']"]


def set_args(overrides) -> list[str]:
    """``--set O`` for each override O, as run-all takes them."""
    return [a for o in overrides for a in ("--set", o)]


def run_all_command(cache: Path, overrides, report: Path | None = None) -> list[str]:
    """``python -m skelpipe run-all demo`` on the CPU into ``cache``, its report beside it in
    ``<cache>-report`` unless ``report`` is given."""
    report = report or cache.parent / f"{cache.name}-report"
    return [sys.executable, "-m", "skelpipe", "run-all", "demo", "--cache-dir", str(cache), "--report-dir",
            str(report), "--device", "cpu", *set_args(overrides)]


def run_outcome(cache: Path) -> dict:
    """What a run leaves: results (cache paths masked), every model's weights, pack, part matrix."""
    import torch

    text = (cache.parent / f"{cache.name}-report" / "results.json").read_text()
    out = {"results": json.loads(text.replace(str(cache), "CACHE"))}
    for model in sorted(cache.glob("*/*/model.pt")):
        state = torch.load(model, weights_only=True)
        out[str(model.relative_to(cache))] = {k: v.numpy().tobytes() for k, v in state.items()}
    for f in sorted(cache.glob("pack/*/data.h5")) + sorted(cache.glob("partmatrix/*/part_matrix.npy")):
        out[str(f.relative_to(cache))] = f.read_bytes()
    return out


@pytest.fixture
def cache(tmp_path):
    """A stage cache of the test's own."""
    from skelpipe.pipeline.cache import Cache

    return Cache(tmp_path / "cache")


@pytest.fixture
def plan_of(cache):
    """``plan_of(name, *overrides, data_root=None)``: the built plan of a pipeline (a shipped
    name or a .toml path) with ``--set`` overrides, on the CPU, keyed in the test's cache."""
    from skelpipe.pipeline.config import load_pipeline
    from skelpipe.pipeline.plan import Plan

    def build(name, *overrides, data_root=None):
        return Plan(load_pipeline(name, list(overrides)), cache, data_root, "cpu").build()

    return build


# Training on synthetic data: networks of four small blocks, splits of random class poses.
TINY = dict(channels=(8, 8, 16, 16), temporal_kernel=3, device="cpu")


def make_split(n=48, num_classes=3, frames=16, seed=0, paired_fraction=1.0, noise=0.1):
    """A learnable synthetic split: each class is a fixed random pose (HQ ntu25 3D, LQ coco17),
    plus per-frame noise; the first instances lose their HQ."""
    from skelpipe.data.split import Split
    from skelpipe.skeleton import layouts

    rng = np.random.default_rng(seed)
    label = np.arange(n) % num_classes

    def skeletons(layout):
        v = layouts.get(layout).num_joints
        prototypes = rng.normal(size=(num_classes, 3, 1, v, 1))
        x = prototypes[label] + noise * rng.normal(size=(n, 3, frames, v, 2))
        return x.astype(np.float32)

    has_hq = np.ones(n, bool)
    has_hq[: int(round(n * (1 - paired_fraction)))] = False
    hq = skeletons("ntu25")
    hq[~has_hq] = 0
    return Split(
        lq=skeletons("coco17"), hq=hq, has_hq=has_hq, label=label.astype(np.int64),
        ids=[f"i{k:03d}" for k in range(n)],
        attrs={"hq_layout": "ntu25", "lq_layout": "coco17", "num_classes": num_classes,
               "class_names": [f"class{c}" for c in range(num_classes)], "key": f"synthetic-{seed}"})


def save_random_teacher(out_dir: Path, num_classes=3, seed=0) -> Path:
    """An untrained (random) TINY ntu25 teacher saved as a finished run: enough for the mechanics."""
    from skelpipe.learn.checkpoint import save_model
    from skelpipe.learn.models import ModelConfig, build_model

    import torch

    torch.manual_seed(seed)
    model = build_model(ModelConfig("stgcn", "ntu25", 3, num_classes, TINY["channels"], TINY["temporal_kernel"]))
    out_dir.mkdir(parents=True)
    save_model(out_dir, model, {"stage": "teacher", "config_key": f"random-{seed}"})
    return out_dir


@pytest.fixture
def random_teacher(tmp_path) -> Path:
    """The run directory of a random 3-class teacher (save_random_teacher)."""
    return save_random_teacher(tmp_path / "teacher")


def write_pack(pack_dir: Path, train_split, test_split):
    """A pack directory in pack.py's format (data.h5 with /train and /test)."""
    import h5py

    pack_dir.mkdir(parents=True)
    with h5py.File(pack_dir / "data.h5", "w") as f:
        for k, v in train_split.attrs.items():
            if k != "key":
                f.attrs[k] = json.dumps(v) if isinstance(v, list) else v
        f.attrs["test_seed"] = 0
        for name, sp in (("train", train_split), ("test", test_split)):
            g = f.create_group(name)
            g["lq"], g["hq"], g["has_hq"], g["label"] = sp.lq, sp.hq, sp.has_hq, sp.label
            g["hq_available"] = sp.has_hq
            g["length"] = np.full(len(sp.label), sp.lq.shape[2], np.int32)
            g["ids"] = np.array(sp.ids, dtype="S")


# Files as the datasets and tools write them. An NTU RGB+D .skeleton file of four frames:
ID_A = "72057594037931101"   # body ids are 17-digit tracking ids, as in the dataset
ID_B = "72057594037965866"


def body(body_id, seed, lean=(0.02764709, 0.05745083), offset=0.0, scale=1.0):
    """One body in one frame: its 9 body fields and (25, 12) joint values with short decimals
    (so that the text round trip is exact)."""
    rng = np.random.default_rng(seed)
    j = np.round(rng.uniform(-1, 1, size=(25, 12)), 4)
    j[:, 0:3] = np.round(offset + scale * j[:, 0:3], 4)
    j[:, 2] += 3.0                                        # z: metres in front of the camera
    j[:, 3:5] = np.round(256 + 200 * j[:, 3:5], 3)         # depth image pixels
    j[:, 5:7] = np.round(960 + 800 * j[:, 5:7], 3)         # colour image pixels
    j[:, 11] = rng.integers(0, 3, size=25)                 # tracking state 0/1/2
    info = [seed % 2, 1, seed % 3, 0, 1, 0, lean[0], lean[1], 2]
    return body_id, info, j


def skeleton_text(frames) -> bytes:
    """The dataset's format: frame count, then per frame the body count and per body the
    10 body fields, the joint count and 25 joint lines; CRLF line ends."""
    out = [str(len(frames))]
    for bodies in frames:
        out.append(str(len(bodies)))
        for body_id, info, j in bodies:
            out.append(" ".join([body_id] + [repr(v) if isinstance(v, float) else str(v)
                                              for v in info]))
            out.append(str(len(j)))
            for row in j:
                out.append(" ".join(f"{v:.7g}" for v in row[:11]) + f" {int(row[11])}")
    return ("\r\n".join(out) + "\r\n").encode("ascii")


SKELETON_FRAMES = [
    [body(ID_A, 1)],                      # frame 0: A
    [body(ID_A, 2), body(ID_B, 3)],       # frame 1: A and B
    [],                                   # frame 2: nobody
    [body(ID_B, 4, lean=(-0.5, 0.25))],   # frame 3: B
]


def write_penn_label(path, n=40, action="tennis_serve", train=1, nframes_dtype=np.uint8, drop=(),
                     **override):
    """A Penn Action label file in the dataset's layout (MATLAB v5, the dtypes of the real files)."""
    import scipy.io

    nframes = n
    rng = np.random.default_rng(nframes)
    fields = {
        "action": action,
        "pose": "left",
        "x": np.round(rng.uniform(0, 480, size=(nframes, 13)), 2),
        "y": np.round(rng.uniform(0, 270, size=(nframes, 13)), 2),
        "visibility": rng.integers(0, 2, size=(nframes, 13)).astype(np.uint8),
        "train": np.array([[train]], dtype=np.int32),
        "bbox": np.round(rng.uniform(0, 270, size=(nframes, 4)), 2),
        "dimensions": np.array([[270, 480, nframes]], dtype=np.uint16),
        "nframes": np.array([[nframes]], dtype=nframes_dtype),
    }
    fields.update(override)
    for name in drop:
        del fields[name]
    scipy.io.savemat(str(path), fields)
    return fields


# pyskl annotation pickles, of samples named as NTU's.
NTU_IDS = [f"S001C001P00{i + 1}R001A00{i % 3 + 1}" for i in range(4)]


def dump(data, protocol=4, core="_core") -> bytes:
    """``data`` pickled by pickle itself, naming numpy's rebuilders ``numpy.<core>.*`` whatever
    this numpy calls them: as written under numpy 1 (``core``) or numpy 2 (``_core``). The names
    are rewritten op by op; frames, which are optional, are left out, as their lengths change."""
    blob = pickle.dumps(data, protocol=protocol)
    ops = list(pickletools.genops(blob))
    out = bytearray()
    for (op, arg, pos), end in zip(ops, [p for _, _, p in ops[1:]] + [len(blob)]):
        if op.name == "FRAME":
            continue
        if isinstance(arg, str) and re.match(r"numpy\._?core\.", arg):
            name = re.sub(r"^numpy\._?core", f"numpy.{core}", arg).encode()
            assert op.name in ("GLOBAL", "SHORT_BINUNICODE"), op.name
            if op.name == "GLOBAL":
                out += b"c" + name.replace(b" ", b"\n") + b"\n"
            else:
                out += b"\x8c" + bytes([len(name)]) + name
        else:
            out += blob[pos:end]
    return bytes(out)


def pyskl_2d(n=4, seed=0, lists="ntu"):
    """A file in pyskl's exact structure (as its ntu60_hrnet.pkl): 2D HRNet-like float16 poses,
    numpy-int64 labels (as mmcv's tools leave them), a non-contiguous array, and a last item in
    which no person was found (M = 0)."""
    rng = np.random.default_rng(seed)
    items = []
    for i, sid in enumerate(NTU_IDS[:n]):
        t, m = 10 + i, (0 if i == n - 1 else 2)
        kp = rng.uniform(0, 1000, (t, 17, m, 2)).astype(np.float16).transpose(2, 0, 1, 3)
        items.append({"frame_dir": sid, "label": np.int64(i % 3), "total_frames": t,
                      "img_shape": (1080, 1920), "original_shape": (540, 960), "keypoint": kp,
                      "keypoint_score": rng.uniform(0, 1, (m, t, 17)).astype(np.float16)})
    return {"split": split_lists(lists, [it["frame_dir"] for it in items]), "annotations": items}


def pyskl_3d(n=3, seed=1):
    """pyskl's ntu60_3danno.pkl structure: NTU-25 3D, no score, no image size."""
    rng = np.random.default_rng(seed)
    items = [{"frame_dir": sid, "label": np.int64(i), "total_frames": 8,
              "keypoint": rng.normal(0, 1, (1 + i % 2, 8, 25, 3)).astype(np.float32)}
             for i, sid in enumerate(NTU_IDS[:n])]
    return {"split": split_lists("ntu", [it["frame_dir"] for it in items]), "annotations": items}


def split_lists(naming, ids) -> dict:
    """The split lists of real files: NTU (two pairs), UCF101/HMDB51 (three numbered pairs: the
    pair k holds the first k ids in test), FineGYM/Kinetics (train + val), Diving48 (train + test)."""
    if naming == "ntu":
        return {"xsub_train": ids[:-1], "xsub_val": ids[-1:], "xview_train": ids[:1], "xview_val": ids[1:]}
    if naming == "ucf":
        return {name: lst for k in (1, 2, 3) for name, lst in ((f"train{k}", ids[k:]), (f"test{k}", ids[:k]))}
    return {"train": ids[:-1], naming: ids[-1:]}


def write_pyskl(path, data, protocol=4, core="_core"):
    """``data`` written as a pickle of that protocol and numpy naming (dump)."""
    path.write_bytes(dump(data, protocol, core))
    return path


def noise_video(path, n=6, size=(64, 48), fps=25.0) -> Path:
    """An MJPG video of random frames."""
    import cv2

    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    rng = np.random.default_rng(len(str(path)))
    for _ in range(n):
        w.write(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
    w.release()
    return Path(path)


# The clips that predict is tested on: CLIP_W × CLIP_H pixels, CLIP_FRAMES frames.
CLIP_W, CLIP_H, CLIP_FRAMES = 96, 64, 20


def coco_people(seed: int, frames: int = CLIP_FRAMES, people: int = 1) -> np.ndarray:
    """(M, T, 17, 3) pixel poses inside a CLIP_W×CLIP_H image; person 1 absent in the second half."""
    rng = np.random.default_rng(seed)
    kp = np.zeros((people, frames, 17, 3), np.float32)
    for m in range(people):
        base = rng.uniform([10, 8], [CLIP_W - 10, CLIP_H - 8], size=(17, 2))
        drift = rng.normal(0, 1.0, size=(frames, 1, 2)).cumsum(axis=0)
        kp[m, :, :, :2] = np.clip(base + drift, 1, [CLIP_W - 1, CLIP_H - 1])
        kp[m, :, :, 2] = rng.uniform(0.3, 1.0, size=(frames, 17))
    kp[0, :, 3, :] = 0                     # a joint never found: x = y = conf = 0
    if people > 1:
        kp[1, frames // 2:] = 0
    return kp


def stick_figure_video(path: Path, frames: int = CLIP_FRAMES) -> Path:
    """A small synthetic mp4v video: a bright stick figure moving over a dark background."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (CLIP_W, CLIP_H))
    assert writer.isOpened()
    for t in range(frames):
        frame = np.full((CLIP_H, CLIP_W, 3), 30, np.uint8)
        x = 30 + t
        cv2.circle(frame, (x, 14), 5, (220, 220, 220), -1)
        cv2.line(frame, (x, 19), (x, 40), (220, 220, 220), 3)
        cv2.line(frame, (x, 40), (x - 8, 60), (220, 220, 220), 3)
        cv2.line(frame, (x, 40), (x + 8, 60), (220, 220, 220), 3)
        writer.write(frame)
    writer.release()
    return path


def fake_extraction(monkeypatch, keypoints, calls=None):
    """Replace OpenPifPaf by fixed poses (the extraction itself is tested in test_extract)."""
    from skelpipe.pipeline import predict

    def extract_poses(video, config):
        if calls is not None:
            calls.append(config.backbone)
        return keypoints, {"image_size": [CLIP_W, CLIP_H], "fps": 25.0, "num_frames": keypoints.shape[1]}

    monkeypatch.setattr(predict, "extract_poses", extract_poses)
