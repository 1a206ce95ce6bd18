"""predict: the student sees exactly what pack would give it, top-k table / JSON / annotated video,
model directory errors; end to end through OpenPifPaf with a random-weight estimator."""

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import CLIP_FRAMES as FRAMES
from conftest import CLIP_H as H
from conftest import CLIP_W as W
from conftest import coco_people, fake_extraction, stick_figure_video

from skelpipe.commands.predict import predict_command
from skelpipe.core.errors import SkelpipeError
from skelpipe.data.pack import PackConfig
from skelpipe.data.split import load_split
from skelpipe.learn.checkpoint import save_model
from skelpipe.learn.config import TrainConfig
from skelpipe.learn.models import ModelConfig, build_model
from skelpipe.learn.train import train
from skelpipe.pipeline import predict
from skelpipe.pipeline.cache import Cache
from skelpipe.pipeline.stages import run_pack
from skelpipe.pose.settings import ExtractConfig
from skelpipe.skeleton.store import PoseWriter

NUM_CLASSES = 6
NAMES = [f"action{k}" for k in range(NUM_CLASSES)]
BIAS = torch.tensor([1.0, 3.0, 0.5, 2.0, -1.0, 2.5])   # constant model: action1 > action5 > action3 ...
CPU = ExtractConfig(device="cpu")  # the estimator the student was trained on, on the CPU


def write_aligned(directory: Path, n: int = 12, frames: int = FRAMES):
    """hq.h5 (ntu25 3D) + lq.h5 (coco17 2D pixels) as align writes them; simulated LQ."""
    directory.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with PoseWriter(directory / "hq.h5", "ntu25", {"source": "synthetic", "channels": "x,y,z"}) as hq, \
            PoseWriter(directory / "lq.h5", "coco17", {"source": "simulated:shufflenetv2k16",
                                                      "extractor": "simulated", "channels": "x,y,conf",
                                                      "class_names": NAMES}) as lq:
        for i in range(n):
            sid = f"s{i:03d}"
            label, split = i % NUM_CLASSES, "train" if i < n - NUM_CLASSES else "test"
            hq.add(sid, rng.normal(size=(2, frames, 25, 3)).astype(np.float32), label=label, split=split)
            lq.add(sid, coco_people(i, frames, people=2), label=label, split=split, image_size=[W, H],
                   fps=25.0, label_name=NAMES[label])


@pytest.fixture(scope="module")
def cached_student(tmp_path_factory):
    """A pack stage and a 1-epoch student laid out as run-all does: <root>/pack/<key>, <root>/student/<x>."""
    tmp = tmp_path_factory.mktemp("predict")
    write_aligned(tmp / "aligned")
    root = tmp / "cache"
    pack_dir = run_pack(Cache(root), tmp / "aligned", PackConfig(frames=16))
    student = root / "student" / "s1"
    cfg = TrainConfig(stage="student", channels=(8, 8), temporal_kernel=3, epochs=1, batch_size=6,
                      device="cpu")
    train(cfg, pack_dir, student)
    return student, pack_dir


def constant_student(out_dir: Path, T: int = 16, data=None) -> Path:
    """A coco17 student whose logits are BIAS whatever the input."""
    model = build_model(ModelConfig("stgcn", "coco17", 3, NUM_CLASSES, (8, 8), 3))
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(BIAS)
    save_model(out_dir, model, {"class_names": NAMES, "T": T, "stage": "student",
                                "kd": "none", "config_key": "const", "data": data or {}})
    return out_dir


def count_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


# ---------------------------------------------------------------- without OpenPifPaf


def test_student_input_is_what_pack_gives(cached_student, monkeypatch, tmp_path):
    student, pack_dir = cached_student
    test = load_split(pack_dir, "test")
    sid = test.ids[2]
    i = int(sid[1:])
    seen, calls = [], []
    real_classify = predict.classify
    monkeypatch.setattr(predict, "classify", lambda m, x, d: seen.append(x) or real_classify(m, x, d))
    fake_extraction(monkeypatch, coco_people(i, people=2), calls)
    result = predict.predict_video(stick_figure_video(tmp_path / "v.mp4"), student, CPU)
    # the backbone comes from the pack's record of the LQ source; simulated LQ → a warning
    assert calls == ["shufflenetv2k16"] and result.backbone == "shufflenetv2k16"
    assert any("simulated" in w for w in result.warnings)
    np.testing.assert_array_equal(seen[0][0], test.lq[2])
    assert seen[0].shape == (1, 3, 16, 17, 2) and result.frames_used == list(range(16))
    assert any("16 of the 20 frames" in w for w in result.warnings)
    p = [prob for _, prob in result.top]
    assert len(p) == 5 and p == sorted(p, reverse=True) and sum(p) <= 1 + 1e-9
    assert result.probabilities.sum() == pytest.approx(1.0)


