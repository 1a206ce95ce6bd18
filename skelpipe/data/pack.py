"""pack: the training tensors. An aligned HQ/LQ store pair becomes one HDF5 file per stage.

``<stage dir>/data.h5``::

    /            attrs: everything ``load_split`` returns in ``attrs`` (layouts, channels, classes,
                        T, extractor, benchmark, normalisation, HQ fraction and pair seed, ...)
    /train, /test
        lq       (N, C_L, T, V_L, M)  float16 or float32, contiguous (one-shot reads)
        hq       (N, C_H, T, V_H, M)  zeros where the instance has no HQ
        has_hq   (N,) bool   train: D_pair after the HQ-fraction draw; test: HQ available
        hq_available (N,) bool  an HQ skeleton exists (before the draw)
        label    (N,) int64
        length   (N,) int32  frames before padding
        ids      (N,) str

Normalisation (recorded in the attrs ``lq_normalisation`` / ``hq_normalisation``):

- 2D (x, y, confidence) in pixels of a W×H image: ``x' = (x - W/2) / S``, ``y' = (y - H/2) / S``
  with ``S = max(W, H)`` (aspect ratio kept; the image spans [-0.5, 0.5] on its long side);
  confidence unchanged. A missing joint (x = y = 0) stays exactly zero in every channel.
- 3D (x, y, z): minus the centre joint of the first frame in which the first person is present:
  ``spine_mid`` for ntu25 (CTR-GCN's practice), its Kinect v1 equivalent ``spine`` for kinect20;
  for every person and frame. Absent persons and padding stay zero.

Time: sequences longer than T are truncated, shorter ones zero-padded at the end; with
``sample_frames = K`` a sequence longer than K is sampled uniformly to K frames (T becomes K).

Occlusion is not baked in: the LQ test tensors are clean, and evaluation applies
``skelpipe.skeleton.noise.occlusion_mask`` with seeds ``noise.test_seeds(test_seed, ids, split)`` (a
hash of the seed, the split's name and each sample's id). The mask is a pure function of those, so this
IS one fixed draw per test instance, the same in every evaluation, without storing a degraded
copy per (p, mode, seed) (see ``degrade``).
"""

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import h5py
import numpy as np

from skelpipe.core import atomic
from skelpipe.core.disk import check_free
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fields import MAX_FRAMES, MAX_PEOPLE, MAX_SEED, bounded, check_ranges, from_section
from skelpipe.data import datasets
from skelpipe.data.pairing import draw_pairs
from skelpipe.data.split import FILE, SPLITS
from skelpipe.skeleton import layouts
from skelpipe.skeleton.store import PoseStore, label_problem, open_store

BENCHMARKS = ("default",) + tuple(b for d in datasets.DATASETS.values() for b in d.benchmarks)
# Centre joint for 3D normalisation, per layout.
CENTRE_3D = {"ntu25": "spine_mid", "kinect20": "spine"}


@dataclass
class PackConfig:
    """Settings of the pack stage (all part of its cache key; names as in pipelines/*.toml [pack])."""
    benchmark: str = "default"  # split rule, see split_of
    split: int = bounded(0, 0, 29)                 # SYSU: which of the 30 random splits
    frames: int = bounded(300, 1, MAX_FRAMES)      # T: pad / truncate to this many frames
    sample_frames: int = bounded(0, 0, MAX_FRAMES)  # > 0: uniform temporal sampling to this many frames instead
    max_people: int = bounded(2, 1, MAX_PEOPLE)
    dtype: str = "float32"      # storage: "float32" or "float16"
    hq_fraction: float = bounded(1.0, high=1.0, above=0.0)  # D_pair fraction of training instances (class-stratified)
    pair_seed: int = bounded(0, 0, MAX_SEED)
    test_seed: int = bounded(0, 0, MAX_SEED)       # base seed of the fixed per-instance test occlusion

    def __post_init__(self):
        if self.benchmark not in BENCHMARKS:
            raise SkelpipeError(f"pack: unknown benchmark {self.benchmark!r}; known: {', '.join(BENCHMARKS)}")
        if self.dtype not in ("float32", "float16"):
            raise SkelpipeError(f"pack: dtype must be float32 or float16, not {self.dtype!r}")
        check_ranges("pack", self)

    @classmethod
    def from_dict(cls, config: dict) -> "PackConfig":
        return from_section("pack", cls, config)

    @property
    def length(self) -> int:
        return int(self.sample_frames) if self.sample_frames else int(self.frames)


