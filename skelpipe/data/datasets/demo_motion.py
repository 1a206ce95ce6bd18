"""The demo's bodies and motions: a rigid kinematic tree in the ``ntu25`` joint order, random
subjects (size, proportions, rest posture, tempo), and one function per action that fills in a
person's joint-angle curves (``SINGLE``, and ``PAIR`` for two-person actions). The demo dataset
(``demo.py``) draws instances from these.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from skelpipe.skeleton import layouts

# The skeleton: joint parents (ntu25, 0-based) and rest offsets in the parent's frame.
# Body frame: x = the person's left, y = up, z = the person's back (they face -z).

FPS = 30  # frames per second of the generated motions
_J = {name: i for i, name in enumerate(layouts.get("ntu25").joints)}
_PARENT = {
    "spine_mid": "spine_base", "spine_shoulder": "spine_mid", "neck": "spine_shoulder",
    "head": "neck",
    "left_shoulder": "spine_shoulder", "left_elbow": "left_shoulder", "left_wrist": "left_elbow",
    "left_hand": "left_wrist", "left_hand_tip": "left_hand", "left_thumb": "left_hand",
    "right_shoulder": "spine_shoulder", "right_elbow": "right_shoulder",
    "right_wrist": "right_elbow", "right_hand": "right_wrist", "right_hand_tip": "right_hand",
    "right_thumb": "right_hand",
    "left_hip": "spine_base", "left_knee": "left_hip", "left_ankle": "left_knee",
    "left_foot": "left_ankle",
    "right_hip": "spine_base", "right_knee": "right_hip", "right_ankle": "right_knee",
    "right_foot": "right_ankle",
}
# Parents before children, so forward kinematics is one pass.
_ORDER = ["spine_base", "spine_mid", "spine_shoulder", "neck", "head",
          "left_shoulder", "left_elbow", "left_wrist", "left_hand", "left_hand_tip", "left_thumb",
          "right_shoulder", "right_elbow", "right_wrist", "right_hand", "right_hand_tip",
          "right_thumb",
          "left_hip", "left_knee", "left_ankle", "left_foot",
          "right_hip", "right_knee", "right_ankle", "right_foot"]
# Joints whose rotation moves their children. Angles are (rx, ry, rz) in degrees, R = Rz Rx Ry.
# Arms/legs hang along -y: +rx swings them forward, +rz away from the body (abduction), ry
# twists them about their own axis. For right-side joints ry and rz are mirrored, so the same
# numbers mean the same movement on either side. Spine/neck: -rx bends forward.
_ROTATING = ["spine_base", "spine_mid", "spine_shoulder", "neck",
             "left_shoulder", "left_elbow", "left_wrist", "right_shoulder", "right_elbow",
             "right_wrist", "left_hip", "left_knee", "left_ankle", "right_hip", "right_knee",
             "right_ankle"]


def _rest_offsets(rng: np.random.Generator, scale: float) -> dict[str, np.ndarray]:
    """Bone vectors of one body (metres), overall ``scale`` and ±5 % per-bone proportions."""
    def s():
        return scale * rng.uniform(0.95, 1.05)

    shoulder_w, hip_w = s() * 0.17, s() * 0.085
    upper_arm, forearm, thigh, shin = s() * 0.28, s() * 0.25, s() * 0.42, s() * 0.40
    off = {
        "spine_mid": (0, s() * 0.24, 0), "spine_shoulder": (0, s() * 0.24, 0),
        "neck": (0, s() * 0.07, 0), "head": (0, s() * 0.14, -0.01),
        "left_shoulder": (shoulder_w, -0.03 * scale, 0), "left_elbow": (0, -upper_arm, 0),
        "left_wrist": (0, -forearm, 0), "left_hand": (0, -0.07 * scale, 0),
        "left_hand_tip": (0, -0.08 * scale, 0), "left_thumb": (-0.01, -0.02, -0.04 * scale),
        "left_hip": (hip_w, -0.06 * scale, 0), "left_knee": (0, -thigh, 0),
        "left_ankle": (0, -shin, 0), "left_foot": (0, -0.06 * scale, -0.11 * scale),
    }
    for name in list(off):
        if name.startswith("left_"):
            x, y, z = off[name]
            off["right_" + name[5:]] = (-x, y, z)
    return {k: np.asarray(v, dtype=np.float64) for k, v in off.items()}


def _rot(angles_deg: np.ndarray, mirror: bool) -> np.ndarray:
    """(T, 3) angles (rx, ry, rz) in degrees → (T, 3, 3) rotations Rz @ Rx @ Ry."""
    a = np.radians(angles_deg)
    rx, ry, rz = a[:, 0], a[:, 1], a[:, 2]
    if mirror:
        ry, rz = -ry, -rz
    c, s = np.cos, np.sin
    zero, one = np.zeros_like(rx), np.ones_like(rx)
    Rx = np.stack([one, zero, zero, zero, c(rx), -s(rx), zero, s(rx), c(rx)], -1).reshape(-1, 3, 3)
    Ry = np.stack([c(ry), zero, s(ry), zero, one, zero, -s(ry), zero, c(ry)], -1).reshape(-1, 3, 3)
    Rz = np.stack([c(rz), -s(rz), zero, s(rz), c(rz), zero, zero, zero, one], -1).reshape(-1, 3, 3)
    return Rz @ Rx @ Ry


def yaw(deg: float) -> np.ndarray:
    a = np.radians(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def forward_kinematics(offsets, angles, root_shift, lift) -> np.ndarray:
    """Joint positions (T, 25, 3) in the body frame, feet on the floor y = 0 (+ ``lift``)."""
    T = len(root_shift)
    rot = {"spine_base": _rot(angles["spine_base"], False)}
    pos = {"spine_base": np.zeros((T, 3))}
    for name in _ORDER[1:]:
        parent = _PARENT[name]
        pos[name] = pos[parent] + rot[parent] @ offsets[name]
        own = _rot(angles[name], name.startswith("right_")) if name in angles else None
        rot[name] = rot[parent] @ own if own is not None else rot[parent]
    xyz = np.zeros((T, 25, 3))
    for name, p in pos.items():
        xyz[:, _J[name]] = p
    feet = [_J[n] for n in ("left_ankle", "left_foot", "right_ankle", "right_foot")]
    ground = xyz[:, feet, 1].min(axis=1) - 0.03            # ankle/foot joints sit above the sole
    xyz[..., 1] -= ground[:, None]
    xyz[..., 1] += lift[:, None]
    xyz += root_shift[:, None, :]
    return xyz


# ---------------------------------------------------------------------------------------------
# Motion curves. s in [0, 1) is the normalised time of the instance, t the time in seconds.

def _smooth(x):
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


def _pulse(s, start, rise, hold, fall):
    """0 → 1 over ``rise``, stays 1 for ``hold``, back to 0 over ``fall`` (all in units of s)."""
    return _smooth((s - start) / rise) * (1 - _smooth((s - start - rise - hold) / fall))


@dataclass
class Person:
    """One body's parameters and its angle curves for one instance."""
    offsets: dict
    rest: dict            # rest posture angles (degrees)
    T: int
    angles: dict = None
    shift: np.ndarray = None    # (T, 3) root translation in the body frame
    lift: np.ndarray = None     # (T,) jump height

    def __post_init__(self):
        self.angles = {k: np.tile(self.rest.get(k, np.zeros(3)), (self.T, 1)).astype(float)
                       for k in _ROTATING}
        self.shift = np.zeros((self.T, 3))
        self.lift = np.zeros(self.T)

    def add(self, joint, rx=0.0, ry=0.0, rz=0.0):
        self.angles[joint] += np.stack(np.broadcast_arrays(rx, ry, rz, np.zeros(self.T))[:3], -1)

    def arm(self, side, env, flex=0.0, abd=0.0, twist=0.0, elbow=0.0):
        """Blend the arm from its rest posture towards a target (``env`` in [0, 1])."""
        sh, el = f"{side}_shoulder", f"{side}_elbow"
        rest_sh, rest_el = self.angles[sh].copy(), self.angles[el].copy()
        target_sh = np.stack(np.broadcast_arrays(flex, twist, abd, np.zeros(self.T))[:3], -1)
        target_el = np.stack(np.broadcast_arrays(elbow, 0.0, 0.0, np.zeros(self.T))[:3], -1)
        e = np.asarray(env)[:, None]
        self.angles[sh] = rest_sh * (1 - e) + target_sh * e
        self.angles[el] = rest_el * (1 - e) + target_el * e


