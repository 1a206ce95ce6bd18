"""BlazePose (mediapipe's trained pose network) as an extractor, on the real videos of
../shared/data/videos: what real poses must satisfy, the store OpenPifPaf writes, predict and a
pipeline source end to end. Skips cleanly without the videos or without mediapipe
(``skelpipe install-mediapipe``)."""

import importlib.util
import json
import re
import tomllib
import types
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SHARED_DATA

from skelpipe.commands.install_mediapipe import RUNTIME_NEEDS, patch_solution_base
from skelpipe.core.errors import SkelpipeError
from skelpipe.pipeline.extraction import extract_file
from skelpipe.pose import blazepose
from skelpipe.pose.settings import ExtractConfig
from skelpipe.pose.video import first_frames
from skelpipe.skeleton.layouts import COCO17
from skelpipe.skeleton.store import PoseWriter, open_store

needs_mediapipe = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None,
                                     reason="mediapipe is not installed (skelpipe install-mediapipe)")
CLIPS = {"ta_chi": "ta_chi.mp4", "S001C001P001R001A001": "S001C001P001R001A001_rgb.avi"}
FRAMES = 90  # three seconds of each video
J = COCO17.index
LIMBS = {"left upper arm": ("left_shoulder", "left_elbow"), "right upper arm": ("right_shoulder", "right_elbow"),
         "left thigh": ("left_hip", "left_knee"), "right thigh": ("right_hip", "right_knee"),
         "left shin": ("left_knee", "left_ankle"), "right shin": ("right_knee", "right_ankle")}
PAIRS = [(side.replace("left", "right"), side) for side in COCO17.joints if side.startswith("left")]


# ---------------------------------------------------------------- without mediapipe


def test_extra_lists_what_install_mediapipe_installs():
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["optional-dependencies"]["mediapipe"] == RUNTIME_NEEDS


def test_protobuf_patch_works_with_old_and_new_protobuf_and_refuses_other_files(tmp_path):
    # mediapipe 0.10.21's lines, inside a function of the same indentation as its method body
    original = ("def kind(calculator_options, field_name, descriptor):\n"
                "      for _ in [0]:\n"
                "        if field_name is None:\n          pass\n        else:\n"
                "          field_label = calculator_options.DESCRIPTOR.fields_by_name[\n"
                "              field_name].label\n"
                "          if field_label == descriptor.FieldDescriptor.LABEL_REPEATED:\n"
                "            return 'repeated'\n"
                "          return 'single'\n")
    path = tmp_path / "solution_base.py"
    path.write_text(original)
    assert patch_solution_base(path) is True
    code = {}
    exec(path.read_text(), code)
    ns = types.SimpleNamespace
    protobuf4 = ns(FieldDescriptor=ns(LABEL_REPEATED=3))
    for field, expected in ((ns(label=3), "repeated"), (ns(label=1), "single"),          # protobuf < 7
                            (ns(is_repeated=True), "repeated"), (ns(is_repeated=False), "single")):  # 7
        options = ns(DESCRIPTOR=ns(fields_by_name={"f": field}))
        assert code["kind"](options, "f", protobuf4) == expected
    patched = path.read_text()
    assert patch_solution_base(path) is False and path.read_text() == patched
    other = tmp_path / "other.py"
    other.write_text("x = 1\n")
    with pytest.raises(SkelpipeError, match="not mediapipe 0.10.21's solution_base.py"):
        patch_solution_base(other)


def test_checkpoint_is_refused_for_blazepose():
    with pytest.raises(SkelpipeError, match="uses the model files of the installed mediapipe"):
        blazepose.load_blazepose("some.pkl")


