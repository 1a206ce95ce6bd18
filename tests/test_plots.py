"""Report figures: training curves, and HQ/LQ skeletons over video frames at several OPs."""

import itertools
import json

import cv2
import matplotlib.pyplot as plt
import numpy as np
import pytest

from skelpipe.pipeline import plots, report
from skelpipe.skeleton.store import PoseWriter, open_store


def _video(path, n=12, size=(64, 48)):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30, size)
    for t in range(n):
        writer.write(np.full((size[1], size[0], 3), 10 * t, np.uint8))
    writer.release()
    return path


def test_video_frames_picks_the_requested_frames(tmp_path):
    images = plots.video_frames(_video(tmp_path / "v.avi"), [0, 5, 11])
    assert sorted(images) == [0, 5, 11] and images[5].shape == (48, 64, 3)
    assert abs(int(images[11].mean()) - 110) <= 3  # frame 11 has grey level 110
    assert plots.video_frames(tmp_path / "missing.avi", [0]) == {}


def test_real_ntu_video_frames(shared_data):
    images = plots.video_frames(shared_data / "videos" / "S001C001P001R001A001_rgb.avi", [0, 102])
    assert sorted(images) == [0, 102] and images[0].shape == (1080, 1920, 3)


def test_skeleton_figure_over_video(tmp_path):
    rng = np.random.default_rng(0)
    with PoseWriter(tmp_path / "hq.h5", "ntu25") as w:
        w.add("x", rng.uniform(1, 40, (2, 12, 25, 3)), {"color_xy": rng.uniform(1, 40, (2, 12, 25, 2))})
    with PoseWriter(tmp_path / "lq.h5", "coco17") as w:
        w.add("x", np.concatenate([rng.uniform(1, 40, (2, 12, 17, 2)), np.ones((2, 12, 17, 1))], -1),
              image_size=[64, 48])
    with open_store(tmp_path / "hq.h5") as hq, open_store(tmp_path / "lq.h5") as lq:
        out = plots.skeleton_figure(hq, lq, "x", tmp_path / "sk.png", video=_video(tmp_path / "v.avi"))
    assert out.exists() and cv2.imread(str(out)).shape[0] > 100


def _metrics(path, accuracies, ce):
    path.write_text("".join(json.dumps({"epoch": e + 1, "loss": ce[e] + 5, "ce": ce[e], "train_acc": a}) + "\n"
                            for e, a in enumerate(accuracies)))
    return path


def test_training_curves_are_per_cell_mean_and_range_in_percent(tmp_path):
    """One panel per (student start, OP), one line per KD variant: the mean over seeds of the
    training accuracy in percent with its min-max band; the teacher dashed in every panel; the
    loss panels plot the cross-entropy term (comparable with and without KD), not the total."""
    cell = {"setting": "s", "benchmark": "xsub", "hq_fraction": 1.0, "backbone": "stgcn", "lq_data": "all"}
    runs = [({**cell, "model": "teacher", "kd": None, "op": 0.0},
             _metrics(tmp_path / "t.jsonl", [0.5, 0.7, 0.9], [2.0, 1.0, 0.5]))]
    for init, op, kd, seed in itertools.product(("random", "teacher"), (0.0, 0.6), ("none", "pmsc"), (0, 1, 2)):
        acc = [0.1 * seed + 0.2 * e + (0.05 if kd == "pmsc" else 0) for e in range(3)]
        runs.append(({**cell, "model": "student", "kd": kd, "op": op, "init": init, "seed": seed},
                     _metrics(tmp_path / f"{init}{op}{kd}{seed}.jsonl", acc[:2] if seed == 2 else acc, [1.0, 0.8, 0.6])))
    written = plots.training_curves(runs, tmp_path, report.KD_NAMES)
    assert [p.name for p in written] == ["training_accuracy.png", "training_loss.png"]
    assert all(cv2.imread(str(p)).shape[1] > 500 for p in written)

    students, teachers = plots.curve_cells(runs)
    fig = plots.curve_figure(students, teachers, *plots.CURVES["training_accuracy.png"], report.KD_NAMES)
    axes = fig.axes
    assert len(axes) == 2 * 2  # random / teacher init × OP 0 / 0.6
    assert [ax.get_title() for ax in axes] == ["random init, OP 0", "random init, OP 0.6",
                                               "teacher init, OP 0", "teacher init, OP 0.6"]
    assert axes[0].get_ylabel() == "training top-1 accuracy (%)" and axes[0].get_ylim() == (0, 100)
    assert axes[2].get_xlabel() == axes[3].get_xlabel() == "epoch"
    lines = {line.get_label(): line for line in axes[3].get_lines()}
    assert set(lines) == {"teacher (HQ)", "Student (w/o KD)", "Student (w/ KD)"}
    assert list(lines["teacher (HQ)"].get_ydata()) == pytest.approx([50, 70, 90])
    # seed 2 stopped after 2 epochs: the cell is drawn over the epochs every seed has
    assert list(lines["Student (w/ KD)"].get_xdata()) == [1, 2]
    assert list(lines["Student (w/ KD)"].get_ydata()) == pytest.approx([15, 35])  # mean of 5/15/25, 25/35/45
    band = axes[3].collections[-1].get_paths()[0].vertices[:, 1]
    assert band.min() == pytest.approx(5) and band.max() == pytest.approx(45)  # seed 0 … seed 2
    plt.close(fig)
    fig = plots.curve_figure(students, teachers, *plots.CURVES["training_loss.png"], report.KD_NAMES)
    assert fig.axes[0].get_ylabel() == "training cross-entropy loss"
    assert list(fig.axes[0].get_lines()[1].get_ydata()) == pytest.approx([1.0, 0.8])
    plt.close(fig)