def random_body(rng: np.random.Generator) -> tuple[dict, dict, dict]:
    """A random subject: bone offsets, rest posture, and style (tempo, amplitude)."""
    scale = rng.uniform(0.86, 1.10)
    offsets = _rest_offsets(rng, scale)
    arm_abd, elbow, stance = rng.uniform(5, 14), rng.uniform(5, 20), rng.uniform(1, 6)
    rest = {
        "left_shoulder": np.array([rng.uniform(-5, 5), 0, arm_abd]),
        "right_shoulder": np.array([rng.uniform(-5, 5), 0, arm_abd + rng.uniform(-3, 3)]),
        "left_elbow": np.array([elbow, 0, 0]), "right_elbow": np.array([elbow, 0, 0]),
        "left_hip": np.array([0, 0, stance]), "right_hip": np.array([0, 0, stance]),
        "neck": np.array([rng.uniform(-8, 5), 0, rng.uniform(-3, 3)]),
        "spine_mid": np.array([rng.uniform(-4, 3), 0, 0]),
    }
    style = {"tempo": rng.uniform(0.8, 1.25), "amplitude": rng.uniform(0.85, 1.15)}
    return offsets, rest, style


def idle(p: Person, rng, t):
    """Small sway, breathing and arm swing that every person does while acting."""
    f, ph = rng.uniform(0.2, 0.5), rng.uniform(0, 2 * np.pi)
    p.shift[:, 0] += rng.uniform(0.005, 0.02) * np.sin(2 * np.pi * f * t + ph)
    p.add("spine_mid", rx=1.5 * np.sin(2 * np.pi * 0.3 * t + ph))
    for side in ("left", "right"):
        p.add(f"{side}_shoulder", rx=rng.uniform(1, 4) * np.sin(2 * np.pi * f * t + rng.uniform(0, 6)))