def test_backbone_mismatch_warns_and_aliases_match(cached_student, monkeypatch, tmp_path):
    student, _ = cached_student
    calls = []
    fake_extraction(monkeypatch, coco_people(0), calls)
    video = stick_figure_video(tmp_path / "v.mp4")
    same = predict.predict_video(video, student, ExtractConfig(backbone="ShuffleNetv2x1", device="cpu"))
    other = predict.predict_video(video, student, ExtractConfig(backbone="mobilenetv3small", device="cpu"))
    assert calls == ["ShuffleNetv2x1", "mobilenetv3small"]
    assert not any("trained on poses from" in w for w in same.warnings)
    assert any("trained on poses from shufflenetv2k16" in w for w in other.warnings)


def test_frame_folder_video(monkeypatch, tmp_path):
    model = constant_student(tmp_path / "model", T=24)
    fake_extraction(monkeypatch, coco_people(1, people=2))
    folder = tmp_path / "0001"
    folder.mkdir()
    cap = cv2.VideoCapture(str(stick_figure_video(tmp_path / "v.mp4")))
    for t in range(FRAMES):
        cv2.imwrite(str(folder / f"{t + 1:06d}.jpg"), cap.read()[1])
    r = predict.predict_video(folder, model, ExtractConfig(backbone="shufflenetv2k16", device="cpu"),
                              out_video=tmp_path / "out.mp4")
    assert r.top[0][0] == "action1" and count_frames(tmp_path / "out.mp4") == FRAMES


def test_uniform_sampling_follows_the_pack(tmp_path):
    cfg = predict.temporal_config({"T": 8}, {"config": json.dumps({"frames": 300, "sample_frames": 8})})
    kp = coco_people(0)
    x, idx = predict.to_input(kp, (W, H), cfg, 2)
    assert list(idx) == list(np.linspace(0, FRAMES - 1, 8).round().astype(int))
    assert x.shape == (1, 3, 8, 17, 2)
    # centred, divided by the long side; the joint never found stays exactly zero
    j = 5
    np.testing.assert_allclose(x[0, 0, 1, j, 0], (kp[0, idx[1], j, 0] - W / 2) / W, rtol=1e-6)
    np.testing.assert_allclose(x[0, 1, 1, j, 0], (kp[0, idx[1], j, 1] - H / 2) / W, rtol=1e-6)
    assert not x[0, :, :, 3, 0].any() and not x[..., 1].any()
    # no pack record: pad / truncate to the model's T
    assert predict.temporal_config({"T": 12}, {}).sample_frames == 0


def test_pack_record_in_the_model_metadata_is_enough(monkeypatch, tmp_path):
    """A model copied away from its cache: the pack settings recorded in model.json are used."""
    data = {"key": "gone", "lq_source": "openpifpaf:resnet50", "extractor": "openpifpaf:resnet50",
            "config": json.dumps({"frames": 300, "sample_frames": 8})}
    model = constant_student(tmp_path / "model", T=8, data=data)
    calls = []
    fake_extraction(monkeypatch, coco_people(2), calls)
    r = predict.predict_video(stick_figure_video(tmp_path / "v.mp4"), model, CPU)
    assert calls == ["resnet50"] and r.frames_used == list(np.linspace(0, FRAMES - 1, 8).round().astype(int))
    assert not any("not in the cache" in w or "simulated" in w for w in r.warnings)


