"""NTU RGB+D's Kinect v2 ``.skeleton`` files: the reader, and the bodies as arrays.

A ``.skeleton`` file is ASCII text with CRLF line ends (Shahroudy et al., CVPR 2016; the
dataset's ``read_skeleton_file.m``)::

    103                                    number of frames
    1                                      frame 1: number of bodies (0 when nobody is seen)
    72057594037931101 0 1 1 1 1 0 0.02 0.05 2
                                           body fields: bodyID clipedEdges handLeftConfidence
                                           handLeftState handRightConfidence handRightState
                                           isRestricted leanX leanY trackingState
    25                                     number of joints
    0.218 0.172 3.785 277.4 191.8 1036.2 519.2 -0.21 0.05 0.97 -0.11 2
                                           x y z depthX depthY colorX colorY orientationW
                                           orientationX orientationY orientationZ trackingState
    ... 24 more joint lines, more bodies, more frames
"""

import itertools
from pathlib import Path

import numpy as np

from skelpipe.core.errors import SkelpipeError

NUM_JOINTS = 25


BODY_FIELDS = ("clipedEdges", "handLeftConfidence", "handLeftState", "handRightConfidence",
               "handRightState", "isRestricted", "leanX", "leanY", "trackingState")


_FLOAT_BODY_FIELDS = ("leanX", "leanY")


