"""Report figures: training curves, the KD gain per OP, and HQ / LQ skeletons drawn over a
video frame at several occlusion probabilities (as the paper's Figs. 1, 6 and 7)."""

import itertools
import json
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from skelpipe.core.errors import SkelpipeError
from skelpipe.data.sources import dataset_videos
from skelpipe.pose.video import frames, probe
from skelpipe.skeleton import geometry
from skelpipe.skeleton.noise import occlude
from skelpipe.skeleton.store import PoseStore, open_store  # noqa: E402


# Training curves: one row of panels per group of cells, one column per OP, one line per
# distillation variant (mean over its runs, min-max band), the teacher as a dashed reference.
CURVE_GROUP = ("setting", "benchmark", "hq_fraction", "backbone", "lq_data", "init")
TEACHER_GROUP = CURVE_GROUP[:4]  # a teacher serves every student start and LQ amount of its pack
CURVES = {"training_accuracy.png": ("train_acc", 100.0, "training top-1 accuracy (%)"),
          "training_loss.png": ("ce", 1.0, "training cross-entropy loss")}
KD_COLOURS = {"none": "tab:blue", "kl": "tab:green", "global-msc": "tab:purple", "skd": "tab:orange",
              "pe-gcn": "tab:brown", "pmsc": "tab:red"}


def training_curves(runs: list[tuple[dict, Path]], out_dir: Path, kd_names: dict) -> list[Path]:
    """``training_accuracy.png`` and ``training_loss.png`` from each trained model's
    ``metrics.jsonl`` and its report record (``model``, ``kd``, ``op`` and the CURVE_GROUP
    fields): per cell, the mean over its runs (seeds; SYSU's splits) and their min-max range.
    The loss is the cross-entropy term alone, comparable between students with and without KD."""
    students, teachers = curve_cells(runs)
    if not students and not teachers:
        return []
    written = []
    for name, (key, scale, ylabel) in CURVES.items():
        fig = curve_figure(students, teachers, key, scale, ylabel, kd_names)
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        written.append(out_dir / name)
    return written


def curve_cells(runs: list[tuple[dict, Path]]) -> tuple[dict, dict]:
    """The epoch records of each run, by cell: students by (CURVE_GROUP values, op, kd), teachers
    by their TEACHER_GROUP values."""
    students, teachers = defaultdict(list), defaultdict(list)
    for meta, metrics in runs:
        rows = _history(metrics)
        if not rows:
            continue
        if meta["model"] == "teacher":
            teachers[tuple(meta.get(k) for k in TEACHER_GROUP)].append(rows)
        else:
            students[tuple(meta.get(k) for k in CURVE_GROUP), meta["op"], meta["kd"]].append(rows)
    return students, teachers


def curve_figure(students: dict, teachers: dict, key: str, scale: float, ylabel: str, kd_names: dict):
    """The panels of one metric (``key`` × ``scale``): a row per group of student cells, a column
    per OP; ``students``: (group, op, kd) → runs, ``teachers``: teacher group → runs, a run being
    its list of epoch records."""
    groups = sorted({g for g, _, _ in students}, key=str) or [t + (None, None) for t in sorted(teachers, key=str)]
    ops = sorted({op for _, op, _ in students}) or [0.0]
    kds = sorted({kd for _, _, kd in students}, key=list(KD_COLOURS).index)
    titles = _group_titles(groups)
    fig, axes = plt.subplots(len(groups), len(ops), figsize=(3.6 * len(ops) + 1, 2.2 * len(groups) + 0.5),
                             sharex=True, sharey=True, squeeze=False, layout="constrained")
    for (r, group), (c, op) in itertools.product(enumerate(groups), enumerate(ops)):
        ax = axes[r, c]
        if teachers.get(group[:len(TEACHER_GROUP)]):
            _band(ax, teachers[group[:len(TEACHER_GROUP)]], key, scale, "black", "teacher (HQ)", ls="--")
        for kd in kds:
            if students.get((group, op, kd)):
                _band(ax, students[group, op, kd], key, scale, KD_COLOURS[kd], kd_names.get(kd, kd))
        ax.set_title(f"{titles[r]}OP {op:g}", fontsize=9)
        ax.grid(alpha=0.3)
        ax.set(xlabel="epoch" if r == len(groups) - 1 else "", ylabel=ylabel if c == 0 else "")
    if scale == 100.0:  # a percentage: the whole scale, the same in every figure
        axes[0, 0].set_ylim(0, 100)
    handles = {label: h for ax in axes.flat for h, label in zip(*ax.get_legend_handles_labels())}
    n = "/".join(map(str, sorted({len(r) for r in students.values()}))) or "1"
    fig.suptitle(f"line: mean of a cell's runs ({n} per student cell; seeds), band: their min-max", fontsize=9)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(len(handles), 2 * len(ops)),
               fontsize=9)
    return fig


