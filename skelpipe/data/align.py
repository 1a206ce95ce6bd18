"""align: pair each instance's LQ people and frames with its HQ people and frames.

For every instance in the HQ store or the LQ store:

- **Time.** The LQ sequence is brought to the HQ frame count: HQ frame t takes LQ frame
  ``floor((t + 0.5) * T_lq / T_hq)`` (the two recordings cover the same span, so the index
  follows the time ratio). Any difference is recorded (``frames_hq``, ``frames_lq``) and counted
  in the manifest.
- **People.** Both sides are placed in one image: NTU's Kinect joints by their colour-image
  coordinates (store array ``color_xy``), annotated 2D (Penn Action) as is, a 3D sample with a
  ``camera`` attribute (the demo) by projection, estimator 2D as is. The cost of pairing HQ
  person h with LQ person l is the mean, over the frames where both are present, of the mean
  pixel distance over the joints both layouts share (``layouts.shared_joints``: shoulders,
  elbows, wrists, hips, knees, ankles); the Hungarian method (``scipy.optimize.
  linear_sum_assignment``) picks the pairing over the whole sequence, and the LQ people are
  reordered so that LQ person k is HQ person k. Unmatched LQ people follow, up to
  ``max_people``. When one side has no image coordinates (SYSU's Kinect v1 3D has none in our
  store) people are paired by their order (SYSU's instances have one actor) and the quality is
  not measured (``align_method = "order"``).
- **Quality.** ``align_error`` = mean distance of the shared joints of paired people divided by
  the HQ person's body size (median bounding-box diagonal); instances above ``outlier`` are
  flagged (sample attribute ``align_outlier`` and the manifest), not removed.
- **Missing.** An instance with no HQ skeleton or no detected LQ person is reported as a bad item;
  ``missing = "solitary"`` keeps it (no HQ: LQ only, ``has_hq`` False; no LQ person: an all-zero
  LQ sequence — what the estimator gave — with its HQ), ``"drop"`` leaves it out.

Output: ``hq.h5`` and ``lq.h5`` in the stage directory, the same ids, LQ in HQ's person order
and frame count; ``has_hq`` on every LQ sample; ``alignment.csv`` with one row per instance
(id, status, method, error / body size, outlier flag, frame counts, LQ person order); the
manifest's ``align`` field holds the counts, the error statistics, the outliers and the frame
count mismatches.
"""

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from skelpipe.core import atomic
from skelpipe.core.console import progress
from skelpipe.core.fields import MAX_PEOPLE, bounded, check_ranges, from_section
from skelpipe.core.work import Work
from skelpipe.skeleton import layouts
from skelpipe.skeleton.geometry import body_size, image_points
from skelpipe.skeleton.store import PoseStore, PoseWriter, open_store

MISSING = ("solitary", "drop")
OUTLIER = (0.0, 1e6)  # the range of the outlier threshold (alignment error / body size)
# HQ sample attributes that describe the action instance (not the recording): the LQ copy gets them.
INSTANCE_ATTRS = ("label", "label_name", "split", "subject")


@dataclass
class AlignConfig:
    """Settings of the align stage (all part of its cache key; names as in pipelines/*.toml [align])."""
    missing: str = bounded("solitary", choices=MISSING)  # an instance without HQ or without an LQ person
    outlier: float = bounded(0.5, *OUTLIER)  # flag instances whose alignment error / body size exceeds this
    max_people: int = bounded(2, 1, MAX_PEOPLE)

    def __post_init__(self):
        check_ranges("align", self)

    @classmethod
    def from_dict(cls, config: dict) -> "AlignConfig":
        return from_section("align", cls, config)


def time_index(frames_hq: int, frames_lq: int) -> np.ndarray:
    """For each HQ frame, the LQ frame at the same relative time."""
    if frames_hq <= 0 or frames_lq <= 0:
        return np.zeros(max(frames_hq, 0), np.int64)
    t = (np.arange(frames_hq) + 0.5) * frames_lq / frames_hq
    return np.minimum(np.floor(t).astype(np.int64), frames_lq - 1)


def _present_2d(kp: np.ndarray) -> np.ndarray:
    """(M, T, V) joints an estimator reported: confidence > 0 when there is one, else x or y != 0."""
    if kp.shape[-1] >= 3:
        return kp[..., 2] > 0
    return (kp[..., :2] != 0).any(-1)


