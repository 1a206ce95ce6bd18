"""PR-GCN (Table 3's rival [42]) as a backbone: its size against the authors' layer list, the
pose refinement module, the two branches' temporal alignment, every layout, and training."""

import json

import numpy as np
import pytest
import torch

from skelpipe.learn.models import ModelConfig, build_model
from skelpipe.learn.models.prgcn import pool_frames
from skelpipe.skeleton import layouts


def _authors_count(v: int, c: int, classes: int, persons: int) -> int:
    """Parameters of the authors' ``PR_GCN`` layer by layer (3 adjacency subsets), except that our
    data BN also spans the M person slots."""
    k = 3

    def gcn(i, o):   # learned A, 1x1 conv to K*o, BN, residual (1x1 + BN) where i != o
        return k * v * v + i * o * k + o * k + 2 * o + (i * o + o + 2 * o if i != o else 0)

    def tcn(i, o):   # BN, 3x1 conv, BN
        return 2 * i + 3 * i * o + o + 2 * o

    prm = (c * 32 + 32) + gcn(32, 32) + tcn(32, 64) + gcn(64, 64) + (64 * c + c)
    branches = 2 * tcn(c, 64) + 4 * tcn(64, 64) + gcn(64, 64) + 4 * gcn(128, 64) + gcn(128, 128)
    head = (128 * 256 + 256) + (256 * 128 + 128) + gcn(128, 256) + (256 * classes + classes)
    return 2 * persons * v * c + prm + branches + head


def test_size_follows_the_authors_layers():
    model = build_model(ModelConfig("pr-gcn", "ntu25", 3, 60))
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert count == _authors_count(25, 3, 60, 2) == 501_698


def test_refinement_shifts_only_the_coordinates():
    torch.manual_seed(0)
    model = build_model(ModelConfig("pr-gcn", "coco17", 3, 5)).eval()
    x = torch.randn(2, 3, 8, 17)
    with torch.no_grad():
        refined = model.refined(x)
    assert torch.equal(refined[:, 2], x[:, 2])                      # the confidence is kept
    assert (refined[:, :2] - x[:, :2]).abs().amax() > 1e-3          # x, y are corrected


def test_length_alignment_is_the_authors_max_pool_where_lengths_divide():
    torch.manual_seed(0)
    a = torch.randn(2, 4, 12, 5)
    assert torch.equal(pool_frames(a, 3), a.view(2, 4, 4, 3, 5).amax(dim=3))       # the authors' ``scale_T``
    assert torch.allclose(pool_frames(a, 4, "mean"), a.view(2, 4, 3, 4, 5).mean(dim=3))
    odd = torch.randn(1, 4, 7, 5)
    conv = torch.nn.Conv2d(4, 4, (3, 1), (3, 1), (1, 0))                            # a stride-3 temporal layer
    assert pool_frames(odd, 3).shape[2] == conv(odd).shape[2] == 3
    assert torch.equal(pool_frames(odd, 3)[:, :, 2], odd[:, :, 6])                  # the last, shorter run


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_every_layout(name):
    torch.manual_seed(0)
    v = layouts.get(name).num_joints
    model = build_model(ModelConfig("pr-gcn", name, 3, 7))
    logits, glob, parts = model(torch.randn(2, 3, 16, v, 2))
    assert logits.shape == (2, 7) and glob.shape == (2, 256) and parts.shape == (2, 5, 256)
    # the authors' lengths: T -> T/2 (motion stride 2) -> T/6 (stride 3) -> /5 (head pool)
    assert model.features(torch.randn(1, 3, 60, v, 2)).shape == (2, 256, 2, v)


def test_every_parameter_learns():
    torch.manual_seed(0)
    model = build_model(ModelConfig("pr-gcn", "penn13", 3, 4))
    logits, glob, parts = model(torch.randn(3, 3, 12, 13, 2))
    (logits.sum() + glob.sum() + parts.sum()).backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not dead


@pytest.mark.parametrize("kd", ["none", "pmsc"])
def test_trains_as_a_student(kd, tmp_path):
    from skelpipe.bench.inputs import random_split
    from skelpipe.learn.checkpoint import save_model
    from skelpipe.learn.config import TrainConfig
    from skelpipe.learn.train import train_split

    torch.manual_seed(0)
    split = random_split(12, "ntu25", frames=12, num_classes=3, seed=1)
    teacher = build_model(ModelConfig("pr-gcn", "ntu25", 3, 3))
    save_model(tmp_path / "t", teacher, {"stage": "teacher", "config_key": "t"})
    cfg = TrainConfig(stage="student", kd=kd, backbone="pr-gcn", epochs=1, batch_size=6, device="cpu", op=0.3)
    extra = dict(teacher_dir=tmp_path / "t", part_matrix=torch.full((3, 5), 0.2)) if kd == "pmsc" else {}
    out = train_split(cfg, split, tmp_path / "s", **extra)
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert np.isfinite(record["loss"]) and (record["kd"] > 0 if kd == "pmsc" else True)
