"""3S-RA-GCN: stream count and size, CAM masking against a per-instance loop written from the
paper, the summed prediction, the per-stream loss, every layout, and a training step."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skelpipe.learn.models import ModelConfig, build_model, classification_loss
from skelpipe.learn.models.ragcn import RAGCN
from skelpipe.skeleton import layouts


def _params(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_three_independent_st_gcn_streams_at_ntu_shapes():
    """Three ST-GCNs sharing nothing (the released code's ``stgcn_stream``): 3 x ST-GCN's
    3,098,982 trainable parameters at 60 classes, ntu25, 3 channels."""
    model = build_model(ModelConfig("3s-ra-gcn", "ntu25", 3, 60))
    assert len(model.streams) == 3
    assert _params(model) == 3 * _params(build_model(ModelConfig("stgcn", "ntu25", 3, 60))) == 9_296_946
    shared = {id(p) for p in model.streams[0].parameters()} & {id(p) for p in model.streams[1].parameters()}
    assert not shared


def _reference_masks(model: RAGCN, x: torch.Tensor) -> torch.Tensor:
    """The input masks (S, N, T, V, M), one instance and one point at a time, from the paper: a
    stream's CAM at (t', v, m) is sum_c w[class, c] f[c, t', v, m] for the class the streams so
    far predict; stream s keeps only the points no stream k < s activated."""
    s_count = len(model.streams)
    n, _, frames, v_count, m_count = x.shape
    out = torch.ones(s_count, n, frames, v_count, m_count)
    for i in range(n):
        xi = x[i:i + 1]
        total = 0
        for k, stream in enumerate(model.streams[:-1]):
            keep = out[k, i]
            f = stream.features(xi * keep[None, None])                 # (M, C, T', V)
            total = total + stream.fc(f.mean(dim=(2, 3)).mean(dim=0, keepdim=True))[0]
            w = stream.fc.weight[int(total.argmax())]
            t_feat = f.shape[2]
            cam = torch.zeros(t_feat, v_count, m_count)
            for t in range(t_feat):
                for v in range(v_count):
                    for m in range(m_count):
                        cam[t, v, m] = float((w * f[m, :, t, v]).sum())
            if model.cam_norm == "softmax":
                activated = torch.softmax(cam.flatten(), 0).view_as(cam) > 1 - model.threshold
            else:
                activated = cam >= model.threshold * cam.max()
            nxt = out[k, i].clone()
            for t in range(frames):
                for v in range(v_count):
                    for m in range(m_count):
                        if activated[t * t_feat // frames, v, m]:
                            nxt[t, v, m] = 0
            out[k + 1, i] = nxt
    return out


@pytest.mark.parametrize("cam_norm,threshold", [("max", 0.5), ("softmax", 0.3)])
def test_stream_masks_exclude_the_points_earlier_streams_activate(cam_norm, threshold):
    torch.manual_seed(0)
    lay = layouts.get("coco17")
    model = RAGCN(ModelConfig("3s-ra-gcn", "coco17", 3, 5, channels=(8, 16, 16)), cam_norm=cam_norm,
                  threshold=threshold).eval()
    with torch.no_grad():  # a trained network's peaked CAMs, so that the softmax rule activates a point
        for stream in model.streams:
            stream.fc.weight.mul_(1e7)  # features here are ~1e-5 (the reference init)
    x = torch.randn(3, 3, 12, lay.num_joints, 2)
    with torch.no_grad():
        _, _, _, masks = model.run_streams(x)
        expected = _reference_masks(model, x)
    masks = masks[:, :, 0]
    assert masks.shape == expected.shape == (3, 3, 12, 17, 2)
    assert torch.equal(masks, expected)
    assert torch.equal(masks[0], torch.ones_like(masks[0]))            # stream 1 sees everything
    assert (masks[2] <= masks[1]).all()                                # masked once, masked after
    assert 0 < (masks[1] == 0).float().mean() < 0.5                    # some points go, most stay
    assert ((masks[2] == 0) & (masks[1] == 1)).any()                   # stream 2 adds its own


def test_prediction_is_the_sum_of_the_streams_and_loss_adds_each_stream():
    torch.manual_seed(1)
    model = build_model(ModelConfig("3s-ra-gcn", "penn13", 3, 4, channels=(8, 8, 16)))
    x, y = torch.randn(5, 3, 12, 13, 2), torch.tensor([0, 1, 2, 3, 0])
    logits, glob, parts = model(x)
    streams, globs, stream_parts, _ = model.run_streams(x)
    assert torch.allclose(logits, streams.sum(0), atol=1e-5)
    assert glob.shape == (5, 16) and parts.shape == (5, 5, 16)
    assert torch.allclose(glob, globs.mean(0), atol=1e-6) and torch.allclose(parts, stream_parts.mean(0), atol=1e-6)
    # the released code's loss: CE of the summed logits plus each stream's own CE
    expected = F.cross_entropy(logits, y) + sum(F.cross_entropy(s, y) for s in model.stream_logits)
    assert torch.allclose(classification_loss(model, logits, y), expected)
    assert len(model.stream_logits) == 3
    plain = build_model(ModelConfig("stgcn", "penn13", 3, 4, channels=(8, 8, 16)))
    out = plain(x)[0]
    assert torch.equal(classification_loss(plain, out, y), F.cross_entropy(out, y))
    model.eval()
    model(x)
    with pytest.raises(RuntimeError):
        model.stream_loss(y)


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_every_layout(name):
    torch.manual_seed(0)
    v = layouts.get(name).num_joints
    model = build_model(ModelConfig("3s-ra-gcn", layout=name, in_channels=3, num_classes=7, channels=(8, 16)))
    logits, glob, parts = model(torch.randn(2, 3, 16, v, 2))
    assert logits.shape == (2, 7) and glob.shape == (2, 16) and parts.shape == (2, 5, 16)
    assert model.features(torch.randn(2, 3, 16, v, 2)).shape == (4, 16, 8, v)


def test_every_stream_learns():
    torch.manual_seed(0)
    model = build_model(ModelConfig("3s-ra-gcn", "penn13", 3, 4, channels=(8, 8, 16)))
    logits, _, _ = model(torch.randn(3, 3, 12, 13, 2))
    classification_loss(model, logits, torch.tensor([0, 1, 2])).backward()
    dead = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.any())]
    assert not dead


def test_training_as_a_student_and_with_distillation(tmp_path):
    """A student without KD trains and reloads; asked for kd = pmsc it works too (the streams'
    mean features against the teacher's), with a 3S-RA-GCN teacher."""
    from skelpipe.bench.inputs import random_split
    from skelpipe.learn.checkpoint import load_model, save_model
    from skelpipe.learn.config import TrainConfig
    from skelpipe.learn.train import train_split

    split = random_split(12, "ntu25", frames=12, num_classes=3, seed=1)
    cfg = TrainConfig(stage="student", kd="none", backbone="3s-ra-gcn", channels=(8, 8), epochs=2,
                      batch_size=6, device="cpu", op=0.3, eval_every=1)
    out = train_split(cfg, split, tmp_path / "s", test=split)
    first, last = (json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines())
    # at the start every term is near chance: four cross-entropies (the sum's, three streams') of ln 3
    assert first["ce"] == pytest.approx(4 * np.log(3), abs=0.1)
    assert np.isfinite(last["loss"]) and last["kd"] == 0 and "test_top1" in last
    model, meta = load_model(out)
    assert meta["model"]["backbone"] == "3s-ra-gcn" and len(model.streams) == 3

    teacher = build_model(ModelConfig("3s-ra-gcn", "ntu25", 3, 3, channels=(8, 8)))  # a 3S-RA-GCN teacher serves too
    save_model(tmp_path / "t", teacher, {"stage": "teacher", "config_key": "t"})
    kd_cfg = TrainConfig(stage="student", kd="pmsc", backbone="3s-ra-gcn", channels=(8, 8), epochs=1,
                         batch_size=6, device="cpu", op=0.3)
    out = train_split(kd_cfg, split, tmp_path / "kd", teacher_dir=tmp_path / "t",
                      part_matrix=torch.full((3, 5), 0.2))
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["kd"] > 0 and np.isfinite(record["loss"])


@pytest.mark.parametrize("name", ["ntu", "penn", "sysu", "demo-table3", "penn-cpu-table3"])
def test_every_table_3_has_the_rival_row(name, tmp_path):
    from skelpipe.pipeline.cache import Cache
    from skelpipe.pipeline.config import load_pipeline
    from skelpipe.pipeline.plan import Plan

    plan = Plan(load_pipeline(name), Cache(tmp_path), None, "cpu").build()
    rows = {(m["backbone"], m["kd"], m["op"]) for _, m in plan.records
            if m.get("table") == 3 and m["model"] == "student" and m["backbone"] == "3s-ra-gcn"}
    assert rows == {("3s-ra-gcn", "none", 0.0)}


def test_report_shows_the_papers_figure_beside_the_rival():
    from skelpipe.pipeline.report import markdown

    row = {"aggregate": True, "table": 3, "setting": "heterogeneous", "hq_source": "annotated",
           "lq_source": "r152", "benchmark": "default", "model": "student", "kd": "none", "op": 0.0,
           "hq_fraction": 1.0, "lq_data": "all", "backbone": "3s-ra-gcn", "top1": 80.0, "top5": 96.0, "n": 3,
           "n_test": 100, "top1_sd": 1.0, "top5_sd": 0.5}
    md = markdown([row], "penn", "penn")
    assert "| Student (w/o KD) | r152 | 3S-RA-GCN | 0 | 80.00 ± 1.00 [paper 77.43] | 96.00 ± 0.50 [paper 95.60]" in md


def test_exports_to_onnx_with_its_masks(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from skelpipe.learn.checkpoint import save_model
    from skelpipe.pipeline.onnx import OnnxModel, export

    torch.manual_seed(0)
    model = build_model(ModelConfig("3s-ra-gcn", "coco17", 3, 4, channels=(8, 16), num_persons=1)).eval()
    with torch.no_grad():  # peaked CAMs, so that the exported graph masks something
        for stream in model.streams:
            stream.fc.weight.mul_(1e7)
    save_model(tmp_path / "m", model, {"stage": "student", "config_key": "m"})
    x = torch.randn(2, 3, 12, 17, 1)
    with torch.no_grad():
        masks = model.run_streams(x)[3]
        expected = model(x)[0].numpy()
    assert (masks[1:] == 0).any()
    onnx_model = OnnxModel(export(tmp_path / "m", tmp_path / "m.onnx", {}, frames=16))
    np.testing.assert_allclose(onnx_model.logits(x.numpy()), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())
