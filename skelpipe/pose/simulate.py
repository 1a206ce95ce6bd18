"""The simulated estimator (``extractor = "simulated"``): COCO-17 2D LQ poses made from HQ skeletons.

It lets the method be studied where videos or estimator checkpoints are not at hand (Penn
Action's label files alone, the synthetic demo). Everything it writes is labelled: the store's
``source`` is ``simulated:<profile>`` and ``extractor`` is ``simulated``.

1. HQ → 2D pixels: NTU through the Kinect joints' colour-image coordinates (the store array
   ``color_xy`` (M, T, 25, 2)); 2D layouts (Penn Action) as annotated; 3D without colour
   coordinates (the demo) by pinhole projection with the sample's ``camera`` attribute
   (``skelpipe.skeleton.geometry.project``; default: a Kinect v2 colour camera at the origin).
2. → COCO-17: the 12 body joints by name; nose, eyes and ears, which Kinect and Penn lack, are
   synthesised from the head, the neck and the shoulder line (so they foreshorten with the body).
3. Estimator noise, per named profile (``PROFILES``), seeded per instance by (seed, sample id):
   jitter ∝ body size (per-frame noise plus a per-joint bias, each scaled per joint by COCO's
   keypoint sigmas), missed joints (x = y = conf = 0),
   left/right swaps of limb pairs, short dropouts of a whole person, joints outside the image
   lost, confidence that falls as the error grows, and people listed in arbitrary order (as a
   real estimator's tracks are), which ``align`` has to undo.

The profiles' severities are set by hand to order the estimators as the paper does (ResNet152 <
ShuffleNetV2 < MobileNetV3-small); they are not measured on real estimator output.
"""

import dataclasses
import json
import zlib
from dataclasses import dataclass

import numpy as np

from skelpipe.core.errors import SkelpipeError
from skelpipe.skeleton import layouts
from skelpipe.skeleton.geometry import body_size, image_points
from skelpipe.skeleton.store import PoseWriter, open_store

COCO = layouts.get("coco17")
# COCO's per-keypoint OKS sigmas (face precise, hips loose), relative to their mean: jitter and
# bias of joint j are scaled by them, as an estimator's errors are.
_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87,
                    .89, .89])
JOINT_WEIGHT = (_SIGMAS / _SIGMAS.mean()).astype(np.float32)
@dataclass(frozen=True)
class Profile:
    jitter: float       # per-frame noise, std as a fraction of body size
    bias: float         # per-(person, joint) constant offset, std as a fraction of body size
    miss: float         # probability that a joint is missed in a frame
    swap: float         # probability per frame and left/right pair that the two are swapped
    dropout: float      # probability per frame that a person drops out...
    dropout_len: tuple  # ...for this many frames (min, max)
    conf_scale: float   # confidence = exp(-error / (conf_scale * body size)) (+ noise)


PROFILES = {
    "resnet152": Profile(0.010, 0.005, 0.02, 0.002, 0.001, (2, 4), 0.10),
    "resnet50": Profile(0.014, 0.007, 0.03, 0.004, 0.002, (2, 5), 0.09),
    "shufflenetv2k30": Profile(0.016, 0.008, 0.04, 0.005, 0.002, (2, 5), 0.09),
    "shufflenetv2k16": Profile(0.025, 0.012, 0.08, 0.010, 0.005, (2, 8), 0.08),
    "mobilenetv3large": Profile(0.035, 0.016, 0.11, 0.018, 0.008, (3, 10), 0.07),
    "mobilenetv3small": Profile(0.045, 0.020, 0.15, 0.025, 0.012, (3, 12), 0.06),
}
ALIASES = {"shufflenetv2x1": "shufflenetv2k16"}


def get_profile(name: str, overrides: dict | None = None) -> Profile:
    """The named profile, with the fields of ``overrides`` (a pipeline source's ``profile``
    table, e.g. ``{jitter = 0.04, miss = 0.2}``) in place of its own."""
    key = ALIASES.get(name.lower(), name.lower())
    if key not in PROFILES:
        raise SkelpipeError(f"unknown simulated estimator profile {name!r}; known: {', '.join(PROFILES)}")
    overrides = dict(overrides or {})
    known = [f.name for f in dataclasses.fields(Profile)]
    for k, v in overrides.items():
        if k not in known:
            raise SkelpipeError(f"simulated profile {name}: unknown field {k!r}; known: {', '.join(known)}")
        if k == "dropout_len":
            if not (isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(n, int) for n in v)
                    and 1 <= v[0] <= v[1]):
                raise SkelpipeError(f"simulated profile {name}: dropout_len must be [min, max] frames, "
                                    f"1 <= min <= max, got {v!r}")
            overrides[k] = tuple(v)
        elif not (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v >= 0
                  and (k not in ("miss", "swap", "dropout") or v <= 1) and (k != "conf_scale" or v > 0)):
            raise SkelpipeError(f"simulated profile {name}: {k} = {v!r} is out of range")
    return dataclasses.replace(PROFILES[key], **overrides)


