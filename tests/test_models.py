"""ST-GCN and 2s-AGCN: shapes for every layout, the graph product, pooling, and overfitting."""

import pytest
import torch

from skelpipe import layouts
from skelpipe.models import build_model
from skelpipe.models.stgcn import block_strides, graph_aggregate

TINY = (8, 8, 16, 16)


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_stgcn_shapes_every_layout(name):
    torch.manual_seed(0)
    model = build_model("stgcn", layout=name, in_channels=3, num_classes=7, channels=TINY)
    v = layouts.get(name).num_joints
    x = torch.randn(3, 3, 16, v, 2)
    logits, glob, parts = model(x)
    assert logits.shape == (3, 7) and glob.shape == (3, 16) and parts.shape == (3, 5, 16)
    assert model.features(x).shape == (6, 16, 8, v)   # one stride-2 transition: T 16 -> 8
    assert model.layout.name == name


def test_graph_aggregate_matches_reference_einsum():
    torch.manual_seed(0)
    y = torch.randn(2, 3 * 4, 5, 17)
    a = torch.randn(3, 17, 17)
    ref = torch.einsum("nkctv,kvw->nctw", y.view(2, 3, 4, 5, 17), a)
    torch.testing.assert_close(graph_aggregate(y, a), ref)
    torch.testing.assert_close(graph_aggregate(y.contiguous(memory_format=torch.channels_last), a), ref)


def test_default_strides():
    assert block_strides((64, 64, 64, 64, 128, 128, 128, 256, 256, 256)) == [1, 1, 1, 1, 2, 1, 1, 2, 1, 1]
