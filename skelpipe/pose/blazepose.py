"""BlazePose (mediapipe's pose solution) as a per-frame estimator beside OpenPifPaf.

A trained network that runs offline: mediapipe's wheel ships the detector and the full landmark
model (``mediapipe/modules/pose_detection/pose_detection.tflite``,
``mediapipe/modules/pose_landmark/pose_landmark_full.tflite``). It is **single-person**: it finds
one person and follows it from frame to frame (its tracking state is reset for every video).
It runs on the CPU, whatever ``--device`` says (mediapipe's Python solutions have no CUDA path).

Its 33 landmarks are mapped to COCO-17 by name (mediapipe's ``PoseLandmark`` names are COCO's
joint names in upper case); a joint's confidence is its visibility (times its presence when the
model reports one). Coordinates come back normalised to the image and are returned in pixels of
the frame it was given, so that ``skelpipe.pose.extract`` maps, tracks and stores them exactly as
OpenPifPaf's poses. mediapipe is imported only when BlazePose is used.
"""

import importlib.metadata
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fingerprint import content_key
from skelpipe.pose.decoding import DecodeFailure
from skelpipe.skeleton.layouts import COCO17

NAME = "blazepose"
MEDIAPIPE_VERSION = "0.10.21"
#: The files that are BlazePose's "checkpoint": the two networks and the graph joining them.
MODEL_FILES = ("modules/pose_detection/pose_detection.tflite", "modules/pose_landmark/pose_landmark_full.tflite",
               "modules/pose_landmark/pose_landmark_cpu.binarypb")
FIX = "run `skelpipe install-mediapipe`"


def is_blazepose(backbone: str | None) -> bool:
    return str(backbone or "").strip().lower() == NAME


def model_files() -> list[Path]:
    """The installed mediapipe's BlazePose model files (found without importing mediapipe)."""
    spec = importlib.util.find_spec("mediapipe")
    if spec is None or not spec.submodule_search_locations:
        raise SkelpipeError(f"--backbone {NAME} needs mediapipe, which is not installed: {FIX}")
    root = Path(list(spec.submodule_search_locations)[0])
    files = [root / f for f in MODEL_FILES]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SkelpipeError(f"{missing[0]}: BlazePose model file missing from the mediapipe package: {FIX}")
    return files


def checkpoint_key(memo: Path | None = None) -> str:
    """BlazePose's weights by content: a changed mediapipe model changes every key built on it."""
    return "mediapipe:" + ",".join(content_key(f, memo) for f in model_files())


def landmark_indices(pose_landmark) -> list[int]:
    """mediapipe's landmark index of each COCO-17 joint, in COCO's order (by name)."""
    return [int(pose_landmark[name.upper()]) for name in COCO17.joints]


def _mediapipe():
    try:
        import mediapipe
    except ImportError as e:
        raise SkelpipeError(f"--backbone {NAME}: mediapipe is not importable ({e}): {FIX}") from e
    return mediapipe


@dataclass
class BlazePose:
    """The estimator of ``--backbone blazepose``, as ``skelpipe.pose.extract`` uses it."""
    backbone: str
    checkpoint: str  # mediapipe's version and its model files' content, as the stores record it
    complexity: int = 1  # the full landmark model, the one the wheel ships

    @property
    def source(self) -> str:
        return f"mediapipe:{self.backbone}"

    def solution(self):
        """A fresh mediapipe pose solution, tracking one person through a video."""
        mp = _mediapipe()
        try:
            return mp.solutions.pose.Pose(static_image_mode=False, model_complexity=self.complexity,
                                          smooth_landmarks=True, enable_segmentation=False)
        except Exception as e:  # noqa: BLE001 - e.g. a protobuf newer than this mediapipe
            raise SkelpipeError(f"--backbone {NAME}: mediapipe {_version()} does not start its pose solution "
                                f"({type(e).__name__}: {e}): {FIX}") from e


def _version() -> str:
    try:
        return importlib.metadata.version("mediapipe")
    except importlib.metadata.PackageNotFoundError:
        return "(version unknown)"


def load_blazepose(checkpoint: str | None = None) -> BlazePose:
    """BlazePose from the installed mediapipe; fails now (one line) if it cannot run."""
    if checkpoint:
        raise SkelpipeError(f"--checkpoint {checkpoint}: --backbone {NAME} uses the model files of the "
                            "installed mediapipe package; no checkpoint can be given")
    files = model_files()
    net = BlazePose(NAME, f"mediapipe {_version()} {files[1].name} ({checkpoint_key()})")
    net.solution().close()  # a mediapipe that cannot run fails before anything is written
    return net


class BlazePoseFrames:
    """Frames in, poses out: ``extract``'s frame-estimator interface for BlazePose.

    ``begin(info)`` starts a video (fresh tracking); ``put(key, start, batch)`` estimates the
    frames of an RGB batch at once; ``collect`` / ``drain`` hand back ``((key, t), (poses, scores))``
    with poses ``(N, 17, 3)`` in pixels of the resized frame (N = 0 or 1). A frame mediapipe fails
    on is a ``DecodeFailure``: reported, never fatal.
    """

    def __init__(self, net: BlazePose):
        self.net = net
        self.index = landmark_indices(_mediapipe().solutions.pose.PoseLandmark)
        self.pose = None
        self.size = (0, 0)
        self.done: list = []
        self.seconds = {"network": 0.0, "decode": 0.0}

    def begin(self, info):
        self.close()
        self.pose = self.net.solution()
        self.size = info.resized

    def put(self, key, start: int, batch: np.ndarray):
        w, h = self.size
        t0 = time.perf_counter()
        for i, frame in enumerate(batch):
            try:
                result = self.pose.process(np.ascontiguousarray(frame[:h, :w]))  # without the padding
                self.done.append(((key, start + i), self._poses(result, w, h)))
            except Exception as e:  # noqa: BLE001 - reported for this frame only
                self.done.append(((key, start + i), DecodeFailure(f"BlazePose error: {type(e).__name__}: {e}")))
        self.seconds["network"] += time.perf_counter() - t0

    def _poses(self, result, w: int, h: int):
        if result.pose_landmarks is None:
            return np.zeros((0, 17, 3), np.float32), np.zeros(0, np.float32)
        marks = result.pose_landmarks.landmark
        pose = np.zeros((1, 17, 3), np.float32)
        for j, k in enumerate(self.index):
            m = marks[k]
            presence = m.presence if m.HasField("presence") else 1.0
            pose[0, j] = (m.x * w - 0.5, m.y * h - 0.5, m.visibility * presence)  # pixel centres at integers
        if not np.isfinite(pose).all():
            raise ValueError("non-finite landmark")
        return pose, pose[:, :, 2].mean(axis=1)

    def end(self):
        pass

    def collect(self) -> list:
        out, self.done = self.done, []
        return out

    drain = collect

    def close(self):
        if self.pose is not None:
            self.pose.close()
            self.pose = None
