"""predict: one video → 2D poses (OpenPifPaf or BlazePose) → the student → its top-k actions.

The video's poses are extracted with the estimator the student was trained on (recorded in
the pack the student was trained from: ``lq_source`` ``openpifpaf:<backbone>``,
``mediapipe:blazepose`` or ``simulated:<profile>``), normalised and cut to ``T`` frames exactly as ``skelpipe.data.pack``
does (``pack.normalise_2d``, ``pack.frame_indices``, ``pack.to_tensor``), and classified.
Optionally the video is written again with the tracked skeletons and the top-1 label drawn.

A student trained on *simulated* LQ poses (the demo, Penn Action without frames) has never
seen a real estimator's output; predictions on real videos then come with a warning.
"""

import dataclasses
import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import torch

from skelpipe.core import device as devices
from skelpipe.core.console import console
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.work import Work
from skelpipe.data.pack import PackConfig, frame_indices, normalise_2d, to_tensor
from skelpipe.data.split import FILE, decode_attr
from skelpipe.learn.checkpoint import load_model
from skelpipe.learn.evaluate import predict
from skelpipe.pipeline.cache import default_root
from skelpipe.pipeline.onnx import OnnxModel
from skelpipe.pose import extract
from skelpipe.pose import video as videos
from skelpipe.pose.network import resolve_backbone
from skelpipe.pose.settings import ExtractConfig
from skelpipe.pose.video import Video
from skelpipe.skeleton import layouts
from skelpipe.skeleton.store import open_store

# Colours (BGR) of the tracked people in the output video; the label is drawn in white.
PERSON_COLOURS = ((0, 200, 255), (255, 120, 0), (0, 220, 0), (200, 0, 200))


@dataclass
class Prediction:
    """What ``predict_video`` found: the top-k actions and what they were computed from."""
    video: str
    top: list                     # [(class name, probability)], most probable first
    probabilities: np.ndarray     # (K,) softmax over all classes
    keypoints: np.ndarray         # (M, T, 17, 3) tracked poses in pixels (x, y, conf)
    image_size: tuple             # (W, H)
    fps: float
    num_frames: int
    frames_used: list             # indices of the frames the student saw
    backbone: str
    checkpoint: str | None
    model_dir: str
    warnings: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)  # seconds: extract (read, network, decode, track), normalise, classify

    def to_json(self) -> dict:
        return {"video": self.video, "model": self.model_dir, "backbone": self.backbone,
                "checkpoint": self.checkpoint, "num_frames": self.num_frames,
                "frames_used": len(self.frames_used), "fps": self.fps,
                "image_size": list(self.image_size),
                "people": int((self.keypoints[..., 2] > 0).any(axis=(1, 2)).sum()),
                "top": [{"rank": i + 1, "action": name, "probability": p}
                        for i, (name, p) in enumerate(self.top)],
                "warnings": self.warnings, "timings_s": self.timings}


# ---------------------------------------------------------------- the model and its data