# ---------------------------------------------------------------- on the real videos


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    """Both real videos (their first 3 s) and a broken file, extracted once with BlazePose."""
    if not (SHARED_DATA / "videos").is_dir():
        pytest.skip("../shared/data/videos is absent")
    if importlib.util.find_spec("mediapipe") is None:
        pytest.skip("mediapipe is not installed (skelpipe install-mediapipe)")
    tmp = tmp_path_factory.mktemp("blazepose")
    clips = {sid: first_frames(SHARED_DATA / "videos" / name, FRAMES, tmp).rename(tmp / f"{sid}.avi")
             for sid, name in CLIPS.items()}
    broken = tmp / "broken.avi"
    broken.write_bytes(b"not a video")
    manifest = extract_file([*clips.values(), broken], tmp / "poses.h5", ExtractConfig("blazepose"))
    with open_store(tmp / "poses.h5") as s:
        samples = {sid: s.read(sid) for sid in s.ids()}
        attrs = dict(s.attrs)
    return {"clips": clips, "manifest": manifest, "samples": samples, "attrs": attrs, "out": tmp / "poses.h5"}


@needs_mediapipe
def test_coco_joints_are_the_mediapipe_landmarks_of_the_same_name():
    import mediapipe as mp

    assert blazepose.landmark_indices(mp.solutions.pose.PoseLandmark) == [
        0, 2, 5, 7, 8, 11, 12, 13, 14, 15, 16, 23, 24, 25, 26, 27, 28]


def _person(smp) -> np.ndarray:
    """The one tracked person (T, 17, 3); BlazePose's second person slot stays empty."""
    assert smp.keypoints.shape[1:] == (FRAMES, 17, 3)
    assert not (smp.keypoints[1:, ..., 2] > 0).any()
    return smp.keypoints[0]


def test_person_found_with_joints_inside_the_frame(extracted):
    for sid, smp in extracted["samples"].items():
        p = _person(smp)
        w, h = smp.attrs["image_size"]
        found = (p[..., 2] > 0).any(axis=1)
        assert found.mean() >= 0.9, sid
        seen = p[found, :, 2] > 0
        assert seen.mean() >= 0.9, sid  # a whole body is in view in both videos
        xy = p[found][seen][:, :2]
        assert (xy >= -0.5).all() and (xy[:, 0] <= w - 0.5).all() and (xy[:, 1] <= h - 0.5).all(), sid
        assert (p[found][seen][:, 2] <= 1).all() and np.median(p[found][seen][:, 2]) > 0.9, sid
        # the body spans a plausible part of the frame: nose above the ankles, a tenth of the height at least
        height = np.median(p[found, J("left_ankle"), 1] - p[found, J("nose"), 1])
        assert 0.1 * h < height < h, sid
    assert [b["item"] for b in extracted["manifest"]["bad_items"]] == ["broken"]


def test_left_and_right_are_in_a_plausible_order(extracted):
    # NTU's camera 1 films the subject from the front: their left is on the image's right
    p = _person(extracted["samples"]["S001C001P001R001A001"])
    for right, left in (("right_shoulder", "left_shoulder"), ("right_hip", "left_hip")):
        assert (p[:, J(left), 0] > p[:, J(right), 0]).mean() >= 0.95, left
    # both videos (tai chi turns the body): a left and a right joint never trade places between
    # two frames, i.e. each is nearer its own previous position than the other's
    for sid, smp in extracted["samples"].items():
        p = _person(smp)
        swaps = 0
        for right, left in PAIRS:
            a, b = p[:, J(left), :2], p[:, J(right), :2]
            kept = np.linalg.norm(a[1:] - a[:-1], axis=1) + np.linalg.norm(b[1:] - b[:-1], axis=1)
            traded = np.linalg.norm(a[1:] - b[:-1], axis=1) + np.linalg.norm(b[1:] - a[:-1], axis=1)
            swaps += int((traded < kept).sum())
        assert swaps <= 0.02 * len(PAIRS) * (FRAMES - 1), (sid, swaps)


def test_bone_lengths_are_stable_over_time(extracted):
    for sid, smp in extracted["samples"].items():
        p = _person(smp)
        for limb, (a, b) in LIMBS.items():
            both = (p[:, J(a), 2] > 0) & (p[:, J(b), 2] > 0)
            length = np.linalg.norm(p[both, J(a), :2] - p[both, J(b), :2], axis=1)
            spread = np.median(np.abs(length - np.median(length))) / np.median(length)
            assert both.mean() >= 0.9 and spread < 0.15, (sid, limb, spread)