class Member(NamedTuple):
    """An instance chosen for a split, with what packing it needs from its attributes."""
    id: str
    label: int
    label_name: str | None
    lq_size: list | None   # image size (W, H) of 2D LQ
    has_hq: bool
    hq_size: list | None   # image size of 2D HQ


# ---------------------------------------------------------------- normalisation


def is_3d(layout: layouts.Layout, channels: str | None, C: int) -> bool:
    if channels:
        return "z" in channels.split(",")
    return layout.name in CENTRE_3D and C == 3


def normalise_2d(kp: np.ndarray, image_size) -> np.ndarray:
    """(M, T, V, C) pixels → centred, divided by the long image side; missing joints stay 0."""
    W, H = (float(v) for v in image_size)
    s = max(W, H)
    out = kp.astype(np.float32, copy=True)
    missing = (kp[..., 0] == 0) & (kp[..., 1] == 0)
    out[..., 0] = (kp[..., 0] - W / 2) / s
    out[..., 1] = (kp[..., 1] - H / 2) / s
    out[missing] = 0
    return out


def normalise_3d(kp: np.ndarray, layout: layouts.Layout) -> np.ndarray:
    """(M, T, V, 3) minus the centre joint of the first frame where the first person is present."""
    out = kp.astype(np.float32, copy=True)
    centre = layout.index(CENTRE_3D.get(layout.name, layout.joints[layout.center]))
    present = np.abs(kp).sum(axis=(2, 3)) > 0  # (M, T)
    for m in range(kp.shape[0]):
        frames = np.flatnonzero(present[m])
        if len(frames):
            origin = kp[m, frames[0], centre]
            break
    else:
        return out
    joint_present = np.abs(kp).sum(axis=3, keepdims=True) > 0
    return np.where(joint_present, out - origin, 0).astype(np.float32)


def normalisation_text(layout: layouts.Layout, three_d: bool) -> str:
    if three_d:
        centre = CENTRE_3D.get(layout.name, layout.joints[layout.center])
        return (f"3d: minus {centre} of the first frame in which the first person is present; "
                "absent joints stay 0")
    return "2d: x'=(x-W/2)/max(W,H), y'=(y-H/2)/max(W,H), confidence unchanged; missing joints (x=y=0) stay 0"


def frame_indices(n: int, cfg: PackConfig) -> np.ndarray:
    """Which of a sequence's n frames go into the packed tensor, in order."""
    if cfg.sample_frames and n > cfg.sample_frames:
        return np.linspace(0, n - 1, int(cfg.sample_frames)).round().astype(np.int64)
    return np.arange(min(n, cfg.length))


def to_tensor(kp: np.ndarray, idx: np.ndarray, T: int, M: int) -> np.ndarray:
    """(M', T', V, C) → (C, T, V, M) with the chosen frames, zero-padded / truncated."""
    Mk, _, V, C = kp.shape
    out = np.zeros((C, T, V, M), np.float32)
    m = min(M, Mk)
    out[:, :len(idx), :, :m] = kp[:m, idx].transpose(3, 1, 2, 0)
    return out


# ---------------------------------------------------------------- splits


