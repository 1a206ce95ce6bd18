"""The synthetic demo dataset: 12 actions of 3D Kinect-v2-like skeletons, made by numpy.

Every instance is generated deterministically from ``(seed, subject, rep, label)``: nothing is
downloaded and no file is shipped. A skeleton is a rigid kinematic tree in the ``ntu25`` joint
order; each action is a few joint-angle curves, so bone lengths stay constant over time. The
actions are chosen so that the body part that tells them apart differs (``ACTION_PARTS``):
arm-only, leg-only, whole-body and two-person actions, with pairs that differ mainly in one
part (wave left / wave right, kick left / kick right, drink / touch head).

Subjects differ in body size and proportions, tempo, amplitude and rest posture; every
repetition also draws its own speed, start time, phase, view angle, camera distance and
height, and a small per-frame tremor of the joint angles.

Coordinates are metres in a Kinect-like camera frame: x to the image's right, y up, z the
depth (about 2.5-4 m). ``project`` maps them to the pixels of a 1920x1080 pinhole camera with
the Kinect v2 colour camera's focal length.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skelpipe.core.fields import MAX_SEED
from skelpipe.data.datasets import demo_motion as motion
from skelpipe.data.datasets.base import Dataset, register
from skelpipe.skeleton.geometry import project, to_camera
from skelpipe.skeleton.store import PoseWriter

ACTIONS = [
    "wave_right", "wave_left", "drink", "touch_head", "clap",     # arms
    "kick_right", "kick_left",                                    # legs
    "squat", "jump", "bow",                                       # whole body
    "handshake", "push",                                          # two persons
]

# The parts each action is recognised by: ground truth to compare a learned part matrix with.
ACTION_PARTS = {
    "wave_right": ("right_arm",), "wave_left": ("left_arm",),
    "drink": ("right_arm", "head"), "touch_head": ("right_arm", "head"),
    "clap": ("left_arm", "right_arm"),
    "kick_right": ("right_leg",), "kick_left": ("left_leg",),
    "squat": ("head", "left_leg", "right_leg"), "jump": ("head", "left_arm", "right_arm",
                                                          "left_leg", "right_leg"),
    "bow": ("head",),
    "handshake": ("right_arm",), "push": ("left_arm", "right_arm", "head"),
}
TWO_PERSON = ("handshake", "push")

FPS = motion.FPS
IMAGE_SIZE = (1920, 1080)
FOCAL = 1081.37                      # Kinect v2 colour camera, pixels
MIN_FRAMES, MAX_FRAMES = 40, 80


@dataclass(frozen=True)
class Instance:
    id: str
    label: int
    subject: int
    camera: dict          # yaw, pitch (deg, + looks down), distance, height, lateral (m),
    #                       focal, cx, cy (px), W, H
    xyz: np.ndarray       # float32 (M=2, T, 25, 3), metres, camera frame


assert set(motion.SINGLE) | set(motion.PAIR) == set(ACTIONS)


# ---------------------------------------------------------------------------------------------
# Camera

def _camera(rng: np.random.Generator) -> dict:
    """A random view: the scene's yaw, distance, lateral offset and camera height (``pitch``
    here is only a jitter; ``_frame`` aims the camera and may step it back)."""
    W, H = IMAGE_SIZE
    return {"yaw": float(rng.uniform(-45, 45)), "pitch": float(rng.uniform(-3, 3)),
            "distance": float(rng.uniform(2.8, 3.8)), "height": float(rng.uniform(0.85, 1.3)),
            "lateral": float(rng.uniform(-0.3, 0.3)),
            "focal": FOCAL, "cx": (W - 1) / 2, "cy": (H - 1) / 2, "W": W, "H": H}


def _frame(scene: np.ndarray, cam: dict, margin: float = 30.0) -> np.ndarray:
    """Aim the camera at ``scene`` (world points (..., 3) around x = z = 0) like a camera
    operator: pitch centres the action vertically (plus the drawn jitter), and the camera steps
    back until every joint is ``margin`` pixels inside the image. Returns camera-frame points
    and updates ``cam``'s pitch and distance."""
    jitter = cam["pitch"]
    for _ in range(40):
        world = scene + np.array([cam["lateral"], 0.0, cam["distance"]])
        up = np.degrees(np.arctan2(world[..., 1] - cam["height"], world[..., 2]))
        cam["pitch"] = float(-(up.max() + up.min()) / 2 + jitter)
        xyz = to_camera(world, cam)
        uv = project(xyz, cam).reshape(-1, 2)
        if (uv.min(axis=0) > margin).all() and (uv.max(axis=0) < np.array(IMAGE_SIZE) - margin).all():
            return xyz
        cam["distance"] = float(cam["distance"] * 1.05)
    raise RuntimeError("demo scene does not fit the image")       # not reached: bodies are ~2 m


# ---------------------------------------------------------------------------------------------