def test_store_has_the_format_of_openpifpafs(extracted, tmp_path):
    pytest.importorskip("openpifpaf", reason="OpenPifPaf is not installed (skelpipe install-openpifpaf)")
    from skelpipe.pose import decoding, network

    ckpt = network.random_checkpoint("mobilenetv3small", tmp_path / "mnv3s.pkl", biased=True)
    clip = extracted["clips"]["ta_chi"]
    extract_file([clip], tmp_path / "pifpaf.h5",
                 ExtractConfig("mobilenetv3small", checkpoint=str(ckpt), device="cpu", long_edge=65,
                               decoder_workers=0, decoder_config=decoding.BIASED_CONFIG))
    with open_store(tmp_path / "pifpaf.h5") as s:
        pifpaf, pifpaf_attrs = s.read(s.ids()[0]), dict(s.attrs)
    ours = extracted["samples"]["ta_chi"]
    assert set(extracted["attrs"]) == set(pifpaf_attrs) and extracted["attrs"]["layout"] == "coco17"
    assert extracted["attrs"]["joints"] == pifpaf_attrs["joints"]
    assert (extracted["attrs"]["source"], pifpaf_attrs["source"]) == ("mediapipe:blazepose",
                                                                      "openpifpaf:mobilenetv3small")
    assert set(ours.attrs) == set(pifpaf.attrs) and set(ours.arrays) == set(pifpaf.arrays) == {"score"}
    assert ours.keypoints.shape == pifpaf.keypoints.shape and ours.keypoints.dtype == pifpaf.keypoints.dtype
    assert ours.arrays["score"].shape == pifpaf.arrays["score"].shape
    for key in ("fps", "num_frames", "image_size", "channels"):
        assert ours.attrs[key] == pifpaf.attrs[key], key
    assert ours.attrs["checkpoint"].startswith("mediapipe 0.10.21 pose_landmark_full.tflite (mediapipe:")


def test_same_videos_again_is_nothing_to_do(extracted):
    again = extract_file(list(extracted["clips"].values()) + [extracted["out"].parent / "broken.avi"],
                         extracted["out"], ExtractConfig("blazepose"))
    assert again["key"] == extracted["manifest"]["key"]
    assert again["config"]["checkpoint"] == blazepose.checkpoint_key()


# ---------------------------------------------------------------- predict and a pipeline source


def blazepose_student(tmp: Path) -> Path:
    """A 1-epoch student whose pack says its LQ poses came from BlazePose."""
    from skelpipe.data.pack import PackConfig
    from skelpipe.learn.config import TrainConfig
    from skelpipe.learn.train import train
    from skelpipe.pipeline.cache import Cache
    from skelpipe.pipeline.stages import run_pack

    names = ["wave", "walk", "sit"]
    rng = np.random.default_rng(0)
    (tmp / "aligned").mkdir()
    with PoseWriter(tmp / "aligned" / "hq.h5", "ntu25", {"source": "synthetic", "channels": "x,y,z"}) as hq, \
            PoseWriter(tmp / "aligned" / "lq.h5", "coco17", {"source": "mediapipe:blazepose", "extractor": "mediapipe",
                                                            "channels": "x,y,conf", "class_names": names}) as lq:
        for i in range(9):
            label, split = i % 3, "train" if i < 6 else "test"
            hq.add(f"s{i}", rng.normal(size=(1, 20, 25, 3)).astype(np.float32), label=label, split=split)
            lq_pose = np.concatenate([rng.uniform(10, 90, (1, 20, 17, 2)), np.ones((1, 20, 17, 1))], axis=-1)
            lq.add(f"s{i}", lq_pose.astype(np.float32), label=label, split=split, image_size=[100, 100], fps=30.0,
                   label_name=names[label])
    pack_dir = run_pack(Cache(tmp / "cache"), tmp / "aligned", PackConfig(frames=16))
    student = tmp / "cache" / "student" / "s1"
    train(TrainConfig(stage="student", channels=(8, 8), temporal_kernel=3, epochs=1, batch_size=3, device="cpu"),
          pack_dir, student)
    return student