def test_table_json_and_annotated_video(monkeypatch, tmp_path):
    model = constant_student(tmp_path / "model", T=24)   # longer than the video: zero-padded
    fake_extraction(monkeypatch, coco_people(3, people=2))
    video = stick_figure_video(tmp_path / "in.mp4")
    args = [str(video), "--model", str(model), "--backbone", "mobilenetv3small", "--device", "cpu"]
    r = CliRunner().invoke(predict_command, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = re.findall(r"(\d) │ (action\d) +│ +([\d.]+)%", r.stdout)
    assert [(int(k), name) for k, name, _ in rows] == [
        (1, "action1"), (2, "action5"), (3, "action3"), (4, "action0"), (5, "action2")]
    assert float(rows[0][2]) == pytest.approx(100 * float(BIAS.softmax(0)[1]), abs=0.05)
    r = CliRunner().invoke(predict_command, args + ["--json", "--top", "6",
                                                            "--out-video", str(tmp_path / "o" / "out.mp4")],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    probs = [t["probability"] for t in out["top"]]
    expected = BIAS.double().softmax(0).sort(descending=True).values.numpy()
    np.testing.assert_allclose(probs, expected, rtol=1e-6)
    assert [t["action"] for t in out["top"]][:2] == ["action1", "action5"] and out["people"] == 2
    assert out["backbone"] == "mobilenetv3small"
    assert [w.split(":")[0] for w in out["warnings"]] == [
        f"the pack that {model} was trained on is not in the cache"]
    written = tmp_path / "o" / "out.mp4"
    assert count_frames(written) == FRAMES
    assert not [p for p in written.parent.iterdir() if p.name != "out.mp4"]   # no temp file left
    cap = cv2.VideoCapture(str(written))
    ok, frame = cap.read()
    assert ok and frame.shape == (H, W, 3)
    # the label box (black) top left, the skeleton colours somewhere
    assert frame[2, 2].max() < 60


def test_no_person_found_is_said(monkeypatch, tmp_path):
    model = constant_student(tmp_path / "model", T=24)
    fake_extraction(monkeypatch, np.zeros((2, FRAMES, 17, 3), np.float32))
    r = predict.predict_video(stick_figure_video(tmp_path / "v.mp4"), model,
                              ExtractConfig(backbone="resnet50", device="cpu"))
    assert r.to_json()["people"] == 0 and any("no person was detected" in w for w in r.warnings)
    assert r.top[0][0] == "action1"


def test_backbone_required_when_unrecorded(monkeypatch, tmp_path):
    model = constant_student(tmp_path / "model")
    fake_extraction(monkeypatch, coco_people(0))
    with pytest.raises(SkelpipeError, match="not recorded.*--backbone"):
        predict.predict_video(stick_figure_video(tmp_path / "v.mp4"), model, CPU)


def test_model_directory_errors(tmp_path):
    video = stick_figure_video(tmp_path / "v.mp4")
    runner = CliRunner()
    r = runner.invoke(predict_command, [str(video)])
    assert isinstance(r.exception, SkelpipeError) and "--model" in str(r.exception)
    r = runner.invoke(predict_command, [str(video), "--model", str(tmp_path / "nope")])
    assert r.exit_code != 0 and isinstance(r.exception, SkelpipeError)
    assert str(tmp_path / "nope") in str(r.exception) and "\n" not in str(r.exception)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SkelpipeError, match="empty: no trained model here"):
        predict.resolve_model_dir(tmp_path / "empty")
    # a teacher (ntu25, 3D) is refused
    teacher = tmp_path / "teacher"
    save_model(teacher, build_model(ModelConfig("stgcn", "ntu25", 3, NUM_CLASSES, (8, 8), 3)), {"stage": "teacher"})
    with pytest.raises(SkelpipeError, match="teacher on ntu25.*COCO-17"):
        predict.predict_video(video, teacher, CPU)
    with pytest.raises(SkelpipeError, match="video not found"):
        predict.predict_video(tmp_path / "missing.mp4", teacher, CPU)


def test_evaluate_stage_directory_leads_to_its_model(tmp_path):
    root = tmp_path / "cache"
    constant_student(root / "student" / "abc")
    ev = root / "evaluate" / "e1"
    ev.mkdir(parents=True)
    (ev / "manifest.json").write_text(json.dumps({"inputs": {"model": "abc", "pack": "p"}}))
    assert predict.resolve_model_dir(ev) == root / "student" / "abc"


# ---------------------------------------------------------------- through OpenPifPaf


@pytest.fixture(scope="module")
def estimator(tmp_path_factory):
    """A random-weight shufflenetv2k16 checkpoint with biased confidence heads (people to decode)."""
    pytest.importorskip("openpifpaf", reason="OpenPifPaf is not installed (skelpipe install-openpifpaf)")
    from skelpipe.pose.network import random_checkpoint

    return random_checkpoint("shufflenetv2k16", tmp_path_factory.mktemp("pifpaf") / "k16.pkl", biased=True)


def test_predict_end_to_end_with_a_random_estimator(estimator, cached_student, tmp_path):
    student, _ = cached_student
    video = stick_figure_video(tmp_path / "clip.mp4")
    args = [str(video), "--model", str(student), "--checkpoint", str(estimator), "--device", "cpu",
            "--long-edge", "129", "--decoder-workers", "0"]
    runner = CliRunner()
    r = runner.invoke(predict_command, args + ["--out-video", str(tmp_path / "out.mp4")],
                      catch_exceptions=False)
    assert r.exit_code == 0, r.output
    rows = re.findall(r"(\d) │ (action\d) +│ +([\d.]+)%", r.stdout)
    p = [float(v) for _, _, v in rows]
    assert [int(k) for k, _, _ in rows] == [1, 2, 3, 4, 5] and p == sorted(p, reverse=True)
    assert 0 < sum(p) <= 100.05
    assert "OpenPifPaf shufflenetv2k16" in r.stdout          # taken from the student's pack
    assert count_frames(tmp_path / "out.mp4") == FRAMES
    r = runner.invoke(predict_command, args + ["--json"], catch_exceptions=False)
    out = json.loads(r.stdout)
    probs = [t["probability"] for t in out["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9
    assert out["num_frames"] == FRAMES and out["image_size"] == [W, H] and out["frames_used"] == 16
    assert out["backbone"] == "shufflenetv2k16" and any("simulated" in w for w in out["warnings"])
    assert [t["action"] for t in out["top"]] == [name for _, name, _ in rows]   # same input, same answer
    steps = out["timings_s"]  # each step's own time: read, network, decode, track, then classify
    assert set(steps) == {"extract", "read", "network", "decode", "track", "normalise", "classify"}
    assert all(v >= 0 for v in steps.values()) and steps["network"] > 0 and steps["decode"] > 0
    assert "time: extract" in runner.invoke(predict_command, args, catch_exceptions=False).stdout


def test_tracked_skeletons_are_classified_and_drawn(estimator, cached_student, tmp_path):
    from skelpipe.pose.decoding import BIASED_CONFIG

    student, _ = cached_student
    video = stick_figure_video(tmp_path / "clip.mp4")
    r = predict.predict_video(video, student, ExtractConfig(checkpoint=estimator, device="cpu", long_edge=129,
                                                             decoder_workers=0, decoder_config=BIASED_CONFIG),
                              out_video=tmp_path / "out.mp4")
    assert r.keypoints.shape == (2, FRAMES, 17, 3) and r.to_json()["people"] >= 1
    found = r.keypoints[..., 2] > 0
    assert (r.keypoints[..., 0][found] < W).all() and (r.keypoints[..., 1][found] < H).all()
    assert r.probabilities.sum() == pytest.approx(1.0) and len(r.top) == 5
    # the skeletons (orange for the first person: BGR (0, 200, 255)) appear in the output only
    cap_in, cap_out = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(tmp_path / "out.mp4"))
    orange_in = orange_out = 0
    for _ in range(FRAMES):
        a, b = cap_in.read()[1].astype(int), cap_out.read()[1].astype(int)
        orange_in += int(((a[..., 2] - a[..., 0]) > 80).sum())
        orange_out += int(((b[..., 2] - b[..., 0]) > 80).sum())
    assert orange_in == 0 and orange_out > 20 * FRAMES


def test_unreadable_video_is_one_line_error(estimator, cached_student, tmp_path):
    student, _ = cached_student
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 10)
    with pytest.raises(SkelpipeError, match="broken.mp4"):
        predict.predict_video(bad, student, ExtractConfig(checkpoint=estimator, device="cpu", long_edge=129,
                                                             decoder_workers=0))