# ---------------------------------------------------------------- HQ → 2D → COCO-17


def _neck_name(layout: layouts.Layout) -> str | None:
    for name in ("neck", "shoulder_center"):
        if name in layout.joints:
            return name
    return None


def to_coco17(xy: np.ndarray, present: np.ndarray, layout: layouts.Layout):
    """Image points of ``layout`` → COCO-17 (M, T, 17, 2) and presence (M, T, 17).

    Shared joints are copied by name. The face (nose, eyes, ears) is synthesised from the head,
    the neck (Penn: the shoulders' midpoint) and the shoulder line d = left − right shoulder:
    with up = head − neck, nose = head − 0.05 up, eyes = head + 0.15 up ± 0.08 d,
    ears = head + 0.05 up ± 0.2 d (+ towards the person's left).
    """
    if layout.name == "coco17":
        return xy.astype(np.float32), present.copy()
    M, T = xy.shape[:2]
    out = np.zeros((M, T, 17, 2), np.float32)
    ok = np.zeros((M, T, 17), bool)
    for name in layouts.SHARED_JOINTS:
        if name in layout.joints:
            out[..., COCO.index(name), :] = xy[..., layout.index(name), :]
            ok[..., COCO.index(name)] = present[..., layout.index(name)]
    ls, rs = layout.index("left_shoulder"), layout.index("right_shoulder")
    head = layout.index("head")
    neck_name = _neck_name(layout)
    if neck_name:
        neck, neck_ok = xy[..., layout.index(neck_name), :], present[..., layout.index(neck_name)]
    else:
        neck = (xy[..., ls, :] + xy[..., rs, :]) / 2
        neck_ok = present[..., ls] & present[..., rs]
    up = xy[..., head, :] - neck
    d = xy[..., ls, :] - xy[..., rs, :]
    face_ok = present[..., head] & neck_ok & present[..., ls] & present[..., rs]
    h = xy[..., head, :]
    face = {"nose": h - 0.05 * up, "left_eye": h + 0.15 * up + 0.08 * d,
            "right_eye": h + 0.15 * up - 0.08 * d, "left_ear": h + 0.05 * up + 0.2 * d,
            "right_ear": h + 0.05 * up - 0.2 * d}
    for name, p in face.items():
        out[..., COCO.index(name), :] = np.where(face_ok[..., None], p, 0)
        ok[..., COCO.index(name)] = face_ok
    out[~ok] = 0
    return out, ok


def _hidden_coco17(hidden: np.ndarray, layout: layouts.Layout) -> np.ndarray:
    """Annotated-invisible flags (M, T, V) of ``layout`` → COCO-17; the face follows the head."""
    if layout.name == "coco17":
        return hidden.copy()
    out = np.zeros(hidden.shape[:2] + (17,), bool)
    for name in layouts.SHARED_JOINTS:
        if name in layout.joints:
            out[..., COCO.index(name)] = hidden[..., layout.index(name)]
    for name in ("nose", "left_eye", "right_eye", "left_ear", "right_ear"):
        out[..., COCO.index(name)] = hidden[..., layout.index("head")]
    return out


# ---------------------------------------------------------------- estimator noise


