"""The part matrix: hand-made predictions, part occlusion, the heat map and the stage."""

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from skelpipe.commands.partmatrix import partmatrix_command
from skelpipe.core.errors import SkelpipeError
from skelpipe.learn.partmatrix import (
    PartMatrixConfig,
    agreement,
    compute_part_matrix,
    occluded_logits,
    occluded_predictions,
    part_error_rates,
    part_keep_masks,
    part_matrix_from_predictions,
    part_matrix_from_scores,
    part_probability_drops,
    plot_part_matrix,
)
from skelpipe.skeleton import layouts
from skelpipe.skeleton.layouts import PARTS


def test_part_matrix_on_hand_made_predictions():
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    predictions = torch.tensor([
        [0, 1, 0, 0, 0],   # class 0: wrong when the left arm is hidden
        [0, 1, 1, 0, 0],   # class 0: wrong for left and right arm
        [1, 1, 1, 1, 0],   # class 1: wrong for the right leg
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [0, 1, 1, 1, 1],   # class 1: wrong for the head
    ])
    rates, counts = part_error_rates(labels, predictions, num_classes=3)
    assert counts.tolist() == [2, 4, 0]
    np.testing.assert_allclose(rates.numpy(), [[0, 1, 0.5, 0, 0], [0.25, 0, 0, 0, 0.5], [0, 0, 0, 0, 0]])
    e = part_matrix_from_predictions(labels, predictions, num_classes=3)
    assert e.shape == (3, 5) and e.dtype == torch.float32
    z0 = 3 + math.e + math.exp(0.5)
    np.testing.assert_allclose(e[0].numpy(), [1 / z0, math.e / z0, math.exp(0.5) / z0, 1 / z0, 1 / z0], rtol=1e-6)
    z1 = 3 + math.exp(0.25) + math.exp(0.5)
    np.testing.assert_allclose(e[1].numpy(), [math.exp(0.25) / z1, 1 / z1, 1 / z1, 1 / z1, math.exp(0.5) / z1],
                               rtol=1e-6)
    np.testing.assert_allclose(e[2].numpy(), [0.2] * 5)          # no instance: uniform
    np.testing.assert_allclose(e.sum(1).numpy(), 1.0, rtol=1e-6)


def test_part_matrix_rejects_wrong_shapes():
    with pytest.raises(ValueError):
        part_matrix_from_predictions(torch.tensor([0, 1]), torch.zeros(2, 4, dtype=torch.long), 2)


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_each_joint_is_hidden_by_exactly_one_part(name):
    keep = part_keep_masks(layouts.get(name))
    assert keep.shape == (5, layouts.get(name).num_joints)
    assert torch.all((1 - keep).sum(0) == 1)


class WhichPartIsGone(nn.Module):
    """Predicts the index of the part whose joints are all zero (class 5 if none)."""

    def __init__(self, layout):
        super().__init__()
        self.layout = layout
        self.calls = []

    def forward(self, x):
        self.calls.append((x.shape[0], self.training))
        energy = x.abs().sum(dim=(1, 2, 4))                              # (N, V)
        gone = torch.stack([energy[:, list(self.layout.parts[p])].sum(1) == 0 for p in PARTS], 1)
        logits = torch.cat([gone.float(), 0.5 * torch.ones(len(x), 1)], 1)
        return logits, None, None


def test_occluded_predictions_zero_exactly_one_part_each():
    layout = layouts.get("coco17")
    model = WhichPartIsGone(layout).train()
    x = torch.rand(7, 3, 4, layout.num_joints, 2) + 0.1
    preds = occluded_predictions(model, x.numpy(), layout, batch_size=10)
    assert preds.dtype == torch.long and preds.shape == (7, 5)
    assert torch.all(preds == torch.arange(5))
    assert all(n <= 10 and not training for n, training in model.calls)   # eval mode, batched
    assert model.training                                                  # mode restored
    assert torch.equal(occluded_predictions(model, x, layout, 5, index=[6, 2]), preds[[6, 2]])


def test_occluded_predictions_of_a_real_model_do_not_depend_on_batch_size():
    from skelpipe.learn.models import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig("stgcn", "penn13", num_classes=4, channels=(8, 8, 16)))
    x = torch.randn(6, 3, 8, 13, 2)
    a = occluded_predictions(model, x, None, batch_size=5)
    b = occluded_predictions(model, x, None, batch_size=30)
    assert torch.equal(a, b)
    full = model.eval()(x)[0]
    assert full.shape == (6, 4)


