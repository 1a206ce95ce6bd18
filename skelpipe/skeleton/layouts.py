"""Skeleton layouts: joint names, bones, the centre joint and the five body parts.

A layout is a few lines of data, as in CTR-GCN's ``graph/ntu_rgb_d.py``. Edges and parts are
0-based. Every layout splits its joints into the five parts of the paper (head, left arm,
right arm, left leg, right leg); torso and centre joints belong to ``head`` (docs/method.md, §Body parts),
shoulders to the arms and hips to the legs.
"""

from dataclasses import dataclass

from skelpipe.core.errors import SkelpipeError

PARTS = ("head", "left_arm", "right_arm", "left_leg", "right_leg")


@dataclass(frozen=True)
class Layout:
    name: str
    joints: tuple[str, ...]
    edges: tuple[tuple[int, int], ...]
    center: int
    parts: dict[str, tuple[int, ...]]
    mirror: tuple[tuple[int, int], ...]

    @property
    def num_joints(self) -> int:
        return len(self.joints)

    def index(self, joint: str) -> int:
        return self.joints.index(joint)


def _layout(name, joints, edges_1based, center_1based, parts_1based, mirror_1based):
    joints = tuple(joints.split())
    return Layout(
        name=name,
        joints=joints,
        edges=tuple((a - 1, b - 1) for a, b in edges_1based),
        center=center_1based - 1,
        parts={p: tuple(j - 1 for j in parts_1based[p]) for p in PARTS},
        mirror=tuple((a - 1, b - 1) for a, b in mirror_1based),
    )


# Kinect v2 (NTU RGB+D), the dataset's own 1-based numbering; ST-GCN's 24 bones; centre 21.
NTU25 = _layout(
    "ntu25",
    """spine_base spine_mid neck head left_shoulder left_elbow left_wrist left_hand
    right_shoulder right_elbow right_wrist right_hand left_hip left_knee left_ankle left_foot
    right_hip right_knee right_ankle right_foot spine_shoulder left_hand_tip left_thumb
    right_hand_tip right_thumb""",
    [(1, 2), (2, 21), (3, 21), (4, 3), (5, 21), (6, 5), (7, 6), (8, 7), (9, 21), (10, 9),
     (11, 10), (12, 11), (13, 1), (14, 13), (15, 14), (16, 15), (17, 1), (18, 17), (19, 18),
     (20, 19), (22, 23), (23, 8), (24, 25), (25, 12)],
    21,
    {"head": (1, 2, 3, 4, 21), "left_arm": (5, 6, 7, 8, 22, 23),
     "right_arm": (9, 10, 11, 12, 24, 25), "left_leg": (13, 14, 15, 16),
     "right_leg": (17, 18, 19, 20)},
    [(5, 9), (6, 10), (7, 11), (8, 12), (22, 24), (23, 25), (13, 17), (14, 18), (15, 19),
     (16, 20)],
)

# COCO keypoints in OpenPifPaf's order and with its COCO_PERSON_SKELETON; centre: the nose.
COCO17 = _layout(
    "coco17",
    """nose left_eye right_eye left_ear right_ear left_shoulder right_shoulder left_elbow
    right_elbow left_wrist right_wrist left_hip right_hip left_knee right_knee left_ankle
    right_ankle""",
    [(16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8),
     (7, 9), (8, 10), (9, 11), (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7)],
    1,
    {"head": (1, 2, 3, 4, 5), "left_arm": (6, 8, 10), "right_arm": (7, 9, 11),
     "left_leg": (12, 14, 16), "right_leg": (13, 15, 17)},
    [(2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13), (14, 15), (16, 17)],
)

# Penn Action's 13 annotated joints; centre: the head.
PENN13 = _layout(
    "penn13",
    """head left_shoulder right_shoulder left_elbow right_elbow left_wrist right_wrist
    left_hip right_hip left_knee right_knee left_ankle right_ankle""",
    [(1, 2), (1, 3), (2, 3), (2, 4), (4, 6), (3, 5), (5, 7), (2, 8), (3, 9), (8, 9),
     (8, 10), (10, 12), (9, 11), (11, 13)],
    1,
    {"head": (1,), "left_arm": (2, 4, 6), "right_arm": (3, 5, 7), "left_leg": (8, 10, 12),
     "right_leg": (9, 11, 13)},
    [(2, 3), (4, 5), (6, 7), (8, 9), (10, 11), (12, 13)],
)

# Kinect v1 (SYSU 3D HOI); centre: the shoulder centre, Kinect v2's spine_shoulder.
KINECT20 = _layout(
    "kinect20",
    """hip_center spine shoulder_center head left_shoulder left_elbow left_wrist left_hand
    right_shoulder right_elbow right_wrist right_hand left_hip left_knee left_ankle left_foot
    right_hip right_knee right_ankle right_foot""",
    [(1, 2), (2, 3), (3, 4), (3, 5), (5, 6), (6, 7), (7, 8), (3, 9), (9, 10), (10, 11),
     (11, 12), (1, 13), (13, 14), (14, 15), (15, 16), (1, 17), (17, 18), (18, 19), (19, 20)],
    3,
    {"head": (1, 2, 3, 4), "left_arm": (5, 6, 7, 8), "right_arm": (9, 10, 11, 12),
     "left_leg": (13, 14, 15, 16), "right_leg": (17, 18, 19, 20)},
    [(5, 9), (6, 10), (7, 11), (8, 12), (13, 17), (14, 18), (15, 19), (16, 20)],
)

LAYOUTS = {layout.name: layout for layout in (NTU25, COCO17, PENN13, KINECT20)}

# Joints that two layouts both name, for associating people across estimators (align) and
# for the simulated estimator. Kinect's "neck"/"head" have no COCO equivalent and are left out.
SHARED_JOINTS = (
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)


def get(name: str) -> Layout:
    """The layout called ``name`` (``ntu25``, ``coco17``, ``penn13``, ``kinect20``)."""
    try:
        return LAYOUTS[name]
    except KeyError:
        raise SkelpipeError(f"unknown layout {name!r}; known: {', '.join(LAYOUTS)}") from None


def shared_joints(a: Layout, b: Layout) -> tuple[list[int], list[int]]:
    """Indices in ``a`` and in ``b`` of the joints both layouts share, in the same order."""
    names = [n for n in SHARED_JOINTS if n in a.joints and n in b.joints]
    return [a.index(n) for n in names], [b.index(n) for n in names]