def split_of(sample_id: str, attrs: dict, cfg: PackConfig) -> str | None:
    """"train", "test", or None (not in this benchmark) for one instance.

    ``default``: the sample's ``split`` attribute (Penn Action's train flag, the demo's
    cross-subject split); a dataset's own benchmark (NTU's protocols, SYSU's settings and
    their ``cfg.split``-th random split): that dataset's ``split_of``.
    """
    owner = datasets.for_benchmark(cfg.benchmark)
    if owner is None:
        split = attrs.get("split")
        return split if split in SPLITS else None
    return owner.split_of(sample_id, attrs, cfg.benchmark, cfg.split)


# ---------------------------------------------------------------- packing


def pack(aligned_dir, work, **config) -> dict:
    """Pack the aligned pair ``aligned_dir/{hq,lq}.h5`` into ``data.h5``; returns counts per split.

    ``work``: the stage's ``Work`` (the file goes to ``work.dir``, bad instances are reported
    there, counts noted in the manifest). ``config``: the ``PackConfig`` fields.
    """
    cfg = PackConfig.from_dict(config)
    aligned_dir = Path(aligned_dir)
    out_path = work.dir / FILE
    atomic.remove_stale(out_path)
    with open_store(aligned_dir / "lq.h5") as lq_store, open_store(aligned_dir / "hq.h5") as hq_store:
        if not len(lq_store):
            raise SkelpipeError(f"{aligned_dir / 'lq.h5'}: no instance")
        hq_ids = set(hq_store.ids())
        if not hq_ids:
            raise SkelpipeError(f"{aligned_dir / 'hq.h5'}: no HQ skeleton at all")
        lq = _Side.of(lq_store, lq_store.read(lq_store.ids()[0]))
        hq = _Side.of(hq_store, hq_store.read(sorted(hq_ids)[0]))

        members, outside = _members(lq, hq, hq_ids, cfg, work)
        while True:  # again without the instances that turn out not finite (rare: one more pass)
            if not any(members.values()):
                raise SkelpipeError(f"{aligned_dir}: no instance falls in a split of benchmark "
                                    f"{cfg.benchmark!r}")
            _check_splits(aligned_dir, cfg, members)
            class_names = _class_names(lq.store, members)
            attrs = _pack_attrs(lq, hq, cfg, class_names)
            try:
                counts = _write(out_path, attrs, members, lq, hq, cfg)
                break
            except _NotFinite as e:
                for sid, problem in e.bad.items():
                    work.report_bad(sid, f"pack: {problem}")
                members = {s: [m for m in ms if m.id not in e.bad] for s, ms in members.items()}
    counts["outside_benchmark"] = outside
    work.mark_done("pack", counts)
    work.note(counts=counts)
    return counts


class _Side(NamedTuple):
    """One store of the aligned pair as packing reads it, with what its first sample says of its
    keypoints: their channel names (when recorded), how many channels, whether they are 3D."""
    store: PoseStore
    channels: str | None
    C: int
    three_d: bool

    @classmethod
    def of(cls, store: PoseStore, first) -> "_Side":
        C = first.keypoints.shape[-1]
        channels = first.attrs.get("channels") or store.attrs.get("channels")
        return cls(store, channels, C, is_3d(store.layout, channels, C))

    @property
    def layout(self) -> layouts.Layout:
        return self.store.layout

    def normalised(self, sample_id: str, image_size) -> np.ndarray:
        """A sample's keypoints, normalised (see the module doc)."""
        kp = self.store.read_keypoints(sample_id)
        return normalise_3d(kp, self.layout) if self.three_d else normalise_2d(kp, image_size)


class _NotFinite(Exception):
    """Instances whose packed tensors are not finite (``bad``: id → reason): nothing is written."""

    def __init__(self, bad: dict):
        super().__init__(f"{len(bad)} instance(s) not finite")
        self.bad = bad