def resolve_model_dir(path) -> Path:
    """The training directory holding ``model.json`` + ``model.pt``.

    Accepts a training output directory (``skelpipe train --out``, a ``student``/``teacher``
    stage of the cache) or an ``evaluate`` stage directory (its manifest names the model it
    evaluated, looked up beside it in the same cache).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise SkelpipeError(f"{p}: model directory not found (give --model a training output "
                            "directory holding model.json and model.pt)")
    if (p / "model.json").is_file():
        return p
    manifest = _read_json(p / "manifest.json")
    model_key = (manifest or {}).get("inputs", {}).get("model")
    if model_key:
        root = p.parent.parent
        for stage in ("student", "teacher"):
            if (root / stage / model_key / "model.json").is_file():
                return root / stage / model_key
    raise SkelpipeError(f"{p}: no trained model here (expected model.json and model.pt, as "
                        "written by skelpipe train or a student stage of run-all)")


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pack_attrs(model_dir: Path, meta: dict) -> dict:
    """The root attributes of the pack the model was trained on, or {} when it is not found.

    The pack is found by its key (``meta["data"]["key"]``) in the cache holding the model
    (a pipeline stage) or in the default cache.
    """


    key = (meta.get("data") or {}).get("key")
    if not key:
        return {}
    for root in (Path(model_dir).resolve().parent.parent, default_root()):
        path = Path(root) / "pack" / str(key) / FILE
        if path.is_file():
            try:
                with h5py.File(path, "r") as f:
                    return {k: decode_attr(v) for k, v in f.attrs.items()}
            except OSError:
                return {}
    return {}


def estimator_of(meta: dict, attrs: dict) -> tuple[str | None, bool]:
    """(backbone the student's LQ poses came from or None when unrecorded, simulated?)."""
    data = meta.get("data") or {}
    source = str(attrs.get("lq_source") or data.get("lq_source") or "")
    extractor = str(attrs.get("extractor") or data.get("extractor") or "")
    simulated = extractor == "simulated" or source.startswith("simulated")
    backbone = attrs.get("backbone") or data.get("backbone")
    for text in (source, extractor):
        kind, _, name = text.partition(":")
        if not backbone and kind in ("openpifpaf", "mediapipe", "simulated") and name:
            backbone = name
    return backbone, simulated


def temporal_config(meta: dict, attrs: dict):
    """The ``pack.PackConfig`` that fixes T and the frame choice of the student's pack."""

    config = attrs.get("config")
    if isinstance(config, str):
        config = decode_attr(config)
    T = int(meta.get("T") or attrs.get("T") or 300)
    if isinstance(config, dict) and (config.get("sample_frames") or config.get("frames")):
        sample = int(config.get("sample_frames") or 0)
        return PackConfig(frames=T if not sample else int(config.get("frames") or T), sample_frames=sample)
    return PackConfig(frames=T)


def check_student(model_dir: Path, meta: dict):
    """A predict model must classify COCO-17 (x, y, confidence) skeletons."""
    net = meta["model"]
    if net["layout"] != "coco17" or net["in_channels"] != 3:
        what = "teacher" if meta.get("stage") == "teacher" else "model"
        raise SkelpipeError(f"{model_dir}: a {what} on {net['layout']} skeletons with "
                            f"{net['in_channels']} channels; predict needs a student trained on "
                            "COCO-17 2D poses (x, y, confidence)")


def to_input(keypoints: np.ndarray, image_size, cfg, num_persons: int):
    """(M, T', 17, 3) pixels → ((1, 3, T, 17, M) float32 as the pack stores it, frames used)."""

    kp = normalise_2d(keypoints, image_size)
    idx = frame_indices(kp.shape[1], cfg)
    return to_tensor(kp, idx, cfg.length, num_persons)[None], idx


def classify(model, x: np.ndarray, device) -> np.ndarray:
    """Softmax probabilities (K,) of the model on one input (1, C, T, V, M), in fp32 (one clip
    takes milliseconds: no reason to round it to bf16)."""
    logits = predict(model, x, batch_size=1, device=device, amp=False)
    return torch.softmax(logits[0].double(), 0).numpy()


# ---------------------------------------------------------------- extraction


def extract_poses(video, config: ExtractConfig):
    """(keypoints (M, T, 17, 3) pixels, attrs with fps / image_size / num_frames) of one video.

    ``skelpipe.pose.extract.extract_to_work`` into a temporary directory, read back: the same
    reader, network, decoder and tracker as ``skelpipe extract``.
    """

    with tempfile.TemporaryDirectory(prefix="skelpipe-predict-") as tmp:
        stats = extract.extract_to_work([Video(extract.sample_id_for(Path(video)), Path(video))],
                                        Work(Path(tmp)), config, out_name="poses.h5")
        if stats.bad:
            raise SkelpipeError(stats.bad[0][1])
        with open_store(Path(tmp) / "poses.h5") as s:
            if not len(s):
                raise SkelpipeError(f"{video}: no poses extracted")
            smp = s.read(s.ids()[0])
            return smp.keypoints, {**s.attrs, **smp.attrs, "step_seconds": stats.steps}


# ---------------------------------------------------------------- the whole prediction


def predict_video(video, model_dir, extraction: ExtractConfig = ExtractConfig(), top=5,
                  out_video=None) -> Prediction:
    """Extract, normalise and classify one video with a trained student; see the module doc.

    ``extraction``: the pose estimator (``backbone`` None: the one the student was trained on)
    and its settings; its device runs the student too. The people kept are the student's.
    """

    video = Path(video)
    if not video.exists():
        raise SkelpipeError(f"{video}: video not found")
    model_dir, meta, found, probabilities = _student(model_dir, devices.resolve(extraction.device))
    # what the training run recorded of its pack, completed by the pack itself when it is cached
    attrs = {**(meta.get("data") or {}), **found}
    backbone, warnings = _backbone_and_warnings(model_dir, meta, attrs, found, extraction.backbone)
    for w in warnings:
        console.print(f"[yellow]warning:[/] {w}")

    timings, t0 = {}, time.perf_counter()
    people = int(meta["model"]["num_persons"])
    extraction = dataclasses.replace(extraction, backbone=backbone, max_people=people)
    keypoints, vattrs = extract_poses(video, extraction)
    timings["extract"] = time.perf_counter() - t0  # its steps overlap: each one's own time below
    timings.update(vattrs.get("step_seconds") or {})
    image_size = tuple(int(v) for v in vattrs.get("image_size") or ())
    if len(image_size) != 2:
        raise SkelpipeError(f"{video}: extraction recorded no image size")
    t0 = time.perf_counter()
    cfg = temporal_config(meta, attrs)
    x, idx = to_input(keypoints, image_size, cfg, people)
    timings["normalise"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    probs = probabilities(x)
    timings["classify"] = time.perf_counter() - t0
    names = list(meta.get("class_names") or [])
    if len(names) != len(probs):
        names = [str(k) for k in range(len(probs))]
    order = np.argsort(-probs, kind="stable")[:max(1, int(top))]
    result = Prediction(
        video=str(video), top=[(names[k], float(probs[k])) for k in order], probabilities=probs,
        keypoints=keypoints, image_size=image_size, fps=float(vattrs.get("fps") or 0.0),
        num_frames=int(vattrs.get("num_frames") or keypoints.shape[1]),
        frames_used=[int(i) for i in idx], backbone=backbone, model_dir=str(model_dir),
        checkpoint=str(extraction.checkpoint) if extraction.checkpoint else None,
        warnings=warnings, timings={k: round(v, 4) for k, v in timings.items()})
    if not (keypoints[..., 2] > 0).any():
        result.warnings.append("no person was detected in any frame: the prediction is that of an "
                               "empty skeleton sequence")
        console.print(f"[yellow]warning:[/] {result.warnings[-1]}")
    if keypoints.shape[1] > len(idx):
        how = "uniformly sampled" if cfg.sample_frames else "the first ones"
        result.warnings.append(f"the student saw {len(idx)} of the {keypoints.shape[1]} frames ({how}, "
                               "as in its training pack)")
        console.print(f"[yellow]note:[/] {result.warnings[-1]}")
    if out_video is not None:
        write_video(video, out_video, keypoints, f"{result.top[0][0]} {result.top[0][1]:.0%}")
    return result


def _student(model_dir, dev):
    """(its path, model.json, its pack's attributes, probabilities(x)) of a trained student: a
    training directory run by PyTorch, or an exported ``.onnx`` file run by ONNX Runtime."""
    if str(model_dir).endswith(".onnx"):
        runner = OnnxModel(model_dir)
        check_student(Path(model_dir), runner.meta)
        return Path(model_dir), runner.meta, runner.pack, runner.probabilities
    model_dir = resolve_model_dir(model_dir)
    model, meta = load_model(model_dir, dev)
    check_student(model_dir, meta)
    return model_dir, meta, pack_attrs(model_dir, meta), lambda x: classify(model, x, dev)


def _backbone_and_warnings(model_dir, meta, attrs, found, backbone):
    """The pose estimator to run (``--backbone``, else the one the student was trained on) and
    what the user should know: a pack not in the cache, another estimator, simulated poses."""
    recorded, simulated = estimator_of(meta, attrs)
    warnings = []
    if not found and not attrs.get("config"):
        warnings.append(f"the pack that {model_dir} was trained on is not in the cache: assuming "
                        f"its first {meta.get('T', 300)} frames, zero-padded (not uniform sampling)")
    if backbone is None:
        if recorded is None:
            raise SkelpipeError(f"{model_dir}: the pose estimator this student was trained on is not "
                                "recorded (its pack is not in the cache); give --backbone")
        backbone = recorded
    elif recorded and _same_backbone(backbone, recorded) is False:
        warnings.append(f"--backbone {backbone}: the student was trained on poses from {recorded}")
    if simulated:
        warnings.append(f"the student was trained on simulated{f' {recorded}' if recorded else ''} poses "
                        "(skelpipe.pose.simulate), not on a real estimator's output; predictions on real "
                        "videos may be worse than its test accuracy suggests")
    return backbone, warnings


def _same_backbone(a: str, b: str):
    return resolve_backbone(a) == resolve_backbone(b)


# ---------------------------------------------------------------- the annotated video


def draw_skeletons(frame: np.ndarray, people: np.ndarray, edges, min_conf: float = 0.0):
    """Draw (M, 17, 3) people (pixels, confidence 0 = missing) on a BGR frame, in place."""
    import cv2

    scale = max(1, round(max(frame.shape[:2]) / 400))
    for m, person in enumerate(people):
        colour = PERSON_COLOURS[m % len(PERSON_COLOURS)]
        seen = person[:, 2] > min_conf
        for a, b in edges:
            if seen[a] and seen[b]:
                cv2.line(frame, (int(person[a, 0]), int(person[a, 1])),
                         (int(person[b, 0]), int(person[b, 1])), colour, scale, cv2.LINE_AA)
        for j in np.flatnonzero(seen):
            cv2.circle(frame, (int(person[j, 0]), int(person[j, 1])), scale + 1, colour, -1, cv2.LINE_AA)
    return frame


def draw_label(frame: np.ndarray, text: str):
    import cv2

    scale = max(0.35, frame.shape[0] / 720)
    thick = max(1, round(scale * 2))
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    cv2.rectangle(frame, (0, 0), (w + 8, h + base + 8), (0, 0, 0), -1)
    cv2.putText(frame, text, (4, h + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick,
                cv2.LINE_AA)
    return frame


def write_video(video, out_path, keypoints: np.ndarray, label: str) -> Path:
    """Re-encode ``video`` (file or frame folder) as mp4v with the (M, T, 17, 3) skeletons and
    ``label`` drawn; the file appears at ``out_path`` only when complete."""
    import cv2


    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    info = videos.probe(video)
    edges = layouts.get("coco17").edges
    tmp = out_path.with_name(f".{out_path.stem}.tmp-{os.getpid()}{out_path.suffix or '.mp4'}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), info.fps or 25.0,
                             (info.width, info.height))
    try:
        if not writer.isOpened():
            raise SkelpipeError(f"{out_path}: cannot write an mp4v video here")
        for t, frame in enumerate(videos.frames(info)):
            if t < keypoints.shape[1]:
                draw_skeletons(frame, keypoints[:, t], edges)
            writer.write(draw_label(frame, label))
        writer.release()
        os.replace(tmp, out_path)
    finally:
        writer.release()
        tmp.unlink(missing_ok=True)
    return out_path