def nuisance(p: Person, rng, s, busy: tuple[str, ...]):
    """Random gestures of the parts an action does not use: head turns and nods, a hand to
    the hip or the face, a weight shift or a small step. They make instances of one class
    differ, and no class owns them."""
    def when():
        start = rng.uniform(-0.1, 0.8)
        return _pulse(s, start, rng.uniform(0.08, 0.2), rng.uniform(0.0, 0.3), rng.uniform(0.08, 0.2))

    if rng.random() < 0.5:
        p.add("neck", rx=rng.normal(0, 10) * when(), ry=rng.normal(0, 25) * when())
    for side in ("left", "right"):
        if f"{side}_arm" not in busy and rng.random() < 0.35:
            env = when()
            p.add(f"{side}_shoulder", rx=rng.uniform(10, 50) * env, rz=rng.uniform(0, 30) * env,
                  ry=rng.uniform(-30, 30) * env)
            p.add(f"{side}_elbow", rx=rng.uniform(20, 100) * env)
    if not {"left_leg", "right_leg"} & set(busy) and rng.random() < 0.35:
        side = "left" if rng.random() < 0.5 else "right"
        env = when()
        if rng.random() < 0.5:                     # a small step / knee bend
            p.add(f"{side}_hip", rx=rng.uniform(10, 30) * env)
            p.add(f"{side}_knee", rx=-rng.uniform(20, 55) * env)
        else:                                      # a weight shift to one side
            p.shift[:, 0] += (1 if side == "left" else -1) * rng.uniform(0.02, 0.06) * env
            p.add(f"{side}_hip", rz=rng.uniform(3, 8) * env)


def _timing(rng, lo=0.0, hi=0.3, rise=(0.15, 0.3), hold=(0.2, 0.5), fall=(0.15, 0.3)):
    """A random (start, rise, hold, fall) in units of the instance's normalised time."""
    return (rng.uniform(lo, hi), rng.uniform(*rise), rng.uniform(*hold), rng.uniform(*fall))


# One function per action: fills in the curves of the actor (and the partner when given).
# ``a`` scales amplitudes; ``v(x, sd)`` perturbs a target angle for this instance.

def _wave(p, rng, s, t, a, v, side):
    env = _pulse(s, *_timing(rng, hold=(0.3, 0.6)))
    f, ph = rng.uniform(1.5, 2.8), rng.uniform(0, 2 * np.pi)
    p.arm(side, env, flex=v(12, 12), abd=v(70 + 20 * a, 10), twist=v(-90, 12),
          elbow=v(95, 10) + v(28, 8) * a * np.sin(2 * np.pi * f * t + ph))
    p.add(f"{side}_wrist", rz=-15 * env * np.sin(2 * np.pi * f * t + ph))