def _history(metrics: Path) -> list[dict]:
    path = Path(metrics)
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _band(ax, runs: list[list[dict]], key: str, scale: float, colour: str, label: str, ls="-"):
    """The mean of ``key`` over ``runs`` per epoch and, with more than one run, their min-max band."""
    n = min(len(rows) for rows in runs)  # an unfinished run has fewer epochs
    epochs = [row["epoch"] for row in runs[0][:n]]
    values = scale * np.array([[row[key] for row in rows[:n]] for rows in runs])
    ax.plot(epochs, values.mean(0), color=colour, ls=ls, lw=1.5, label=label)
    if len(runs) > 1:
        ax.fill_between(epochs, values.min(0), values.max(0), color=colour, alpha=0.2, lw=0)


def _group_titles(groups: list[tuple]) -> list[str]:
    """What tells one row of panels from the others ("teacher init, " …); "" when one row."""
    words = {"setting": str, "benchmark": str, "hq_fraction": lambda f: f"HQ {f:.0%}", "backbone": str,
             "lq_data": lambda d: "LQ pairs only" if d == "pair" else "all LQ",
             "init": lambda i: f"{i} init"}
    varying = [i for i, k in enumerate(CURVE_GROUP) if len({g[i] for g in groups}) > 1]
    return ["".join(f"{words[CURVE_GROUP[i]](g[i])}, " for i in varying) for g in groups]


def kd_gains(records: list[dict], path: Path) -> Path | None:
    """The paired KD gain (top-1, points) per OP with its 95 % interval, one line per
    (table, setting, benchmark, HQ amount, LQ data, distillation variant, student start); None when no aggregate
    record has a gain."""
    lines = {}
    for r in records:
        if r.get("aggregate") and r.get("gain_top1"):
            key = (r["table"] or 0, r["setting"], r["benchmark"], r["hq_fraction"], r.get("lq_data"), r["kd"],
                   r.get("init") or "random")
            lines.setdefault(key, []).append(r)
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.4 + 0.2 * len(lines)), layout="constrained")
    for n, (key, rows) in enumerate(sorted(lines.items(), key=lambda kv: str(kv[0]))):
        rows.sort(key=lambda r: r["op"])
        ops = np.array([r["op"] for r in rows]) + 0.01 * n  # side by side, not on top of each other
        gain = np.array([r["gain_top1"]["mean"] for r in rows])
        ci = np.array([r["gain_top1"]["ci95"] or [g, g] for r, g in zip(rows, gain)])
        table, setting, bench, fraction, data, kd, init = key
        label = (f"T{table} {setting} {bench} {kd}" + (" teacher init" if init == "teacher" else "")
                 + (f" HQ {fraction:.0%}" if fraction != 1 else "")
                 + (" pairs only" if data == "pair" else "") + f" (n={rows[0]['gain_top1']['n']})")
        ax.errorbar(ops, gain, yerr=[gain - ci[:, 0], ci[:, 1] - gain], marker="o", capsize=4, label=label)
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xticks(sorted({r["op"] for rows in lines.values() for r in rows}))
    ax.set(xlabel="occlusion probability (OP)", ylabel="top-1 gain over w/o KD (points)",
           title="KD gain per OP: mean over seeds, bars: 95 % interval")
    ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", fontsize=8)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pixels(sample, layout, store_attrs) -> np.ndarray | None:
    """(M, T, V, 2) image coordinates of a stored sample, or None when it has none."""
    if "color_xy" in sample.arrays:
        return sample.arrays["color_xy"]
    if "camera" in sample.attrs:
        return geometry.project(sample.keypoints, sample.attrs["camera"])
    if sample.keypoints.shape[-1] == 3 and sample.attrs.get("channels", store_attrs.get("channels")) != "x,y,z":
        return sample.keypoints[..., :2]
    return None