def lq_image_points(sample, layout, store_attrs):
    """Like ``geometry.image_points`` for LQ: estimator 2D uses its confidence for presence."""
    placed = image_points(sample, layout, store_attrs, default_camera=False)
    if placed is None:
        return None
    xy, present, size = placed
    channels = {**store_attrs, **sample.attrs}.get("channels") or ""
    if "z" not in channels.split(",") and "color_xy" not in sample.arrays:
        present = _present_2d(sample.keypoints)
    return xy, present, size


def association_cost(hq_xy, hq_ok, lq_xy, lq_ok) -> np.ndarray:
    """(M_hq, M_lq) mean over co-present frames of the mean distance of the shared joints present
    on both sides (inf: never together). Inputs: the shared joints only, the same frames."""
    Mh, Ml = hq_xy.shape[0], lq_xy.shape[0]
    cost = np.full((Mh, Ml), np.inf)
    for h in range(Mh):
        for l in range(Ml):
            both = hq_ok[h] & lq_ok[l]                          # (T, J)
            d = np.linalg.norm(hq_xy[h] - lq_xy[l], axis=-1)    # (T, J)
            n = both.sum(-1)
            valid = n > 0
            if valid.any():
                per_frame = (d * both).sum(-1)[valid] / n[valid]
                cost[h, l] = per_frame.mean()
    return cost


def associate(cost: np.ndarray) -> list[tuple[int, int]]:
    """Hungarian pairing (h, l) over finite costs."""
    if cost.size == 0 or not np.isfinite(cost).any():
        return []
    big = np.nanmax(cost[np.isfinite(cost)]) * 10 + 1e6
    rows, cols = linear_sum_assignment(np.where(np.isfinite(cost), cost, big))
    return [(int(h), int(l)) for h, l in zip(rows, cols) if np.isfinite(cost[h, l])]


def _is_empty_hq(sample) -> bool:
    return sample is None or not np.any(sample.keypoints)


def _is_empty_lq(sample, three_d: bool) -> bool:
    if sample is None:
        return True
    return not (np.any(sample.keypoints) if three_d else _present_2d(sample.keypoints).any())


def _persons(kp: np.ndarray, M: int) -> np.ndarray:
    out = np.zeros((M,) + kp.shape[1:], np.float32)
    out[:min(M, kp.shape[0])] = kp[:M]
    return out


def align_instance(h, l, hq_layout, lq_layout, hq_attrs, lq_attrs, max_people: int = 2):
    """Align one instance whose HQ and LQ both exist → (hq kp, lq kp, lq arrays, info dict)."""
    T_h, T_l = h.keypoints.shape[1], l.keypoints.shape[1]
    idx = time_index(T_h, T_l)
    lq_kp = l.keypoints[:, idx]
    Ml = lq_kp.shape[0]
    info = {"frames_hq": int(T_h), "frames_lq": int(T_l), "align_method": "order",
            "align_error": math.nan}
    order = list(range(Ml))
    hq_placed = image_points(h, hq_layout, hq_attrs, default_camera=False)
    lq_placed = lq_image_points(l, lq_layout, lq_attrs)
    ih, il = layouts.shared_joints(hq_layout, lq_layout)
    if hq_placed is not None and lq_placed is not None and ih:
        hq_xy, hq_ok, _ = hq_placed
        lq_xy, lq_ok, _ = lq_placed
        lq_xy, lq_ok = lq_xy[:, idx][:, :, il], lq_ok[:, idx][:, :, il]
        cost = association_cost(hq_xy[:, :, ih], hq_ok[:, :, ih], lq_xy, lq_ok)
        pairs = associate(cost)
        matched = {hh: ll for hh, ll in pairs}
        rest = [ll for ll in range(Ml) if ll not in matched.values()]
        order = []
        for hh in range(max(h.keypoints.shape[0], max_people)):
            order.append(matched[hh] if hh in matched else (rest.pop(0) if rest else -1))
        order = order + rest
        sizes = body_size(hq_xy, hq_ok)
        errors, weights = [], []
        for hh, ll in pairs:
            if sizes[hh] > 0:
                both = hq_ok[hh][:, ih] & lq_ok[ll]
                d = np.linalg.norm(hq_xy[hh][:, ih] - lq_xy[ll], axis=-1)[both]
                errors.append(d.sum() / sizes[hh])
                weights.append(len(d))
        info["align_method"] = "joints"
        info["align_error"] = float(sum(errors) / sum(weights)) if sum(weights) else math.nan
        info["align_pairs"] = [[hh, ll] for hh, ll in pairs]
    M = max_people
    lq_out = np.zeros((M,) + lq_kp.shape[1:], np.float32)
    for k, src in enumerate(order[:M]):
        if src >= 0:
            lq_out[k] = lq_kp[src]
    info["lq_order"] = [int(o) for o in order[:M]]
    info["reordered"] = any(0 <= src != k for k, src in enumerate(order[:M]))
    arrays = {}
    for name, arr in l.arrays.items():
        arr = np.asarray(arr)
        if arr.ndim >= 2 and arr.shape[0] == Ml and arr.shape[1] == T_l:
            arr = arr[:, idx]
            out = np.zeros((M,) + arr.shape[1:], arr.dtype)
            for k, src in enumerate(order[:M]):
                if src >= 0:
                    out[k] = arr[src]
            arr = out
        arrays[name] = arr
    return _persons(h.keypoints, M), lq_out, arrays, info