def _drink(p, rng, s, t, a, v):
    start, rise, hold, fall = _timing(rng, rise=(0.2, 0.3), hold=(0.2, 0.45))
    env = _pulse(s, start, rise, hold, fall)
    sip = _pulse(s, start + rise, 0.08, hold * 0.7, 0.1)
    p.arm("right", env, flex=v(45 + 10 * a, 6), abd=v(-10, 6), twist=v(40, 8),
          elbow=v(125, 6) + 15 * sip)
    p.add("neck", rx=v(18, 6) * a * sip)                # head tilts back to drink
    p.add("right_wrist", rx=-20 * env)


def _touch_head(p, rng, s, t, a, v):
    start, rise, hold, fall = _timing(rng, rise=(0.2, 0.3), hold=(0.2, 0.45))
    env = _pulse(s, start, rise, hold, fall)
    rub = np.sin(2 * np.pi * rng.uniform(2, 3) * t) * _pulse(s, start + rise, 0.05, hold, 0.05)
    p.arm("right", env, flex=v(45 + 10 * a, 8), abd=v(70, 12) + 6 * rub, twist=v(-10, 10),
          elbow=v(135, 6))
    p.add("neck", rx=-v(12, 5) * a * env)               # head bows a little towards the hand


def _clap(p, rng, s, t, a, v):
    env = _pulse(s, *_timing(rng, hold=(0.35, 0.65)))
    f, ph = rng.uniform(1.6, 2.8), rng.uniform(0, 2 * np.pi)
    open_ = 0.5 + 0.5 * np.sin(2 * np.pi * f * t + ph)
    flex, elbow, twist = v(40 + 10 * a, 10), v(65, 12), v(55, 8)
    for side in ("left", "right"):
        p.arm(side, env, flex=flex, abd=-18 + v(26, 6) * a * open_, twist=twist, elbow=elbow)


def _kick(p, rng, s, t, a, v, side):
    kicks = 1 if rng.random() < 0.5 else 2
    starts = np.linspace(0.05, 0.55, kicks) + rng.uniform(-0.05, 0.15)
    dur = rng.uniform(0.3, 0.45) if kicks == 1 else rng.uniform(0.2, 0.28)
    hip, knee = np.zeros_like(s), np.zeros_like(s)
    for st in starts:
        up = _pulse(s, st, dur * 0.35, dur * 0.15, dur * 0.4)
        snap = _pulse(s, st + dur * 0.25, dur * 0.12, dur * 0.1, dur * 0.15)
        hip += v(45 + 25 * a, 10) * up
        knee += v(70, 12) * up * (1 - snap) + 8 * up
    p.add(f"{side}_hip", rx=hip, rz=v(0, 8) * hip / 70)
    p.add(f"{side}_knee", rx=-knee)
    p.add(f"{side}_ankle", rx=0.3 * knee)
    other = "left" if side == "right" else "right"
    p.add(f"{other}_shoulder", rz=v(8, 5) * hip / 70)
    p.add(f"{side}_shoulder", rz=v(8, 5) * hip / 70)
    p.add("spine_base", rx=v(6, 3) * hip / 70)           # lean back a little


def _squat(p, rng, s, t, a, v):
    reps = 1 if rng.random() < 0.6 else 2
    env = np.zeros_like(s)
    for st in np.linspace(0.05, 0.5, reps) + rng.uniform(-0.05, 0.1):
        d = rng.uniform(0.6, 0.8) / reps
        env = np.maximum(env, _pulse(s, st, d * 0.35, d * 0.2, d * 0.35))
    depth = v(40 + 20 * a, 8) * env                      # thigh angle from vertical
    lean = v(0.45, 0.1) * depth
    p.add("spine_base", rx=-lean)
    for side in ("left", "right"):
        p.add(f"{side}_hip", rx=depth + lean)
        p.add(f"{side}_knee", rx=-2 * depth)
        p.add(f"{side}_ankle", rx=depth)
    p.add("neck", rx=0.4 * lean)
    arms = v(50, 25) * a * env                         # arms forward for balance, or not
    for side in ("left", "right"):
        p.add(f"{side}_shoulder", rx=arms + lean)