def test_plot_writes_png(tmp_path):
    path = plot_part_matrix(np.full((3, 5), 0.2), ["a", "b", "c"], PARTS, tmp_path / "e.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["e.png"]


@pytest.fixture
def teacher_and_pack(tmp_path, monkeypatch):
    """A saved tiny teacher (train.save_model) and a stand-in for load_split."""
    from skelpipe.data.split import Split
    from skelpipe.learn import checkpoint, partmatrix
    from skelpipe.learn.models import ModelConfig, build_model

    torch.manual_seed(0)
    channels = (8, 8)
    model = build_model(ModelConfig("stgcn", "penn13", in_channels=3, num_classes=3, channels=channels))
    meta = {"class_names": ["run", "jump", "sit"]}
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    checkpoint.save_model(teacher_dir, model, meta)
    n = 8
    rng = np.random.default_rng(0)
    split = Split(lq=np.zeros((n, 3, 8, 17, 2), np.float32),
                       hq=rng.standard_normal((n, 3, 8, 13, 2)).astype(np.float32),
                       has_hq=np.array([1, 1, 0, 1, 1, 1, 0, 1], bool),
                       label=np.array([0, 1, 2, 0, 1, 0, 2, 1]), ids=[str(i) for i in range(n)],
                       attrs={"hq_layout": "penn13", "num_classes": 3, "class_names": ["run", "jump", "sit"]})
    monkeypatch.setattr(partmatrix, "load_split", lambda pack_dir, name: split)
    return teacher_dir, split, model


def test_compute_part_matrix_stage(tmp_path, teacher_and_pack):
    teacher_dir, split, model = teacher_and_pack
    out = tmp_path / "out"
    e = compute_part_matrix(teacher_dir, tmp_path / "pack", out, PartMatrixConfig(batch_size=10), device="cpu")
    idx = np.flatnonzero(split.has_hq)
    preds = occluded_predictions(model, split.hq[idx], model.layout, 10)
    want = part_matrix_from_predictions(split.label[idx], preds, 3).numpy()
    np.testing.assert_allclose(e, want)
    np.testing.assert_allclose(np.load(out / "part_matrix.npy"), want)
    np.testing.assert_allclose(e[2], 0.2)                       # class 2 has no HQ instance
    info = json.loads((out / "part_matrix.json").read_text())
    assert info["class_names"] == ["run", "jump", "sit"] and info["parts"] == list(PARTS)
    assert info["counts"] == [3, 3, 0]
    assert (out / "part_matrix.png").stat().st_size > 0


def test_partmatrix_command(tmp_path, teacher_and_pack):
    teacher_dir, _, _ = teacher_and_pack
    result = CliRunner().invoke(partmatrix_command, ["--teacher", str(teacher_dir), "--pack", str(tmp_path),
                                                     "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert np.load(teacher_dir / "part_matrix.npy").shape == (3, 5)
    assert "Example:" in CliRunner().invoke(partmatrix_command, ["--help"]).output


def test_stage_refuses_a_teacher_of_another_layout(tmp_path, teacher_and_pack):
    from skelpipe.core.errors import SkelpipeError

    teacher_dir, split, _ = teacher_and_pack
    split.attrs["hq_layout"] = "coco17"
    with pytest.raises(SkelpipeError, match="penn13"):
        compute_part_matrix(teacher_dir, tmp_path / "pack", tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_occluded_logits_hold_the_clean_pass_first():
    layout = layouts.get("coco17")
    model = WhichPartIsGone(layout)
    x = torch.rand(3, 3, 4, layout.num_joints, 2) + 0.1
    logits = occluded_logits(model, x, layout, batch_size=12)
    assert logits.shape == (3, 6, 6)
    assert torch.all(logits[:, 0, :5] == 0)                       # clean: no part gone
    assert torch.equal(logits[:, 1:, :5], torch.eye(5).expand(3, 5, 5))


def test_probability_drop_measure():
    # class 0: occluding part 2 takes the true class from 0.9 to ~0.1; other parts change nothing
    labels = torch.tensor([0, 0, 1])
    clean = torch.tensor([[3.0, 0.8], [3.0, 0.8], [0.0, 2.0]])
    logits = clean[:, None].repeat(1, 6, 1)
    logits[:2, 3] = torch.tensor([0.8, 3.0])
    drops, counts = part_probability_drops(labels, logits, 2)
    p_clean = torch.softmax(clean[0], 0)[0]
    assert drops[0, 2] == pytest.approx(float(p_clean - (1 - p_clean)), abs=1e-6)
    assert torch.all(drops[0, [0, 1, 3, 4]] == 0) and torch.all(drops[1] == 0)
    assert counts.tolist() == [2, 1]
    e = part_matrix_from_scores(drops, counts)
    assert e[0].argmax() == 2 and torch.allclose(e.sum(1), torch.ones(2))


def test_agreement_counts_classes_whose_expected_part_ranks_first():
    e = np.array([[0.1, 0.1, 0.6, 0.1, 0.1], [0.5, 0.2, 0.1, 0.1, 0.1], [0.2] * 5])
    out = agreement(e, ["wave_right", "kick_left", "other"],
                    {"wave_right": ("right_arm",), "kick_left": ("left_leg",)})
    assert out["hits"] == 1 and out["classes"] == 2
    assert out["top_part"] == {"wave_right": "right_arm", "kick_left": "head", "other": None}  # a tie
    assert agreement(np.full((1, 5), 0.2), ["squat"], {"squat": ("head",)})["hits"] == 0


def test_compute_part_matrix_measures(tmp_path, teacher_and_pack):
    teacher_dir, _, _ = teacher_and_pack
    err = compute_part_matrix(teacher_dir, tmp_path / "pack", tmp_path / "err", PartMatrixConfig(batch_size=12),
                              device="cpu")
    drop = compute_part_matrix(teacher_dir, tmp_path / "pack", tmp_path / "drop",
                               PartMatrixConfig(batch_size=12, measure="prob_drop"), device="cpu")
    info = json.loads((tmp_path / "drop" / "part_matrix.json").read_text())
    assert info["measure"] == "prob_drop"
    np.testing.assert_allclose(drop, part_matrix_from_scores(info["probability_drops"], info["counts"]).numpy(), atol=1e-5)
    np.testing.assert_allclose(err, part_matrix_from_scores(info["error_rates"], info["counts"]).numpy(), atol=1e-5)
    with pytest.raises(SkelpipeError, match="measure must be error or prob_drop, got 'bogus'"):
        PartMatrixConfig(measure="bogus")
