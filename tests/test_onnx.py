"""ONNX export (dynamic batch and time) against PyTorch, and predict through ONNX Runtime."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

pytest.importorskip("onnxruntime", reason="the onnx extra is not installed (pip install 'skelpipe[onnx]')")
pytest.importorskip("onnxscript", reason="the onnx extra is not installed (pip install 'skelpipe[onnx]')")

from skelpipe.cli import cli  # noqa: E402
from skelpipe.core.errors import SkelpipeError  # noqa: E402
from skelpipe.learn.checkpoint import load_model, save_model  # noqa: E402
from skelpipe.learn.models import ModelConfig, build_model  # noqa: E402
from skelpipe.pipeline.onnx import OnnxModel  # noqa: E402


def trained_like(tmp_path, backbone, stage="student", layout="coco17"):
    """A model with weights of a trained network's scale (random, not the tiny initial ones)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone, layout, 3, 6, channels=(8, 16), temporal_kernel=3))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.eval()
    out = tmp_path / f"{backbone}-{stage}"
    save_model(out, model, {"class_names": [f"a{i}" for i in range(6)], "T": 16, "stage": stage, "kd": "none",
                            "config_key": "k", "data": {}})
    return out


@pytest.mark.parametrize("backbone,stage", [("stgcn", "student"), ("stgcn", "teacher"), ("agcn", "student"),
                                            ("efficientgcn-b0", "student"), ("pa-resgcn-b19", "student"),
                                            ("pr-gcn", "student")])
def test_onnx_runtime_matches_pytorch_at_any_batch_and_length(backbone, stage, tmp_path):
    layout = "ntu25" if stage == "teacher" else "coco17"
    model_dir = trained_like(tmp_path, backbone, stage, layout)
    result = CliRunner().invoke(cli, ["export", "onnx", "--model", str(model_dir), "--out",
                                      str(tmp_path / "m.onnx")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    runner = OnnxModel(tmp_path / "m.onnx")
    assert runner.meta["model"]["backbone"] == backbone and runner.meta["stage"] == stage
    model, _ = load_model(model_dir)
    v = 25 if layout == "ntu25" else 17
    for shape in [(1, 3, 16, v, 2), (3, 3, 40, v, 2), (2, 3, 9, v, 2)]:
        x = torch.randn(*shape)
        with torch.no_grad():
            expected = model(x)[0].numpy()
        got = runner.logits(x.numpy())
        assert np.abs(expected).max() > 0.1  # outputs of a useful scale, so the tolerance means something
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-4)


def test_onnx_files_that_are_not_skelpipe_models_are_refused(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not onnx")
    with pytest.raises(SkelpipeError, match="not an ONNX model ONNX Runtime can load"):
        OnnxModel(tmp_path / "junk.onnx")
    with pytest.raises(SkelpipeError, match="no such ONNX model"):
        OnnxModel(tmp_path / "missing.onnx")


def test_predict_with_an_onnx_student(tmp_path, monkeypatch):
    """The same top-5 and probabilities from the exported file as from the training directory."""
    from conftest import coco_people, fake_extraction, stick_figure_video

    from skelpipe.commands.predict import predict_command

    model_dir = trained_like(tmp_path, "stgcn")
    assert CliRunner().invoke(cli, ["export", "onnx", "--model", str(model_dir), "--out",
                                    str(tmp_path / "s.onnx")]).exit_code == 0
    fake_extraction(monkeypatch, coco_people(1, people=2))
    video = stick_figure_video(tmp_path / "in.mp4")
    runs = {}
    for name, model in (("torch", model_dir), ("onnx", tmp_path / "s.onnx")):
        r = CliRunner().invoke(predict_command, [str(video), "--model", str(model), "--backbone",
                                                 "mobilenetv3small", "--device", "cpu", "--json"],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        runs[name] = json.loads(r.stdout)
    assert [t["action"] for t in runs["onnx"]["top"]] == [t["action"] for t in runs["torch"]["top"]]
    np.testing.assert_allclose([t["probability"] for t in runs["onnx"]["top"]],
                               [t["probability"] for t in runs["torch"]["top"]], atol=1e-5)
    assert set(runs["onnx"]["timings_s"]) == {"extract", "normalise", "classify"}
