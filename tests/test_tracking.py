"""Tracking: stable ids through crossings and missed frames, salient-track selection, zeros when lost."""

import numpy as np

from skelpipe.pose.tracking import Tracker, oks, track_people

# a standing person's 17 COCO joints around (0, 0), about 40 px wide and 120 px tall
SHAPE = np.array([[0, -60], [-4, -64], [4, -64], [-8, -62], [8, -62], [-16, -40], [16, -40], [-20, -15],
                  [20, -15], [-20, 8], [20, 8], [-10, 5], [10, 5], [-10, 30], [10, 30], [-10, 58], [10, 58]],
                 np.float32)


def person(cx, cy, conf=0.9, scale=1.0):
    pose = np.zeros((17, 3), np.float32)
    pose[:, :2] = SHAPE * scale + (cx, cy)
    pose[:, 2] = conf
    return pose


def crossing(T=40, missing=()):
    """Person A walks right, B walks left, crossing at frame T/2 at almost the same height."""
    frames, truth = [], []
    for t in range(T):
        a = person(100 + 8 * t, 200)
        b = person(100 + 8 * (T - 1) - 8 * t, 204, conf=0.8)
        dets = [(a, 0.9, "A"), (b, 0.8, "B")]
        if t % 2:  # the detector's order is not stable either
            dets = dets[::-1]
        dets = [d for d in dets if (t, d[2]) not in missing]
        frames.append((np.array([d[0] for d in dets]).reshape(-1, 17, 3), np.array([d[1] for d in dets])))
        truth.append([d[2] for d in dets])
    return frames, truth


def test_oks_identical_and_far():
    p = person(50, 50)
    assert oks(p, p) == 1.0
    assert oks(p, person(400, 50)) < 1e-6
    assert 0.3 < oks(p, person(53, 50)) < 1.0
    q = p.copy()
    q[:, 2] = 0
    assert oks(p, q) == 0.0


def test_two_people_crossing_keep_ids():
    frames, truth = crossing()
    tracker = Tracker()
    ids = [tracker.update(t, *f) for t, f in enumerate(frames)]
    assert len(tracker.tracks) == 2
    id_of = {}
    for t_ids, names in zip(ids, truth):
        for i, name in zip(t_ids, names):
            assert id_of.setdefault(name, i) == i, "a track switched people"
    assert id_of["A"] != id_of["B"]


def test_missing_frames_do_not_swap():
    # both people missed right at the crossing, then one of them alone for three frames
    missing = {(19, "A"), (19, "B"), (20, "A"), (20, "B"), (24, "B"), (25, "B"), (26, "B")}
    frames, truth = crossing(missing=missing)
    kp, tracks = track_people(frames, max_people=2)
    assert kp.shape == (2, 40, 17, 3)
    assert len(tracks) == 2
    # slot 0 is A (higher score x duration); A is always right-moving, B left-moving
    xs = kp[0, :, 0, 0]
    seen = kp[0, :, 0, 2] > 0
    assert seen.sum() == 38
    assert np.all(np.diff(xs[seen]) > 0)
    xs_b = kp[1, :, 0, 0]
    seen_b = kp[1, :, 0, 2] > 0
    assert seen_b.sum() == 35
    assert np.all(np.diff(xs_b[seen_b]) < 0)
    # a lost person is zeros with confidence 0, never the other person's joints
    for t in (19, 20):
        assert not kp[:, t].any()
    for t in (24, 25, 26):
        assert not kp[1, t].any() and kp[0, t, :, 2].min() > 0


def test_most_salient_tracks_are_kept():
    frames = []
    for t in range(30):
        dets = [person(100, 100), person(300, 100)]
        scores = [0.9, 0.5]
        if 10 <= t < 13:  # a brief, confident false positive elsewhere
            dets.append(person(500, 300))
            scores.append(0.95)
        frames.append((np.array(dets), np.array(scores)))
    kp, tracks = track_people(frames, max_people=2)
    assert [round(t.total_score, 3) for t in tracks] == [27.0, 15.0]
    assert np.allclose(kp[0, :, 0, :2], (100, 40)) and np.allclose(kp[1, :, 0, :2], (300, 40))
    kp1, _ = track_people(frames, max_people=3)
    assert kp1.shape[0] == 3 and (kp1[2, :, :, 2] > 0).sum(axis=1).tolist().count(17) == 3


def test_no_detections_gives_zeros():
    frames = [(np.zeros((0, 17, 3)), np.zeros(0))] * 5
    kp, tracks = track_people(frames, max_people=2)
    assert kp.shape == (2, 5, 17, 3) and not kp.any() and tracks == []


def test_oks_matrix_matches_pairs_and_candidates_are_capped():
    from skelpipe.pose.tracking import oks_matrix

    rng = np.random.default_rng(0)
    a = np.array([person(50 + 10 * i, 60) for i in range(3)])
    b = np.array([person(50 + 7 * i, 62) for i in range(4)])
    b[1, 5:, 2] = 0  # a partly seen detection
    m = oks_matrix(a, b)
    assert m.shape == (3, 4)
    assert np.allclose(m, [[oks(p, q) for q in b] for p in a])
    tracker = Tracker(max_candidates=2)
    dets = np.array([person(100 * i, 50) for i in range(5)])
    scores = rng.permutation(5).astype(np.float32)
    ids = tracker.update(0, dets, scores)
    assert sorted(i for i in ids if i >= 0) == [0, 1]
    assert [ids[i] >= 0 for i in range(5)] == [s >= 3 for s in scores]