def _instance(seed: int, subject: int, rep: int, label: int) -> Instance:
    name = ACTIONS[label]
    subject_rng = np.random.default_rng([seed, subject, 0, 0])
    offsets, rest, style = motion.random_body(subject_rng)
    rng = np.random.default_rng([seed, subject, rep + 1, label + 1])
    speed = style["tempo"] * rng.uniform(0.9, 1.1)
    T = int(np.clip(round(60 / speed + rng.integers(-4, 5)), MIN_FRAMES, MAX_FRAMES))
    amplitude = style["amplitude"] * rng.uniform(0.9, 1.1)
    s = (np.arange(T) + rng.uniform(0, 1)) / T
    t = np.arange(T) / FPS
    cam = _camera(rng)

    def vary(x, sd):
        return x + rng.normal(0, sd)

    actor = motion.Person(offsets, rest, T)
    people = [actor] if name in motion.SINGLE else [actor, motion.Person(*motion.random_body(rng)[:2], T)]
    for person in people:
        motion.idle(person, rng, t)
    if name in motion.SINGLE:
        motion.SINGLE[name](actor, rng, s, t, amplitude, vary)
    else:
        motion.PAIR[name](actor, people[1], rng, s, t, amplitude, vary)
    for person in people:
        motion.nuisance(person, rng, s, ACTION_PARTS[name])

    gap = rng.uniform(0.85, 1.0)                 # pelvis-to-pelvis distance of a pair
    scene = []
    for m, person in enumerate(people):
        for joint in person.angles:              # tremor: small per-frame angle noise
            person.angles[joint] += rng.normal(0, 0.6, (T, 3))
        body = motion.forward_kinematics(person.offsets, person.angles, person.shift, person.lift)
        body += rng.normal(0, 0.002, (T, 1, 3))
        if len(people) == 1:
            facing, place = cam["yaw"], np.zeros(3)
        else:                                    # the pair faces each other along world x
            facing = cam["yaw"] + (-90 if m == 0 else 90)
            place = motion.yaw(cam["yaw"]) @ np.array([(-gap / 2) if m == 0 else gap / 2, 0, 0])
        scene.append(body @ motion.yaw(facing).T + place)
    xyz = np.zeros((2, T, 25, 3))
    xyz[:len(people)] = _frame(np.stack(scene), cam)
    return Instance(id=f"demo_s{subject:02d}_r{rep}_a{label:02d}", label=label, subject=subject,
                    camera=cam, xyz=xyz.astype(np.float32))


def generate(num_subjects: int = 16, reps_per_subject: int = 4, seed: int = 0,
             test_reps: int | None = None) -> list[Instance]:
    """All instances: every subject performs every action ``reps_per_subject`` times, a test
    subject (``split_of``) ``test_reps`` times when given (synthetic test data are cheap, and a
    test set of ~1,000 instances brings one run's standard error down to ~1.4 points).

    Instances depend only on (seed, subject, rep, label), so adding subjects or repetitions
    leaves the existing ones unchanged.
    """
    def reps(subject):
        return test_reps if test_reps is not None and _is_test(subject) else reps_per_subject

    return [_instance(seed, subject, rep, label)
            for subject in range(num_subjects)
            for label in range(len(ACTIONS))
            for rep in range(reps(subject))]


def _is_test(subject: int) -> bool:
    return subject % 3 == 2


def split_of(instance: Instance) -> str:
    """Cross-subject split: every third subject (2, 5, 8, ...) is a test subject."""
    return "test" if _is_test(instance.subject) else "train"


def write_stores(out_dir, **generate_kwargs) -> Path:
    """Write the HQ demo skeletons (ntu25, x,y,z) to ``out_dir/demo_hq.h5``; returns its path."""

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "demo_hq.h5"
    instances = generate(**generate_kwargs)
    attrs = {"dataset": "demo", "source": "synthetic:skelpipe.datasets.demo",
             "channels": "x,y,z", "class_names": list(ACTIONS), "num_classes": len(ACTIONS),
             "fps": FPS, "image_size": list(IMAGE_SIZE),
             "generate": dict(generate_kwargs)}
    with PoseWriter(path, layout="ntu25", attrs=attrs) as writer:
        for inst in instances:
            writer.add(inst.id, inst.xyz, label=inst.label, label_name=ACTIONS[inst.label],
                       split=split_of(inst), subject=inst.subject,
                       camera=inst.camera, fps=FPS, num_frames=inst.xyz.shape[1],
                       image_size=list(IMAGE_SIZE), channels="x,y,z")
    return path


@register
class Demo(Dataset):
    """The synthetic demo: generated, not read (``data.subjects``, ``reps``, ``test_reps``, ``seed``)."""

    name = "demo"
    report_columns = (("xsub", "top1", "Top1"), ("xsub", "top5", "Top5"))
    expected_parts = ACTION_PARTS
    options = {"subjects": 16, "reps": 4, "test_reps": 0, "seed": 0}
    limits = {"subjects": (None, 3, 1000), "reps": (None, 1, 100), "test_reps": (None, 0, 100),
              "seed": (None, 0, MAX_SEED)}

    def generate(self, options, out_dir):
        return write_stores(out_dir, num_subjects=options.get("subjects", 16),
                            reps_per_subject=options.get("reps", 4), seed=options.get("seed", 0),
                            test_reps=options.get("test_reps") or None)