def draw_skeleton(ax, xy: np.ndarray, layout, colour: str, conf: np.ndarray | None = None):
    """One person's bones and joints; joints at (0, 0) or with confidence 0 are left out."""
    present = np.any(xy != 0, axis=-1) if conf is None else (conf > 0) & np.any(xy != 0, axis=-1)
    for a, b in layout.edges:
        if present[a] and present[b]:
            ax.plot([xy[a, 0], xy[b, 0]], [xy[a, 1], xy[b, 1]], color=colour, lw=1.5)
    ax.scatter(xy[present, 0], xy[present, 1], s=6, color=colour)


def video_frames(video, picks) -> dict:
    """RGB images of the frames ``picks`` of a video file or frame folder ({} if unreadable)."""

    wanted, out = set(int(t) for t in picks), {}
    try:
        for t, bgr in enumerate(frames(probe(video))):
            if t in wanted:
                out[t] = bgr[..., ::-1]
            if t >= max(wanted):
                break
    except SkelpipeError:
        return {}
    return out


def skeleton_figure(hq: PoseStore, lq: PoseStore, sample_id: str, path: Path, ops=(0.0, 0.3, 0.6),
                    frames=4, video=None, title="") -> Path | None:
    """One instance of an aligned pair of stores. Rows: HQ, then LQ at each occlusion probability;
    columns: frames across the clip, drawn over the video's frames when ``video`` (a file or
    frame folder) is given. None when the HQ skeletons have no image coordinates."""

    hq_sample, lq_sample = hq.read(sample_id), lq.read(sample_id)
    hq_xy = _pixels(hq_sample, hq.layout, hq.attrs)
    lq_xy = lq_sample.keypoints[..., :2]
    if hq_xy is None:
        return None
    n = min(hq_xy.shape[1], lq_xy.shape[1])
    picks = np.linspace(0, n - 1, frames).astype(int)
    images = video_frames(video, picks) if video else {}
    fig, axes = plt.subplots(1 + len(ops), frames, figsize=(3 * frames, 2.6 * (1 + len(ops))))
    lq_chw = np.transpose(lq_sample.keypoints, (3, 1, 2, 0))  # (C, T, V, M)
    rows = [("HQ", hq_xy, None, hq.layout, "tab:blue")]
    for op in ops:
        occluded = np.transpose(occlude(lq_chw, op, seed=0), (3, 1, 2, 0))
        rows.append((f"LQ, OP {op:g}", occluded[..., :2], occluded[..., 2], lq.layout, "tab:red"))
    size = lq.attrs.get("image_size") or hq_sample.attrs.get("image_size") or [1920, 1080]
    for r, (name, xy, conf, layout, colour) in enumerate(rows):
        for c, t in enumerate(picks):
            ax = axes[r, c]
            if t in images:
                ax.imshow(images[t])
            for m in range(xy.shape[0]):
                draw_skeleton(ax, xy[m, t], layout, colour, None if conf is None else conf[m, t])
            ax.set_xlim(0, size[0])
            ax.set_ylim(size[1], 0)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
            if r == 0:
                ax.set_title(f"frame {t}")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def skeleton_overlays(plan, out_dir: Path) -> list[Path]:
    """One figure per aligned HQ/LQ pair of the plan: the first test instance's skeletons."""
    written = []

    try:
        videos = {v.id: v.path for v in dataset_videos(plan.cfg["dataset"], plan.cfg.get("data", {}), plan.root)}
    except SkelpipeError:  # no data root, or a dataset without videos: skeletons on a blank canvas
        videos = {}
    for step in plan.ordered():
        if step.stage != "align" or not step.entry.done:
            continue
        with open_store(step.entry.path / "hq.h5") as hq, open_store(step.entry.path / "lq.h5") as lq:
            common = [i for i in lq.ids() if i in hq]
            test = [i for i in common if lq.read(i).attrs.get("split") == "test"] or common
            if not test:
                continue
            sid = test[0]
            lq_attrs = lq.read_attrs(sid)
            label = lq_attrs.get("label_name", lq_attrs.get("label", ""))
            path = out_dir / f"skeletons_{step.label.replace(' ', '_')}.png"
            if skeleton_figure(hq, lq, sid, path, video=videos.get(sid),
                               title=f"{sid}: {label} — {step.deps['hq'].meta['label']} (HQ) vs "
                                     f"{step.deps['lq'].meta['label']} (LQ)"):
                written.append(path)
    return written

