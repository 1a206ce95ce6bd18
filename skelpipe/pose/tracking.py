"""People tracking across frames: stable ids from pose similarity (OKS), Hungarian matching.

Each frame's detections (``(N, 17, 3)`` x, y, confidence, plus a score each) are matched to the
live tracks by object keypoint similarity (OKS, COCO's per-joint sigmas) between the detection
and the track's pose predicted to this frame (last pose moved by the track's recent velocity, so
that two people crossing keep their ids). The assignment maximises the summed OKS
(``scipy.optimize.linear_sum_assignment``); pairs below ``min_oks`` are not matched. A track
survives ``max_gap`` frames without a detection. In the end the ``max_people`` tracks with the
highest score x duration (the sum of their detections' scores) are kept; a frame where a kept
person was not detected is zeros with confidence 0.
"""

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment

#: COCO keypoint sigmas (OKS), in OpenPifPaf's / COCO's joint order.
COCO_SIGMAS = np.array([0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
                        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089], np.float32)


@dataclass
class Track:
    id: int
    frames: list = field(default_factory=list)  # frame indices
    poses: list = field(default_factory=list)  # (V, 3) each
    scores: list = field(default_factory=list)

    @property
    def total_score(self) -> float:
        return float(sum(self.scores))

    def predict(self, frame: int) -> np.ndarray:
        """The pose expected at ``frame``: the last pose moved by the recent mean velocity."""
        pose = self.poses[-1].copy()
        if len(self.poses) >= 2:
            a, b = self.poses[-2], self.poses[-1]
            both = (a[:, 2] > 0) & (b[:, 2] > 0)
            if both.any():
                dt = self.frames[-1] - self.frames[-2]
                velocity = (b[both, :2] - a[both, :2]).mean(axis=0) / dt
                pose[:, :2] += velocity * (frame - self.frames[-1])
        return pose


def oks_matrix(a: np.ndarray, b: np.ndarray, sigmas: np.ndarray = COCO_SIGMAS, min_conf: float = 0.0) -> np.ndarray:
    """OKS of every pose in ``a`` (n, V, 3) with every pose in ``b`` (m, V, 3) → (n, m).

    Over the joints visible (conf > min_conf) in both; the scale is the area of the bounding box
    of the ``a`` pose's visible joints (COCO's ``s**2``); 0 when fewer than two joints are shared.
    """
    a = np.asarray(a, np.float32).reshape(-1, len(sigmas), 3)
    b = np.asarray(b, np.float32).reshape(-1, len(sigmas), 3)
    va, vb = a[:, :, 2] > min_conf, b[:, :, 2] > min_conf
    both = va[:, None, :] & vb[None, :, :]
    lo = np.where(va[..., None], a[:, :, :2], np.inf).min(axis=1)
    hi = np.where(va[..., None], a[:, :, :2], -np.inf).max(axis=1)
    area = np.where(va.sum(axis=1) >= 2, np.prod(np.maximum(hi - lo, 0), axis=1), 1.0).clip(min=1.0)
    d2 = ((a[:, None, :, :2] - b[None, :, :, :2]) ** 2).sum(axis=-1)
    k2 = (2 * sigmas) ** 2
    e = np.exp(-d2 / (2 * area[:, None, None] * k2 + np.finfo(np.float32).eps))
    n_both = both.sum(axis=-1)
    out = (e * both).sum(axis=-1) / np.maximum(n_both, 1)
    out[(n_both < 2) | (va.sum(axis=1) < 2)[:, None]] = 0.0
    return out


def oks(a: np.ndarray, b: np.ndarray, sigmas: np.ndarray = COCO_SIGMAS, min_conf: float = 0.0) -> float:
    """OKS between two poses (V, 3); see ``oks_matrix``."""
    return float(oks_matrix(a[None], b[None], sigmas, min_conf)[0, 0])


class Tracker:
    """Assigns detections frame by frame to tracks; see the module docstring."""

    def __init__(self, min_oks: float = 0.1, max_gap: int = 30, sigmas: np.ndarray = COCO_SIGMAS,
                 max_candidates: int = 20):
        self.min_oks, self.max_gap, self.sigmas = min_oks, max_gap, sigmas
        self.max_candidates = max_candidates  # per frame, the highest-scoring detections are tracked
        self.tracks: list[Track] = []
        self._live: list[Track] = []

    def update(self, frame: int, poses: np.ndarray, scores: np.ndarray) -> list[int]:
        """Add one frame's detections ``poses`` (N, V, 3) with ``scores`` (N,); return their track ids
        (-1 for detections beyond the ``max_candidates`` best of the frame)."""

        poses = np.asarray(poses, np.float32).reshape(-1, len(self.sigmas), 3)
        scores = np.asarray(scores, np.float32).reshape(-1)
        order = np.argsort(-scores, kind="stable")
        dropped = order[self.max_candidates:]
        poses, scores = poses[order[:self.max_candidates]], scores[order[:self.max_candidates]]
        self._live = [t for t in self._live if frame - t.frames[-1] <= self.max_gap]
        ids = [-1] * len(poses)
        if self._live and len(poses):
            sim = oks_matrix(np.array([t.predict(frame) for t in self._live]), poses, self.sigmas)
            rows, cols = linear_sum_assignment(sim, maximize=True)
            for r, c in zip(rows, cols):
                if sim[r, c] >= self.min_oks:
                    self._append(self._live[r], frame, poses[c], scores[c])
                    ids[c] = self._live[r].id
        for c in range(len(poses)):
            if ids[c] == -1:
                track = Track(len(self.tracks))
                self.tracks.append(track)
                self._live.append(track)
                self._append(track, frame, poses[c], scores[c])
                ids[c] = track.id
        # ids in the caller's order; -1 for detections beyond max_candidates
        out = [-1] * (len(ids) + len(dropped))
        for c, i in enumerate(order[:self.max_candidates]):
            out[i] = ids[c]
        return out

    @staticmethod
    def _append(track: Track, frame: int, pose: np.ndarray, score: float):
        track.frames.append(frame)
        track.poses.append(pose)
        track.scores.append(float(score))

    def result(self, num_frames: int, max_people: int) -> tuple[np.ndarray, list[Track]]:
        """(M, T, V, 3) float32 of the ``max_people`` most salient tracks (score x duration), and those tracks."""
        kept = sorted(self.tracks, key=lambda t: t.total_score, reverse=True)[:max_people]
        out = np.zeros((max_people, num_frames, len(self.sigmas), 3), np.float32)
        for m, track in enumerate(kept):
            for f, pose in zip(track.frames, track.poses):
                out[m, f] = pose
        return out, kept


def track_people(frames: list[tuple[np.ndarray, np.ndarray]], max_people: int = 2,
                 **tracker_kwargs) -> tuple[np.ndarray, list[Track]]:
    """Track ``frames`` (one (poses (N, V, 3), scores (N,)) pair per frame) → ((M, T, V, 3), tracks)."""
    tracker = Tracker(**tracker_kwargs)
    for t, (poses, scores) in enumerate(frames):
        tracker.update(t, poses, scores)
    return tracker.result(len(frames), max_people)
