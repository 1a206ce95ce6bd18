"""Report figures: training curves, and HQ / LQ skeletons drawn over a video frame at several
occlusion probabilities (as the paper's Figs. 1, 6 and 7)."""

import json
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
from skelpipe.skeleton.store import open_store  # noqa: E402


def training_curves(runs: list[tuple[str, Path]], path: Path) -> Path:
    """Loss and training accuracy per epoch of each run (its ``metrics.jsonl``)."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(12, 4.5))
    for label, metrics in runs:
        if not Path(metrics).exists():
            continue
        rows = [json.loads(line) for line in Path(metrics).read_text().splitlines() if line.strip()]
        epochs = [r["epoch"] for r in rows]
        ax_loss.plot(epochs, [r["loss"] for r in rows], label=label)
        acc_key = next((k for k in ("train_acc", "train_top1", "acc") if k in rows[0]), None)
        if acc_key:
            ax_acc.plot(epochs, [r[acc_key] for r in rows], label=label)
    ax_loss.set(xlabel="epoch", ylabel="training loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="training accuracy (%)", title="accuracy")
    ax_loss.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


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
    fig, ax = plt.subplots(figsize=(7, 4.5))
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
    ax.set(xlabel="occlusion probability (OP)", ylabel="top-1 gain over w/o KD (points)",
           title="KD gain, paired over seeds, 95 % interval")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
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


def skeleton_figure(hq_sample, lq_sample, hq_layout, lq_layout, hq_attrs, lq_attrs, path: Path,
                    ops=(0.0, 0.3, 0.6), frames=4, video=None, title="") -> Path | None:
    """Rows: HQ, then LQ at each occlusion probability; columns: frames across the clip, drawn
    over the video's frames when ``video`` (a file or frame folder) is given."""

    hq_xy = _pixels(hq_sample, hq_layout, hq_attrs)
    lq_xy = lq_sample.keypoints[..., :2]
    if hq_xy is None:
        return None
    n = min(hq_xy.shape[1], lq_xy.shape[1])
    picks = np.linspace(0, n - 1, frames).astype(int)
    images = video_frames(video, picks) if video else {}
    fig, axes = plt.subplots(1 + len(ops), frames, figsize=(3 * frames, 2.6 * (1 + len(ops))))
    lq_chw = np.transpose(lq_sample.keypoints, (3, 1, 2, 0))  # (C, T, V, M)
    rows = [("HQ", hq_xy, None, hq_layout, "tab:blue")]
    for op in ops:
        occluded = np.transpose(occlude(lq_chw, op, seed=0), (3, 1, 2, 0))
        rows.append((f"LQ, OP {op:g}", occluded[..., :2], occluded[..., 2], lq_layout, "tab:red"))
    size = lq_attrs.get("image_size") or hq_sample.attrs.get("image_size") or [1920, 1080]
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
            lq_sample, hq_sample = lq.read(sid), hq.read(sid)
            label = lq_sample.attrs.get("label_name", lq_sample.attrs.get("label", ""))
            path = out_dir / f"skeletons_{step.label.replace(' ', '_')}.png"
            if skeleton_figure(hq_sample, lq_sample, hq.layout, lq.layout, hq.attrs, lq.attrs, path,
                               video=videos.get(sid),
                               title=f"{sid}: {label} — {step.deps['hq'].meta['label']} (HQ) vs "
                                     f"{step.deps['lq'].meta['label']} (LQ)"):
                written.append(path)
    return written