def test_predict_a_real_video_offline(extracted, tmp_path):
    from skelpipe.commands.predict import predict_command

    clip = extracted["clips"]["ta_chi"]
    args = [str(clip), "--model", str(blazepose_student(tmp_path)), "--device", "cpu"]
    table = CliRunner().invoke(predict_command, args, catch_exceptions=False)
    assert table.exit_code == 0, table.output
    assert "poses from BlazePose" in table.stdout and f"{FRAMES} frames, 340×256" in table.stdout
    out = json.loads(CliRunner().invoke(predict_command, args + ["--json"], catch_exceptions=False).stdout)
    assert out["backbone"] == "blazepose" and out["people"] == 1 and out["num_frames"] == FRAMES
    probs = [t["probability"] for t in out["top"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-6
    assert not any("simulated" in w or "trained on poses from" in w for w in out["warnings"])
    assert out["timings_s"]["network"] > 0


def test_blazepose_as_an_lq_source_of_a_pipeline(extracted, tmp_path):
    """NTU's pipeline with ``sources.k16.backbone = "blazepose"``: Kinect skeletons + the real
    NTU video → extract (BlazePose) → align; its model files are the stage's checkpoint."""
    from conftest import SKELETON_FRAMES, skeleton_text

    from skelpipe.cli import cli

    name = "S001C001P001R001A001"
    root = tmp_path / "ntu"
    (root / "nturgb+d_skeletons").mkdir(parents=True)
    (root / "nturgb+d_skeletons" / f"{name}.skeleton").write_bytes(skeleton_text(SKELETON_FRAMES))
    clip = first_frames(extracted["clips"][name], len(SKELETON_FRAMES), tmp_path)
    (root / "nturgb+d_rgb").mkdir()
    clip.rename(root / "nturgb+d_rgb" / f"{name}_rgb.avi")
    sets = ["experiments.settings=['heterogeneous']", "sources.k16.backbone='blazepose'",
            "sources.k16.label='BlazePose'"]
    result = CliRunner().invoke(cli, ["run-all", "ntu", "--data-root", str(root), "--until", "align",
                                      "--cache-dir", str(tmp_path / "cache"), "--device", "cpu",
                                      *[a for s in sets for a in ("--set", s)]])
    assert result.exit_code == 0, result.output
    stage = next((tmp_path / "cache" / "extract").glob("*/manifest.json")).parent
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["config"]["backbone"] == "blazepose"
    assert manifest["config"]["checkpoint"] == blazepose.checkpoint_key()
    assert re.fullmatch(r"mediapipe:[0-9a-f]{16}(,[0-9a-f]{16}){2}", manifest["config"]["checkpoint"])
    with open_store(stage / "skeletons.h5") as s:
        assert s.ids() == [name] and s.attrs["source"] == "mediapipe:blazepose"
        assert (s.read(name).keypoints[0, :, :, 2] > 0).any(axis=1).all()
    aligned = next((tmp_path / "cache" / "align").glob("*/manifest.json")).parent
    with open_store(aligned / "lq.h5") as lq:
        assert lq.ids() == [name]


def test_bench_extract_reports_blazepose_frames_per_second(extracted, capsys):
    from skelpipe.cli import main

    main(["bench", "extract", "--backbone", "blazepose", "--video", str(extracted["clips"]["ta_chi"]),
          "--max-frames", "20", "--device", "cpu"])
    err = capsys.readouterr().err
    assert "extraction speed, 20 frames" in err
    rows = {line.split("│")[1].strip(): line for line in err.splitlines() if line.count("│") >= 4}
    assert not any(k.startswith("python -m") for k in rows)  # OpenPifPaf's own tool has no BlazePose
    for what in ("skelpipe extract", "network alone (batch"):
        (line,) = [v for k, v in rows.items() if k.startswith(what)]
        assert float(line.split("│")[2].replace(",", "")) > 0