def read_skeleton_file(path) -> dict:
    """Read one ``.skeleton`` file.

    Returns ``{"num_frames": int, "bodies": {body_id: body}}``, bodies in order of first
    appearance; each body holds ``frames`` (0-based frame indices where it appears),
    ``xyz`` (n, 25, 3), ``depth_xy`` (n, 25, 2), ``color_xy`` (n, 25, 2), ``orientation``
    (n, 25, 4: w x y z), ``tracking`` (n, 25) int and ``info`` (the per-frame body fields of
    ``BODY_FIELDS``, each an array of n). Body ids are kept as strings (they overflow int64
    parsers in some tools). Raises ``SkelpipeError`` naming the file and line on bad input.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("ascii")
    except OSError as e:
        raise SkelpipeError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise SkelpipeError(f"{path}: not an NTU .skeleton text file (binary data)") from None
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()

    def fail(line_index, problem):
        raise SkelpipeError(f"{path}: line {line_index + 1}: {problem}")

    def count(i, what):
        if i >= len(lines):
            raise SkelpipeError(f"{path}: truncated: ends before the {what} (line {i + 1})")
        try:
            value = int(lines[i])
        except ValueError:
            fail(i, f"expected the {what} (an integer), got {lines[i].strip()[:40]!r}")
        if value < 0:
            fail(i, f"negative {what} {value}")
        return value

    num_frames = count(0, "number of frames")
    pos = 1
    body_ids, frame_of, info_rows, joint_starts = [], [], [], []
    for frame in range(num_frames):
        num_bodies = count(pos, f"number of bodies of frame {frame + 1} of {num_frames}")
        pos += 1
        for _ in range(num_bodies):
            if pos >= len(lines):
                raise SkelpipeError(f"{path}: truncated: ends inside frame {frame + 1} of "
                                    f"{num_frames} (line {pos + 1})")
            fields = lines[pos].split()
            if len(fields) != 10:
                fail(pos, f"expected 10 body fields (bodyID ... trackingState), got {len(fields)}")
            if not fields[0].isdigit():
                fail(pos, f"bad body id {fields[0][:40]!r}")
            try:
                info_rows.append([float(v) if k in _FLOAT_BODY_FIELDS else int(v)
                                  for k, v in zip(BODY_FIELDS, fields[1:])])
            except ValueError:
                fail(pos, f"bad body field in {lines[pos].strip()[:80]!r}")
            joints = count(pos + 1, "number of joints")
            if joints != NUM_JOINTS:
                fail(pos + 1, f"wrong joint count {joints}, expected {NUM_JOINTS}")
            pos += 2
            if pos + NUM_JOINTS > len(lines):
                raise SkelpipeError(f"{path}: truncated: ends inside the joints of frame "
                                    f"{frame + 1} of {num_frames}")
            body_ids.append(fields[0])
            frame_of.append(frame)
            joint_starts.append(pos)
            pos += NUM_JOINTS
    if pos < len(lines):
        fail(pos, f"unexpected data after the last of {num_frames} frames")

    joints = _parse_joints(path, lines, joint_starts)
    info = np.array(info_rows, dtype=np.float64).reshape(len(info_rows), len(BODY_FIELDS))
    frame_of = np.asarray(frame_of, dtype=np.int64)
    body_ids = np.asarray(body_ids)
    bodies = {}
    for body_id in dict.fromkeys(body_ids.tolist()):
        rows = np.flatnonzero(body_ids == body_id)
        j = joints[rows]
        bodies[body_id] = {
            "frames": frame_of[rows],
            "xyz": j[:, :, 0:3],
            "depth_xy": j[:, :, 3:5],
            "color_xy": j[:, :, 5:7],
            "orientation": j[:, :, 7:11],
            "tracking": j[:, :, 11].astype(np.int64),
            "info": {k: info[rows, c] if k in _FLOAT_BODY_FIELDS else info[rows, c].astype(np.int64)
                     for c, k in enumerate(BODY_FIELDS)},
        }
    return {"num_frames": num_frames, "bodies": bodies}


def _parse_joints(path, lines, starts) -> np.ndarray:
    """The joint lines of every body occurrence, parsed in one numpy call: (n, 25, 12)."""
    if not starts:
        return np.zeros((0, NUM_JOINTS, 12))
    joint_lines = list(itertools.chain.from_iterable(lines[s:s + NUM_JOINTS] for s in starts))
    try:
        values = np.loadtxt(joint_lines, dtype=np.float64, comments=None, ndmin=2)
        if values.shape[1] != 12 or not np.isfinite(values).all():
            raise ValueError
    except ValueError:
        _locate_bad_joint_line(path, lines, starts)
        raise  # not reached: the line above raises
    return values.reshape(len(starts), NUM_JOINTS, 12)


def _locate_bad_joint_line(path, lines, starts):
    for s in starts:
        for i in range(s, s + NUM_JOINTS):
            fields = lines[i].split()
            if len(fields) != 12:
                raise SkelpipeError(f"{path}: line {i + 1}: expected 12 numbers for a joint "
                                    f"(x y z depthX depthY colorX colorY orientationWXYZ "
                                    f"trackingState), got {len(fields)}")
            for v in fields:
                try:
                    ok = np.isfinite(float(v))
                except ValueError:
                    ok = False
                if not ok:
                    raise SkelpipeError(f"{path}: line {i + 1}: bad number {v[:40]!r}")
    raise SkelpipeError(f"{path}: malformed joint data")


def motion_energy(xyz: np.ndarray) -> float:
    """A body's amount of motion: the variances of x, y and z over all its joints and frames,
    added up (the dataset authors' heuristic for the main actor; CTR-GCN's ``motion``)."""
    if len(xyz) == 0:
        return 0.0
    return float(np.var(np.asarray(xyz, dtype=np.float64).reshape(-1, 3), axis=0).sum())


def rank_bodies(skel: dict) -> list[str]:
    """Body ids, most motion first; ties keep the order of first appearance."""
    energy = {bid: motion_energy(body["xyz"]) for bid, body in skel["bodies"].items()}
    return sorted(skel["bodies"], key=lambda bid: -energy[bid])


def to_array(skel: dict, max_bodies: int = 2, num_frames: int | None = None):
    """3D joints as ``(max_bodies, T, 25, 3)`` float32 and the kept body ids.

    The ``max_bodies`` bodies with the most motion are kept (``rank_bodies``), most motion
    first; each body's joints go to its own frame indices, zeros elsewhere. ``T`` is
    ``num_frames`` (frames beyond it dropped, zero padding after the sequence) or the file's
    frame count.
    """
    return _stack(skel, "xyz", max_bodies, num_frames)


def to_color_array(skel: dict, max_bodies: int = 2, num_frames: int | None = None):
    """The joints' RGB-image positions (``colorX``, ``colorY`` in pixels of the 1920x1080
    video) as ``(max_bodies, T, 25, 2)`` float32, bodies in the same order as ``to_array``;
    also returns the kept body ids."""
    return _stack(skel, "color_xy", max_bodies, num_frames)


def _stack(skel, field, max_bodies, num_frames):
    T = skel["num_frames"] if num_frames is None else int(num_frames)
    ids = rank_bodies(skel)[:max_bodies]
    channels = 3 if field == "xyz" else 2
    out = np.zeros((max_bodies, T, NUM_JOINTS, channels), dtype=np.float32)
    for m, body_id in enumerate(ids):
        body = skel["bodies"][body_id]
        keep = body["frames"] < T
        out[m, body["frames"][keep]] = body[field][keep]
    return out, ids
