"""EfficientGCN-Bx and Js-AGCN as backbones: structure, sizes at NTU shapes, every layout,
gradient flow, and distillation with each backbone."""

import numpy as np
import pytest
import torch

from skelpipe.learn.models import ModelConfig, build_model
from skelpipe.learn.models.efficientgcn import distance_adjacency, input_branches, parents, scaled_blocks
from skelpipe.skeleton import layouts


def test_compound_scaling_gives_the_published_b4_blocks():
    assert scaled_blocks(4) == [(96, 1, 2), (48, 1, 2), (128, 2, 3), (272, 2, 3)]
    assert scaled_blocks(0) == [(48, 1, 0), (32, 1, 0), (64, 2, 1), (128, 2, 1)]  # round(0.5) = 0, as theirs


def test_sizes_at_ntu_shapes():
    """Trainable parameters with 60 classes, ntu25, 3 channels (the README's table)."""
    count = {b: sum(p.numel() for p in build_model(ModelConfig(b, "ntu25", 3, 60)).parameters() if p.requires_grad)
             for b in ("stgcn", "agcn", "efficientgcn-b0", "efficientgcn-b4")}
    # EfficientGCN as its T-PAMI paper sizes it: B0 0.29 M, B4 1.10 M (the sandglass layers of the
    # released configurations; the first arXiv version's larger layers gave B4 2.03 M)
    assert count == {"stgcn": 3_098_982, "agcn": 3_469_510, "efficientgcn-b0": 306_201,
                     "efficientgcn-b4": 1_119_945}


def test_sandglass_temporal_layer():
    from skelpipe.learn.models.efficientgcn import TemporalSGLayer

    layer = TemporalSGLayer(48, stride=2)
    assert layer.reduce[0].out_channels == 24 and layer.expand[0].in_channels == 24
    assert layer.depthwise1[0].groups == 48 and layer.depthwise2[0].stride == (2, 1)
    assert layer(torch.randn(2, 48, 16, 25)).shape == (2, 48, 8, 25)
    # 2 depthwise 5x1 (+ bias), 2 pointwise through half the channels, 4 BNs, the strided residual
    assert sum(p.numel() for p in layer.parameters()) == 2 * 48 * 6 + 2 * (48 * 24) + 24 + 48 + 2 * (3 * 48 + 24) + 48 * 49 + 2 * 48


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_efficientgcn_every_layout(name):
    torch.manual_seed(0)
    v = layouts.get(name).num_joints
    model = build_model(ModelConfig("efficientgcn-b0", layout=name, in_channels=3, num_classes=7))
    x = torch.randn(2, 3, 16, v, 2)
    logits, glob, parts = model(x)
    assert logits.shape == (2, 7) and glob.shape == (2, 128) and parts.shape == (2, 5, 128)
    assert model.features(x).shape == (4, 128, 4, v)  # two stride-2 blocks: T 16 -> 4
    lay = layouts.get(name)
    p = parents(lay)
    assert p[lay.center] == lay.center and all(p[j] != j for j in range(v) if j != lay.center)
    a = distance_adjacency(lay)
    np.testing.assert_allclose(a.sum(axis=(0, 1)), 1.0, rtol=1e-6)  # columns normalised over hops 0..2


def test_input_branches_are_joint_velocity_and_bone():
    lay = layouts.get("coco17")
    x = torch.zeros(1, 3, 4, 17)
    x[0, 0, :, 5] = torch.tensor([1.0, 2.0, 4.0, 7.0])      # left shoulder moves along x
    joint, velocity, bone = input_branches(x, lay, torch.tensor(parents(lay)))
    assert joint.shape == velocity.shape == bone.shape == (1, 6, 4, 17)
    assert velocity[0, 0, :, 5].tolist() == [1.0, 2.0, 3.0, 0.0]   # next frame minus this one
    assert velocity[0, 3, :, 5].tolist() == [3.0, 5.0, 0.0, 0.0]   # second next
    parent = parents(lay)[5]
    assert torch.equal(bone[0, :3, :, 5], x[0, :, :, 5] - x[0, :, :, parent])
    assert torch.allclose(bone[0, 3, :, 5], torch.zeros(4))          # along +x: angle 0 to the x axis


@pytest.mark.parametrize("backbone", ["agcn", "efficientgcn-b0"])
def test_every_parameter_learns(backbone):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone, "penn13", 3, 4, channels=(8, 8, 16, 16)))
    logits, glob, parts = model(torch.randn(3, 3, 12, 13, 2))
    (logits.sum() + glob.sum() + parts.sum()).backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not dead


def test_agcn_graph_is_adaptive_a_plus_b_plus_c():
    """Js-AGCN: A fixed (a buffer), B learned (a parameter, starting near 0), C from the input."""
    model = build_model(ModelConfig("agcn", "ntu25", 3, 5, channels=(8, 8)))
    gcn = model.blocks[0].gcn
    assert "A" in dict(gcn.named_buffers()) and "A" not in dict(gcn.named_parameters())
    assert gcn.B.requires_grad and float(gcn.B.detach().abs().max()) <= 1e-6
    assert model.blocks[0].gcn.embed.weight.requires_grad  # theta / phi of C_k(x)


@pytest.mark.parametrize("backbone", ["stgcn", "agcn", "efficientgcn-b0", "efficientgcn-b4"])
def test_distillation_runs_with_each_backbone(backbone, tmp_path):
    from skelpipe.bench.inputs import random_split
    from skelpipe.learn.checkpoint import save_model
    from skelpipe.learn.config import TrainConfig
    from skelpipe.learn.train import train_split

    split = random_split(12, "ntu25", frames=12, num_classes=3, seed=1)
    teacher = build_model(ModelConfig(backbone, "ntu25", 3, 3, channels=(8, 8)))
    save_model(tmp_path / "t", teacher, {"stage": "teacher", "config_key": "t"})
    cfg = TrainConfig(stage="student", kd="pmsc", backbone=backbone, channels=(8, 8), epochs=1, batch_size=6,
                      device="cpu", op=0.3)
    out = train_split(cfg, split, tmp_path / "s", teacher_dir=tmp_path / "t", part_matrix=torch.full((3, 5), 0.2))
    record = __import__("json").loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["kd"] > 0 and np.isfinite(record["loss"])
