"""Layouts (parts, bones, mirror pairs) and ST-GCN's spatial-configuration adjacency."""

from collections import deque

import numpy as np
import pytest

from skelpipe.learn.models.graph import hop_distance, spatial_adjacency
from skelpipe.skeleton import layouts
from skelpipe.skeleton.layouts import PARTS, Layout

NAMES = sorted(layouts.LAYOUTS)
EXPECTED_JOINTS = {"ntu25": 25, "coco17": 17, "penn13": 13, "kinect20": 20}


@pytest.mark.parametrize("name", NAMES)
def test_parts_partition_the_joints(name):
    layout = layouts.get(name)
    assert layout.num_joints == EXPECTED_JOINTS[name]
    assert tuple(layout.parts) == PARTS
    members = sorted(j for p in PARTS for j in layout.parts[p])
    assert members == list(range(layout.num_joints))         # every joint exactly once
    assert all(layout.parts[p] for p in PARTS)                  # no empty part


@pytest.mark.parametrize("name", NAMES)
def test_parts_follow_joint_names(name):
    """Left/right arm and leg parts hold only joints of that side; shoulders in arms, hips in legs."""
    layout = layouts.get(name)
    for part in ("left_arm", "right_arm", "left_leg", "right_leg"):
        side = part.split("_")[0]
        assert all(layout.joints[j].startswith(side) for j in layout.parts[part])
    for j, joint in enumerate(layout.joints):
        if joint.endswith("shoulder") and joint.startswith(("left", "right")):
            assert j in layout.parts[joint.split("_")[0] + "_arm"]
        if joint.endswith("hip") and joint.startswith(("left", "right")):
            assert j in layout.parts[joint.split("_")[0] + "_leg"]
    assert layout.center in layout.parts["head"]


@pytest.mark.parametrize("name", NAMES)
def test_graph_is_connected_and_edges_are_valid(name):
    layout = layouts.get(name)
    v = layout.num_joints
    edges = {tuple(sorted(e)) for e in layout.edges}
    assert len(edges) == len(layout.edges)                      # no duplicate bone
    assert all(0 <= a < v and 0 <= b < v and a != b for a, b in layout.edges)
    neighbours = {i: set() for i in range(v)}
    for a, b in layout.edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    seen, queue = {layout.center}, deque([layout.center])
    while queue:
        for j in neighbours[queue.popleft()] - seen:
            seen.add(j)
            queue.append(j)
    assert seen == set(range(v))


@pytest.mark.parametrize("name", NAMES)
def test_mirror_pairs_swap_left_and_right(name):
    layout = layouts.get(name)
    for a, b in layout.mirror:
        ja, jb = layout.joints[a], layout.joints[b]
        assert ja.startswith("left") and jb == "right" + ja[len("left"):]


def test_shared_joints_name_the_same_joints():
    a, b = layouts.get("ntu25"), layouts.get("coco17")
    ia, ib = layouts.shared_joints(a, b)
    assert len(ia) == 12
    assert [a.joints[i] for i in ia] == [b.joints[i] for i in ib]


def small_layout():
    """Joints 0-1-2-3 in a path plus a bone 0-2; centre 1 (distances to it: 1, 0, 1, 2)."""
    return Layout(name="small", joints=("a", "b", "c", "d"), edges=((0, 1), (1, 2), (2, 3), (0, 2)),
                  center=1, parts={p: () for p in PARTS}, mirror=())


def test_hop_distance_small_graph():
    d = hop_distance(small_layout(), max_hop=3)
    assert d[:, 1].tolist() == [1, 0, 1, 2]
    assert hop_distance(small_layout(), max_hop=1)[3, 1] == np.inf


def test_spatial_adjacency_against_hand_computed_partition():
    """A[k, j, i]: j's contribution to i, divided by |neighbourhood of i| (self included);
    k=0 self, k=1 neighbours at least as far from the centre as i, k=2 closer ones."""
    a = spatial_adjacency(small_layout())
    want = np.zeros((3, 4, 4))
    want[0] = np.diag([1 / 3, 1 / 3, 1 / 4, 1 / 2])
    want[1, 2, 0] = 1 / 3                  # c (d=1) -> a (d=1): equal distance
    want[1, 0, 1] = want[1, 2, 1] = 1 / 3  # a, c (d=1) -> b (centre)
    want[1, 0, 2] = want[1, 3, 2] = 1 / 4  # a (d=1), d (d=2) -> c (d=1)
    want[2, 1, 0] = 1 / 3                  # centre -> a
    want[2, 1, 2] = 1 / 4                  # centre -> c
    want[2, 2, 3] = 1 / 2                  # c (d=1) -> d (d=2)
    np.testing.assert_allclose(a, want, rtol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_spatial_adjacency_is_a_normalised_split_of_the_neighbourhood(name):
    layout = layouts.get(name)
    a = spatial_adjacency(layout)
    v = layout.num_joints
    assert a.shape == (3, v, v) and a.dtype == np.float32
    np.testing.assert_allclose(a.sum(axis=(0, 1)), 1.0, rtol=1e-6)       # columns sum to 1
    support = (a > 0).sum(axis=0)
    assert support.max() == 1                                             # subsets disjoint
    adjacency = np.eye(v)
    for i, j in layout.edges:
        adjacency[i, j] = adjacency[j, i] = 1
    np.testing.assert_array_equal(support, adjacency)
    np.testing.assert_array_equal(np.diag(a[0]) > 0, True)
    assert np.count_nonzero(a[0] - np.diag(np.diag(a[0]))) == 0