def _write(out_path: Path, attrs, members, lq: _Side, hq: _Side, cfg) -> dict:
    """``data.h5`` (atomically), after checking the disk has room for it; counts per split."""
    row = cfg.length * cfg.max_people * np.dtype(cfg.dtype).itemsize
    row *= lq.C * lq.layout.num_joints + hq.C * hq.layout.num_joints
    size = sum(len(m) for m in members.values()) * row
    check_free(out_path.parent, size, "the pack")
    counts, bad = {}, {}
    with atomic.replacing(out_path) as tmp, h5py.File(tmp, "w") as f:
        for k, v in attrs.items():
            f.attrs[k] = v if not isinstance(v, list) else json.dumps(v)
        for split in SPLITS:
            counts[split] = _pack_split(f.create_group(split), split, members[split], lq, hq, cfg, bad)
        if bad:
            raise _NotFinite(bad)
    return counts


def _members(lq: _Side, hq: _Side, hq_ids, cfg, work) -> tuple[dict, int]:
    """The instances of each split of ``cfg.benchmark`` (bad ones reported and skipped), and how
    many belong to no split."""
    members = {s: [] for s in SPLITS}
    outside = 0  # instances that belong to no split of this benchmark
    for sid in lq.store.ids():
        attrs = lq.store.read_attrs(sid)
        try:
            split = split_of(sid, attrs, cfg)
        except SkelpipeError as e:
            work.report_bad(sid, f"pack: {e}")
            continue
        if split is None:
            outside += 1
            continue
        use_hq = sid in hq_ids and attrs.get("has_hq", True)
        hq_attrs = hq.store.read_attrs(sid) if use_hq else None
        problem = _check(attrs, lq.three_d) or (
            _check(hq_attrs, hq.three_d, need_label=False) if use_hq else None)
        if problem:
            work.report_bad(sid, f"pack: {problem}")
            continue
        members[split].append(Member(sid, int(attrs["label"]), attrs.get("label_name"),
                                     attrs.get("image_size"), use_hq,
                                     hq_attrs.get("image_size") if use_hq else None))
    return members, outside


def _pack_attrs(lq: _Side, hq: _Side, cfg, class_names) -> dict:
    """What ``data.h5`` says of itself: layouts, channels, classes, normalisation, settings."""
    return {
        "hq_layout": hq.layout.name, "lq_layout": lq.layout.name,
        "hq_channels": hq.channels or ("x,y,z" if hq.three_d else "x,y,conf"),
        "lq_channels": lq.channels or ("x,y,z" if lq.three_d else "x,y,conf"),
        "num_classes": len(class_names), "class_names": class_names, "T": cfg.length,
        "max_people": cfg.max_people,
        "extractor": lq.store.attrs.get("extractor", lq.store.attrs.get("source", "")),
        "lq_source": lq.store.attrs.get("source", ""), "hq_source": hq.store.attrs.get("source", ""),
        "benchmark": cfg.benchmark, "split": cfg.split,
        "lq_normalisation": normalisation_text(lq.layout, lq.three_d),
        "hq_normalisation": normalisation_text(hq.layout, hq.three_d),
        "temporal": (f"uniform sampling to {cfg.sample_frames} frames" if cfg.sample_frames
                     else f"first {cfg.frames} frames, zero-padded"),
        "hq_fraction": cfg.hq_fraction, "pair_seed": cfg.pair_seed, "test_seed": cfg.test_seed,
        "dtype": cfg.dtype, "config": json.dumps(dataclasses.asdict(cfg)),
    }


def _check_splits(aligned_dir, cfg, members: dict):
    """A pack that cannot give a result is an error: a split with no instance, or a training
    split of fewer than two classes (never a 100 % from a one-class run)."""
    for split in SPLITS:
        if not members[split]:
            others = sum(len(m) for m in members.values())
            raise SkelpipeError(f"{aligned_dir}: benchmark {cfg.benchmark!r} puts no instance in the "
                                f"{split} split ({others} in the other)")
    classes = {m.label for m in members["train"]}
    if len(classes) < 2:
        raise SkelpipeError(f"{aligned_dir}: the training split has {len(members['train'])} instance(s) of "
                            f"{len(classes)} class(es); a classifier needs at least 2")


