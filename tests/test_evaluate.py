"""Evaluation: accuracies on a hand-checkable case, output files, occlusion of the test data."""

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_split, write_pack

from skelpipe.commands.evaluate import evaluate_command
from skelpipe.core.errors import SkelpipeError
from skelpipe.learn.checkpoint import save_model
from skelpipe.learn.config import TrainConfig
from skelpipe.learn.evaluate import Occlusion, evaluate, predict, topk_accuracy
from skelpipe.learn.models import ModelConfig, build_model
from skelpipe.skeleton import noise

BIAS = torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0])   # class 0 first, class 5 last


def constant_model(out_dir, stage="student", layout="coco17"):
    """A model whose logits are BIAS for every input (classifier weights zero)."""
    model = build_model(ModelConfig("stgcn", layout, 3, 6, (8, 8), 3))
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(BIAS)
    cfg = TrainConfig(stage=stage, channels=(8, 8), temporal_kernel=3, op=0.0)
    save_model(out_dir, model, {"class_names": [f"c{k}" for k in range(6)], "stage": stage, "kd": "none",
                                "config": cfg.to_dict(), "config_key": "const"})
    return out_dir


def six_instances(seed=0):
    split = make_split(n=6, num_classes=6, frames=8, seed=seed)
    split.label = np.array([0, 0, 1, 2, 3, 5])
    split.attrs["class_names"] = [f"c{k}" for k in range(6)]
    return split


def test_hand_checked_accuracies_and_output_files(tmp_path):
    model_dir = constant_model(tmp_path / "model")
    write_pack(tmp_path / "pack", six_instances(), six_instances(seed=1))
    r = evaluate(model_dir, tmp_path / "pack", out_dir=tmp_path / "eval", device="cpu")
    # every instance is predicted class 0; top-5 = classes 0-4
    assert r["n"] == 6 and r["which"] == "lq"
    assert r["top1"] == pytest.approx(2 / 6) and r["top5"] == pytest.approx(5 / 6)
    assert r["per_class"] == {"c0": 1.0, "c1": 0.0, "c2": 0.0, "c3": 0.0, "c4": None, "c5": 0.0}
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["top1"] == r["top1"] and saved["per_class"]["c4"] is None
    rows = list(csv.DictReader((tmp_path / "eval" / "predictions.csv").open()))
    assert [row["id"] for row in rows] == [f"i{k:03d}" for k in range(6)]
    assert [int(row["label"]) for row in rows] == [0, 0, 1, 2, 3, 5]
    assert {row["pred"] for row in rows} == {"0"} and {row["top5"] for row in rows} == {"0 1 2 3 4"}
    assert float(rows[0]["prob"]) == pytest.approx(float(BIAS.softmax(0)[0]), abs=1e-6)
    png = (tmp_path / "eval" / "confusion.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000


def test_evaluate_command_and_teacher_on_hq(tmp_path):
    model_dir = constant_model(tmp_path / "teacher", stage="teacher", layout="ntu25")
    test = six_instances(seed=1)
    test.has_hq[:] = [True, False, True, True, True, True]     # a teacher is scored where HQ exists
    write_pack(tmp_path / "pack", six_instances(), test)
    result = CliRunner().invoke(evaluate_command, ["--model", str(model_dir), "--pack", str(tmp_path / "pack"),
                                                   "--out", str(tmp_path / "eval"), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["which"] == "hq" and saved["n"] == 5 and saved["op"] == 0.0
    assert saved["top1"] == pytest.approx(1 / 5) and saved["top5"] == pytest.approx(4 / 5)


def test_a_model_of_another_layout_is_refused(tmp_path):
    model_dir = constant_model(tmp_path / "model", layout="ntu25")   # a student model on ntu25
    write_pack(tmp_path / "pack", six_instances(), six_instances(seed=1))
    with pytest.raises(SkelpipeError, match="layout ntu25"):
        evaluate(model_dir, tmp_path / "pack", device="cpu")


class SumModel(torch.nn.Module):
    """Logits = per-channel sums of the input, so the occluded input can be read back."""

    def forward(self, x):
        return x.sum(dim=(2, 3, 4)), None, None


def test_predict_occludes_instance_i_with_its_seed_in_any_batching():
    x = torch.rand(7, 3, 5, 4, 2) + 0.1
    seeds = noise.instance_seeds(11, noise.sample_keys([f"s{i}" for i in range(7)]), "eval", "test")
    expected = noise.occlude(x, 0.5, seeds).sum(dim=(2, 3, 4))
    for batch_size in (1, 3, 7):
        got = predict(SumModel(), x, batch_size=batch_size, device="cpu", occlusion=Occlusion(0.5, seeds))
        torch.testing.assert_close(got, expected)
    assert not torch.allclose(expected, x.sum(dim=(2, 3, 4)))
    assert torch.equal(predict(SumModel(), x, occlusion=Occlusion(0.0, seeds)), x.sum(dim=(2, 3, 4)))


def test_topk_accuracy_with_fewer_classes_than_k():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.05, 0.15], [0.2, 0.3, 0.5]])
    labels = torch.tensor([1, 2, 0])
    assert topk_accuracy(logits, labels, (1, 2, 5)) == pytest.approx([1 / 3, 2 / 3, 1.0])


def test_debug_shows_the_cause_a_one_line_error_hides(tmp_path, capsys):
    from skelpipe.cli import main

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text("{not json")
    (model / "model.pt").write_bytes(b"")
    args = ["evaluate", "--model", str(model), "--pack", str(tmp_path), "--out", str(tmp_path / "o"),
            "--device", "cpu"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "model.json: not valid JSON" in err      # one line, no traceback
    with pytest.raises(SkelpipeError) as error:
        main(["--debug", *args])
    assert isinstance(error.value.__context__, json.JSONDecodeError) and not error.value.__suppress_context__