def _jump(p, rng, s, t, a, v):
    T = len(s)
    jumps = 1 if T < 60 or rng.random() < 0.5 else 2
    crouch, arms = np.zeros(T), np.zeros(T)
    swing = v(110, 30) * a
    for k in range(jumps):
        t0 = (rng.uniform(0.12, 0.3) + 0.45 * k) * T / FPS     # take-off time, seconds
        air = rng.uniform(0.25, 0.42) * a ** 0.5
        prep = np.exp(-0.5 * ((t - t0 + 0.15) / 0.1) ** 2)
        land = np.exp(-0.5 * ((t - t0 - air - 0.1) / 0.1) ** 2)
        crouch += v(35, 8) * prep + v(30, 8) * land
        flying = (t > t0) & (t < t0 + air)
        p.lift[flying] += (9.81 / 2) * (t[flying] - t0) * (t0 + air - t[flying])
        arms += -30 * prep + swing * np.exp(-0.5 * ((t - t0 - air / 2) / (air / 2)) ** 2)
    lean = 0.5 * crouch
    p.add("spine_base", rx=-lean)
    for side in ("left", "right"):
        p.add(f"{side}_hip", rx=crouch + lean)
        p.add(f"{side}_knee", rx=-2 * crouch)
        p.add(f"{side}_ankle", rx=crouch - 10 * (p.lift > 0))
        p.add(f"{side}_shoulder", rx=arms + lean)


def _bow(p, rng, s, t, a, v):
    env = _pulse(s, *_timing(rng, rise=(0.2, 0.3), hold=(0.05, 0.3), fall=(0.2, 0.3)))
    bend = v(40 + 25 * a, 8) * env
    p.add("spine_base", rx=-0.6 * bend)
    p.add("spine_mid", rx=-0.3 * bend)
    p.add("neck", rx=-v(0.2, 0.1) * bend)
    hang = v(0.8, 0.15)
    for side in ("left", "right"):
        p.add(f"{side}_hip", rx=0.6 * bend)
        p.add(f"{side}_shoulder", rx=hang * bend)      # arms keep (roughly) hanging


def _handshake(p, q, rng, s, t, a, v):
    start, rise, hold, fall = _timing(rng, hold=(0.3, 0.5))
    f = rng.uniform(2.0, 3.0)
    for person, lag in ((p, 0.0), (q, rng.uniform(-0.05, 0.05))):
        env = _pulse(s, start + lag, rise, hold - lag, fall)
        shake = 12 * np.sin(2 * np.pi * f * t) * _pulse(s, start + rise, 0.05, hold - 0.1, 0.05)
        person.arm("right", env, flex=v(48 + 8 * a, 6) + shake, abd=v(-12, 5), twist=v(20, 8),
                   elbow=v(35, 10))
        person.add("spine_base", rx=-v(8, 4) * env)


def _push(p, q, rng, s, t, a, v):
    start = rng.uniform(0.0, 0.3)
    env = _pulse(s, start, 0.25, 0.1, 0.3)
    extend = _pulse(s, start + 0.15, 0.08, 0.12, 0.25)
    flex, bent = v(75 + 10 * a, 8), v(90, 12)
    for side in ("left", "right"):
        p.arm(side, env, flex=flex, abd=v(5, 4), twist=v(25, 8), elbow=bent - (bent - 10) * extend)
    p.add("spine_base", rx=-v(12, 4) * extend)
    hit = _smooth((s - start - 0.2) / 0.15)
    q.shift[:, 2] += (0.15 + 0.15 * a) * hit             # the partner is pushed backwards
    jolt = _pulse(s, start + 0.2, 0.06, 0.05, 0.2)
    step = "right" if rng.random() < 0.5 else "left"
    q.add("spine_base", rx=v(15, 5) * jolt)
    q.add(f"{step}_hip", rx=-v(25, 8) * jolt)
    q.add(f"{step}_knee", rx=-v(30, 8) * jolt)
    for side in ("left", "right"):
        q.add(f"{side}_shoulder", rx=v(30, 10) * jolt, rz=v(15, 5) * jolt)


SINGLE = {
    "wave_right": lambda *args: _wave(*args, "right"),
    "wave_left": lambda *args: _wave(*args, "left"),
    "drink": _drink, "touch_head": _touch_head, "clap": _clap,
    "kick_right": lambda *args: _kick(*args, "right"),
    "kick_left": lambda *args: _kick(*args, "left"),
    "squat": _squat, "jump": _jump, "bow": _bow,
}
PAIR = {"handshake": _handshake, "push": _push}
