"""Report figures: training curves, and HQ/LQ skeletons over video frames at several OPs."""

import json

import cv2
import numpy as np

from skelpipe.pipeline import plots
from skelpipe.skeleton import layouts
from skelpipe.skeleton.store import Sample


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


def test_skeleton_figure_over_video_and_training_curves(tmp_path):
    rng = np.random.default_rng(0)
    hq = Sample("x", rng.uniform(1, 40, (2, 12, 25, 3)).astype(np.float32),
                {"color_xy": rng.uniform(1, 40, (2, 12, 25, 2))}, {})
    lq = Sample("x", np.concatenate([rng.uniform(1, 40, (2, 12, 17, 2)), np.ones((2, 12, 17, 1))], -1),
                {}, {"image_size": [64, 48]})
    out = plots.skeleton_figure(hq, lq, layouts.get("ntu25"), layouts.get("coco17"), {}, {},
                                tmp_path / "sk.png", video=_video(tmp_path / "v.avi"))
    assert out.exists() and cv2.imread(str(out)).shape[0] > 100
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"epoch": e, "loss": 1 / e, "train_acc": e / 3}) + "\n"
                               for e in (1, 2, 3)))
    assert plots.training_curves([("teacher", metrics)], tmp_path / "curves.png").exists()