@dataclass
class _Output:
    """Where ``align_stores`` writes each instance and what it tallies: the settings, the stage's
    ``Work`` (bad items), the stores read and the writers of ``hq.h5`` and ``lq.h5``, the
    manifest's counts, the rows of ``alignment.csv`` and the alignment errors measured."""
    config: AlignConfig
    work: Work
    hq: PoseStore
    lq: PoseStore
    lq_channels: int  # channels of the LQ keypoints: an LQ sequence with nobody gets as many
    hw: PoseWriter
    lw: PoseWriter
    stats: dict
    rows: list = field(default_factory=list)
    errors: list = field(default_factory=list)


def align_stores(hq_path, lq_path, work, config: AlignConfig | None = None) -> dict:
    """Align an HQ store with an LQ store into ``hq.h5`` + ``lq.h5`` in ``work.dir``.

    ``work``: the stage's ``Work`` (bad instances reported, statistics noted in the manifest).
    ``config``: the settings (default: ``AlignConfig()``). Returns the statistics.
    """
    config = config or AlignConfig()
    out_dir = work.dir
    for stale in out_dir.glob("*.partial-*"):  # left by a killed run
        stale.unlink()
    stats = {"instances": 0, "written": 0, "paired": 0, "no_hq": 0, "no_lq_person": 0,
             "dropped": 0, "reordered": 0, "frame_mismatch": 0, "outliers": [],
             "frame_mismatches": []}
    with open_store(hq_path) as hq, open_store(lq_path) as lq:
        hq_ids, lq_ids = set(hq.ids()), set(lq.ids())
        ids = sorted(hq_ids | lq_ids)
        lq_channels = lq.attrs.get("channels") or ""
        lq_3d = "z" in lq_channels.split(",")
        C_L = _channels(lq)
        hq_root = {k: v for k, v in hq.attrs.items() if k not in ("skelpipe_store", "complete",
                                                                   "layout", "joints")}
        lq_root = {k: v for k, v in lq.attrs.items() if k not in ("skelpipe_store", "complete",
                                                                   "layout", "joints")}
        for k in ("class_names", "num_classes"):
            if k in hq.attrs and k not in lq_root:
                lq_root[k] = hq.attrs[k]
        lq_root["aligned_to"] = hq.attrs.get("source", "")
        with PoseWriter(out_dir / "hq.h5", hq.layout.name, hq_root) as hw, \
                PoseWriter(out_dir / "lq.h5", lq.layout.name, lq_root) as lw:
            out = _Output(config, work, hq, lq, C_L, hw, lw, stats)
            for sid in _progress(ids):
                stats["instances"] += 1
                h = hq.read(sid) if sid in hq_ids else None
                l = lq.read(sid) if sid in lq_ids else None
                no_hq, no_lq = _is_empty_hq(h), _is_empty_lq(l, lq_3d)
                if no_hq or no_lq:
                    _write_unpaired(out, sid, h, l, no_hq, no_lq)
                    continue
                _write_paired(out, sid, h, l)
    if out.errors:
        e = np.asarray(out.errors)
        stats["align_error"] = {"n": len(e), "mean": float(e.mean()), "median": float(np.median(e)),
                                "p95": float(np.percentile(e, 95)), "max": float(e.max())}
    stats["outlier_threshold"] = config.outlier
    stats["per_instance"] = "alignment.csv"
    _write_csv(out_dir / "alignment.csv", out.rows)
    stats["frame_mismatches"] = stats["frame_mismatches"][:200]
    work.note(align=stats)
    work.mark_done("align", {k: v for k, v in stats.items() if not isinstance(v, list)})
    return stats