def degrade_2d(xy: np.ndarray, present: np.ndarray, image_size, profile: Profile,
               rng: np.random.Generator, hidden: np.ndarray | None = None) -> np.ndarray:
    """Clean COCO-17 points (M, T, 17, 2) → simulated estimator output (M, T, 17, 3) x, y, conf.

    ``hidden`` (M, T, 17): joints annotated as not visible; they are missed with probability
    min(0.9, 4 × the profile's miss rate).
    """
    M, T, V, _ = xy.shape
    W, H = image_size
    size = body_size(xy, present)
    scale = np.maximum(size, 1.0)[:, None, None, None]
    joint = scale * JOINT_WEIGHT[:, None]
    noisy = xy + rng.normal(0, profile.jitter, (M, T, V, 2)) * joint \
        + rng.normal(0, profile.bias, (M, 1, V, 2)) * joint
    for a, b in COCO.mirror:  # left/right swaps of a limb pair in single frames
        swap = rng.random((M, T)) < profile.swap
        na, nb = noisy[:, :, a].copy(), noisy[:, :, b].copy()
        noisy[:, :, a] = np.where(swap[..., None], nb, na)
        noisy[:, :, b] = np.where(swap[..., None], na, nb)
    error = np.linalg.norm(noisy - xy, axis=-1) / scale[..., 0]
    conf = np.exp(-error / profile.conf_scale) * rng.uniform(0.85, 1.0, (M, T, V))
    conf = np.clip(conf + rng.normal(0, 0.03, (M, T, V)), 0.02, 1.0)
    miss = np.full((M, T, V), profile.miss)
    if hidden is not None:
        miss[hidden] = min(0.9, 4 * profile.miss)
    found = present & (rng.random((M, T, V)) >= miss)
    found &= (noisy[..., 0] >= 0) & (noisy[..., 0] < W) & (noisy[..., 1] >= 0) & (noisy[..., 1] < H)
    for m in range(M):  # short dropouts of the whole person
        for t in np.flatnonzero(rng.random(T) < profile.dropout):
            found[m, t:t + rng.integers(profile.dropout_len[0], profile.dropout_len[1] + 1)] = False
    out = np.concatenate([noisy, conf[..., None]], -1).astype(np.float32)
    out[~found] = 0
    return out


def simulate_sample(sample, layout: layouts.Layout, profile: Profile, seed: int,
                    store_attrs: dict | None = None, shuffle_people: bool = True):
    """One HQ sample → (keypoints (M, T, 17, 3), image size, person order) or None (no image
    coordinates). ``order[k]`` = the HQ person that LQ person k comes from."""
    placed = image_points(sample, layout, store_attrs)
    if placed is None:
        return None
    xy, present, size = placed
    rng = np.random.default_rng([int(seed) % (1 << 63), zlib.crc32(sample.id.encode())])
    coco, ok = to_coco17(xy, present, layout)
    hidden = None
    if layout.name in ("penn13", "coco17") and sample.keypoints.shape[-1] >= 3:
        hidden = _hidden_coco17(sample.keypoints[..., 2] <= 0, layout) & ok
    kp = degrade_2d(coco, ok, size, profile, rng, hidden)
    order = np.arange(kp.shape[0])
    if shuffle_people:  # the people found, in random order; absent ones stay last
        found = np.flatnonzero(ok.any(axis=(1, 2)))
        order = np.concatenate([rng.permutation(found), np.setdiff1d(order, found)])
        kp = kp[order]
    return kp, size, order


def simulate_store(hq_path, out_path, profile: str = "shufflenetv2k16", seed: int = 0,
                   shuffle_people: bool = True, work=None, overrides: dict | None = None) -> dict:
    """Write the simulated LQ store (coco17, x,y,conf) of every sample of the HQ store
    (``overrides``: profile fields in place of the named profile's, see ``get_profile``).

    Samples that cannot be placed in an image are reported (``work.report_bad`` when given)
    and skipped. Returns counts.
    """
    prof = get_profile(profile, overrides)
    name = ALIASES.get(profile.lower(), profile.lower())
    source = f"simulated:{name}"
    written, skipped = 0, 0
    with open_store(hq_path) as hq:
        root = {k: v for k, v in hq.attrs.items()
                if k not in ("skelpipe_store", "complete", "layout", "joints", "channels", "source")}
        root.update(source=source, extractor="simulated", profile=name, seed=int(seed),
                    profile_fields=json.dumps(dataclasses.asdict(prof)),
                    simulated_from=hq.attrs.get("source", ""), channels="x,y,conf")
        with PoseWriter(out_path, "coco17", root) as w:
            for smp in hq.iterate(progress=True):
                try:
                    res = simulate_sample(smp, hq.layout, prof, seed, hq.attrs, shuffle_people)
                except (ValueError, KeyError) as e:
                    res, why = None, str(e)
                else:
                    why = "no image coordinates (2D sample without image_size)"
                if res is None:
                    skipped += 1
                    if work is not None:
                        work.report_bad(smp.id, f"simulate: {why}")
                    continue
                kp, size, order = res
                attrs = {k: v for k, v in smp.attrs.items() if k not in ("channels", "camera")}
                attrs.update(channels="x,y,conf", image_size=[float(size[0]), float(size[1])],
                             source=source, simulated_person_order=[int(o) for o in order])
                w.add(smp.id, kp, **attrs)
                written += 1
    counts = {"written": written, "skipped": skipped}
    if work is not None:
        work.note(simulate=counts, source=source)
    return counts
