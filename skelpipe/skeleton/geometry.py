"""Skeletons in images: camera-frame 3D points to pixels, a sample's image points whatever its
source (Kinect colour coordinates, 2D annotation, a camera attribute), and a person's size."""

import json

import numpy as np

from skelpipe.skeleton import layouts

KINECT_V2_COLOUR = {"focal": 1081.37, "cx": 959.5, "cy": 539.5, "W": 1920, "H": 1080}


def to_camera(world: np.ndarray, cam: dict) -> np.ndarray:
    """World points (floor y = 0, camera at (0, height, 0) looking along +z) → camera frame."""
    rel = world - np.array([0.0, cam["height"], 0.0])
    a = np.radians(cam["pitch"])
    x = rel[..., 0]
    y = rel[..., 1] * np.cos(a) + rel[..., 2] * np.sin(a)
    z = -rel[..., 1] * np.sin(a) + rel[..., 2] * np.cos(a)
    return np.stack([x, y, z], -1)


def project(xyz: np.ndarray, camera: dict) -> np.ndarray:
    """Pinhole projection of camera-frame points (..., 3) to pixels (..., 2).

    u = cx + f x / z, v = cy - f y / z (image y points down). Absent joints (all zeros, e.g. the
    empty second person) project to (0, 0).
    """
    xyz = np.asarray(xyz, dtype=np.float64)
    z = xyz[..., 2]
    present = z > 1e-6
    safe = np.where(present, z, 1.0)
    u = camera["cx"] + camera["focal"] * xyz[..., 0] / safe
    v = camera["cy"] - camera["focal"] * xyz[..., 1] / safe
    return np.where(present[..., None], np.stack([u, v], -1), 0.0).astype(np.float32)


def image_points(sample, layout: layouts.Layout, store_attrs: dict | None = None,
                 default_camera: bool = True):
    """(xy (M, T, V, 2) pixels, present (M, T, V) bool, (W, H)) of a sample, or None when the
    sample carries nothing to place it in an image (3D without colour coordinates or camera
    and ``default_camera`` False; 2D without image size)."""
    attrs = {**(store_attrs or {}), **sample.attrs}
    kp = sample.keypoints
    channels = attrs.get("channels") or ""
    if "color_xy" in sample.arrays:
        xy = np.asarray(sample.arrays["color_xy"], np.float32)
        size = attrs.get("image_size") or (KINECT_V2_COLOUR["W"], KINECT_V2_COLOUR["H"])
        present = np.abs(kp).sum(-1) > 0
        return xy, present & np.isfinite(xy).all(-1), tuple(size)
    if "z" not in channels.split(",") and (channels or layout.name in ("coco17", "penn13")):
        xy = kp[..., :2].astype(np.float32)
        present = (xy != 0).any(-1)
        size = attrs.get("image_size")
        if size is None:
            return None
        return xy, present, tuple(size)
    camera = attrs.get("camera")
    if isinstance(camera, str):
        camera = json.loads(camera)
    if not camera and not default_camera:
        return None
    camera = camera or KINECT_V2_COLOUR

    xy = project(kp[..., :3], camera)
    present = kp[..., 2] > 1e-6
    size = attrs.get("image_size") or (camera.get("W", 1920), camera.get("H", 1080))
    return xy, present, tuple(size)


def body_size(xy: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Per person (M,): median over frames of the bounding-box diagonal of present joints
    (frames with fewer than two present joints are left out; 0 for a person never present)."""
    p = present[..., None]
    lo = np.where(p, xy, np.inf).min(axis=2)
    hi = np.where(p, xy, -np.inf).max(axis=2)
    usable = present.sum(axis=2) >= 2                      # (M, T)
    diag = np.where(usable, np.linalg.norm(np.where(usable[..., None], hi - lo, 0), axis=-1), np.nan)
    sizes = np.zeros(xy.shape[0], np.float32)
    for m in np.flatnonzero(usable.any(axis=1)):
        sizes[m] = np.nanmedian(diag[m])
    return sizes