def _write_unpaired(out: _Output, sid, h, l, no_hq, no_lq):
    """An instance with no HQ skeleton or no detected LQ person: reported, then kept (as a
    solitary LQ instance, or HQ with an empty LQ sequence) or dropped, per ``missing``."""
    stats, rows, hw, lw = out.stats, out.rows, out.hw, out.lw
    missing, max_people = out.config.missing, out.config.max_people
    what = "no HQ skeleton" if no_hq else "no detected person in the LQ poses"
    if no_hq and no_lq:
        what = "neither an HQ skeleton nor a detected LQ person"
    stats["no_hq"] += no_hq
    stats["no_lq_person"] += no_lq
    keep = missing == "solitary" and not (no_hq and no_lq)
    out.work.report_bad(sid, f"align: {what} ({'kept' if keep else 'dropped'}, missing={missing})")
    rows.append({"id": sid, "status": ("kept: " if keep else "dropped: ") + what})
    if not keep:
        stats["dropped"] += 1
        return
    if no_hq:  # LQ only: a solitary instance
        lw.add(sid, _persons(l.keypoints, max_people), None,
               **{**l.attrs, "has_hq": False, "align_method": "none"})
    else:  # HQ, and an LQ sequence in which the estimator found nobody
        T_h = h.keypoints.shape[1]
        lq_attrs = {**(l.attrs if l is not None else {}),
                    **{k: h.attrs[k] for k in INSTANCE_ATTRS if k in h.attrs},
                    "has_hq": True, "align_method": "none",
                    "frames_hq": T_h, "frames_lq": 0 if l is None else l.keypoints.shape[1]}
        if "image_size" not in lq_attrs and "image_size" in h.attrs:
            lq_attrs["image_size"] = h.attrs["image_size"]
        lw.add(sid, np.zeros((max_people, T_h, out.lq.layout.num_joints, out.lq_channels), np.float32), None,
               **lq_attrs)
        hw.add(sid, _persons(h.keypoints, max_people), h.arrays, **dict(h.attrs))
    stats["written"] += 1


def _write_paired(out: _Output, sid, h, l):
    """An instance with both sides: people and frames aligned, then written with what was measured."""
    hq, lq, stats = out.hq, out.lq, out.stats
    hq_kp, lq_kp, lq_arrays, info = align_instance(h, l, hq.layout, lq.layout, hq.attrs, lq.attrs,
                                                   out.config.max_people)
    flagged = bool(np.isfinite(info["align_error"]) and info["align_error"] > out.config.outlier)
    info["align_outlier"] = flagged
    if flagged:
        stats["outliers"].append({"id": sid, "align_error": round(info["align_error"], 4)})
    if info["frames_hq"] != info["frames_lq"]:
        stats["frame_mismatch"] += 1
        stats["frame_mismatches"].append({"id": sid, "frames_hq": info["frames_hq"], "frames_lq": info["frames_lq"]})
    stats["reordered"] += info["reordered"]
    if np.isfinite(info["align_error"]):
        out.errors.append(info["align_error"])
    lq_attrs = {**l.attrs, **{k: h.attrs[k] for k in INSTANCE_ATTRS if k in h.attrs},
                **info, "has_hq": True, "num_frames": info["frames_hq"]}
    if info["align_method"] == "order":
        lq_attrs["align_error"] = "not measured"
    out.hw.add(sid, hq_kp, h.arrays, **h.attrs)
    out.lw.add(sid, lq_kp, lq_arrays, **lq_attrs)
    out.rows.append({"id": sid, "status": "paired", "method": info["align_method"],
                     "error": "" if not np.isfinite(info["align_error"]) else f"{info['align_error']:.5f}",
                     "outlier": int(flagged), "frames_hq": info["frames_hq"], "frames_lq": info["frames_lq"],
                     "lq_order": " ".join(map(str, info["lq_order"]))})
    stats["written"] += 1
    stats["paired"] += 1


def _write_csv(path: Path, rows: list[dict]):
    fields = ["id", "status", "method", "error", "outlier", "frames_hq", "frames_lq", "lq_order"]
    with atomic.replacing(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerows(rows)


def _channels(store) -> int:
    for sid in store.ids()[:1]:
        return int(store.read(sid).keypoints.shape[-1])
    return 3


def _progress(ids):
    with progress("instances") as bar:
        task = bar.add_task("align", total=len(ids))
        for sid in ids:
            yield sid
            bar.advance(task)