def _check(attrs, three_d: bool, need_label: bool = True) -> str | None:
    """What makes an instance unpackable (checked on attributes before anything is written)."""
    if need_label and "label" not in attrs:
        return "no label"
    if need_label and label_problem(attrs["label"]):
        return label_problem(attrs["label"])
    if not three_d and not attrs.get("image_size"):
        return "2D sample without image_size"
    size = attrs.get("image_size")
    if not three_d and not (isinstance(size, list) and len(size) == 2 and all(
            isinstance(v, (int, float)) and math.isfinite(v) and v > 0 for v in size)):
        return f"image_size {size!r} is not two positive numbers"
    return None


def _class_names(lq, members) -> list[str]:
    names = lq.attrs.get("class_names")
    if names:
        return list(names)
    found = {}
    for s in SPLITS:
        for m in members[s]:
            found.setdefault(m.label, m.label_name or str(m.label))
    n = max(found) + 1
    return [found.get(i, str(i)) for i in range(n)]


def _pack_split(g, split, members, lq: _Side, hq: _Side, cfg, bad: dict) -> dict:
    """Write one split row by row into contiguous datasets (memory: one instance at a time); an
    instance that is not finite once stored in ``cfg.dtype`` goes into ``bad`` instead."""
    T, M, dtype = cfg.length, cfg.max_people, np.dtype(cfg.dtype)
    C_L, C_H = lq.C, hq.C
    N = len(members)
    V_L, V_H = lq.layout.num_joints, hq.layout.num_joints
    # contiguous, uncompressed, zero-filled: one-shot reads, and memory-mappable
    d_lq = g.create_dataset("lq", (N, C_L, T, V_L, M), dtype=dtype, fillvalue=0)
    d_hq = g.create_dataset("hq", (N, C_H, T, V_H, M), dtype=dtype, fillvalue=0)
    available = np.zeros(N, bool)
    lengths = np.zeros(N, np.int32)
    for i, member in enumerate(members):
        x_lq, x_hq, lengths[i] = _pack_instance(member, lq, hq, cfg)
        with np.errstate(over="ignore"):  # a value beyond float16 becomes inf: refused below
            x_lq, x_hq = x_lq.astype(dtype), None if x_hq is None else x_hq.astype(dtype)
        if not all(np.isfinite(x).all() for x in (x_lq, x_hq) if x is not None):
            bad[member.id] = f"not finite once normalised and stored as {dtype}"
            continue
        d_lq[i] = x_lq
        if x_hq is not None:
            d_hq[i] = x_hq
            available[i] = True
    labels = np.array([m.label for m in members], np.int64)
    if split == "train":
        has_hq = draw_pairs(labels, cfg.hq_fraction, cfg.pair_seed, available)
    else:
        has_hq = available.copy()
    g.create_dataset("has_hq", data=has_hq)
    g.create_dataset("hq_available", data=available)
    g.create_dataset("label", data=labels)
    g.create_dataset("length", data=lengths)
    g.create_dataset("ids", data=np.array([m.id for m in members], dtype=h5py.string_dtype()))
    g.attrs["n"] = N
    g.attrs["n_pair"] = int(has_hq.sum())
    g.attrs["n_sol"] = int(N - has_hq.sum())
    return {"n": N, "pair": int(has_hq.sum()), "solitary": int(N - has_hq.sum()),
            "hq_available": int(available.sum())}


def _pack_instance(m: "Member", lq: _Side, hq: _Side, cfg):
    kp_lq = lq.normalised(m.id, m.lq_size)
    kp_hq = hq.normalised(m.id, m.hq_size) if m.has_hq else None
    idx = frame_indices(kp_lq.shape[1] if kp_hq is None else kp_hq.shape[1], cfg)
    x_lq = to_tensor(kp_lq, idx[idx < kp_lq.shape[1]], cfg.length, cfg.max_people)
    x_hq = None if kp_hq is None else to_tensor(kp_hq, idx, cfg.length, cfg.max_people)
    return x_lq, x_hq, int(len(idx))
