"""ST-GCN and 2s-AGCN: shapes for every layout, the graph product, pooling, and overfitting; every
backbone built from its ModelConfig, which model.json stores."""

import json

import numpy as np
import pytest
import torch

from skelpipe.core.errors import SkelpipeError
from skelpipe.learn.checkpoint import load_model, save_model
from skelpipe.learn.models import BACKBONES, ModelConfig, build_model
from skelpipe.learn.models.stgcn import block_strides, graph_conv
from skelpipe.skeleton import layouts

TINY = (8, 8, 16, 16)


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_stgcn_shapes_every_layout(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig("stgcn", layout=name, in_channels=3, num_classes=7, channels=TINY))
    v = layouts.get(name).num_joints
    x = torch.randn(3, 3, 16, v, 2)
    logits, glob, parts = model(x)
    assert logits.shape == (3, 7) and glob.shape == (3, 16) and parts.shape == (3, 5, 16)
    assert model.features(x).shape == (6, 16, 8, v)   # one stride-2 transition: T 16 -> 8
    assert model.layout.name == name


def test_graph_conv_matches_reference_conv_then_einsum():
    """The reference ConvTemporalGraphical: conv to K*C channels, einsum nkctv,kvw->nctw."""
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 17)
    weight, bias, a = torch.randn(3 * 4, 5, 1, 1), torch.randn(3 * 4), torch.randn(3, 17, 17)
    y = torch.nn.functional.conv2d(x, weight, bias).view(2, 3, 4, 6, 17)
    ref = torch.einsum("nkctv,kvw->nctw", y, a)
    torch.testing.assert_close(graph_conv(x, weight, bias, a), ref)
    out = graph_conv(x.contiguous(memory_format=torch.channels_last), weight, bias, a)
    torch.testing.assert_close(out, ref)
    assert out.is_contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(ref, dtype=torch.float64)
    inputs = [t.double().requires_grad_() for t in (x, weight, bias, a)]
    want = torch.autograd.grad(torch.einsum("nkctv,kvw->nctw", torch.nn.functional.conv2d(
        *inputs[:3]).view(2, 3, 4, 6, 17), inputs[3]), inputs, grad)
    got = torch.autograd.grad(graph_conv(*inputs), inputs, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_default_strides():
    assert block_strides((64, 64, 64, 64, 128, 128, 128, 256, 256, 256)) == [1, 1, 1, 1, 2, 1, 1, 2, 1, 1]


@pytest.mark.parametrize("name", sorted(layouts.LAYOUTS))
def test_agcn_shapes_every_layout(name):
    torch.manual_seed(0)
    model = build_model(ModelConfig("agcn", layout=name, in_channels=3, num_classes=5, channels=TINY, dropout=0.1))
    v = layouts.get(name).num_joints
    x = torch.randn(2, 3, 16, v, 2)
    logits, glob, parts = model(x)
    assert logits.shape == (2, 5) and glob.shape == (2, 16) and parts.shape == (2, 5, 16)
    assert model.features(x).shape == (4, 16, 8, v)


def test_default_network_is_the_reference_stack():
    model = build_model(ModelConfig("stgcn", "ntu25", in_channels=3, num_classes=60))
    assert len(model.blocks) == 10 and model.blocks[0].residual is None
    assert [b.tcn[2].stride[0] for b in model.blocks] == [1, 1, 1, 1, 2, 1, 1, 2, 1, 1]
    assert [b.tcn[2].out_channels for b in model.blocks] == [64, 64, 64, 64, 128, 128, 128, 256, 256, 256]
    assert all(b.tcn[2].kernel_size == (9, 1) for b in model.blocks)
    assert model.data_bn.num_features == 2 * 25 * 3
    assert all(torch.equal(e, torch.ones(3, 25, 25)) for e in model.edge_importance)
    assert model.fc.in_features == 256 and model.fc.out_features == 60
    x = torch.randn(1, 3, 32, 25, 2)
    assert model.features(x).shape == (2, 256, 8, 25)


def test_pooling_is_the_mean_over_time_joints_persons():
    """Global = mean of z over T', V, M; part p = mean of z over T', the joints of p, and M."""
    torch.manual_seed(0)
    model = build_model(ModelConfig("stgcn", "coco17", num_classes=3, channels=(4, 8))).eval()
    x = torch.randn(2, 3, 8, 17, 2)
    z = model.features(x).view(2, 2, 8, 4, 17)                        # N, M, C, T', V
    logits, glob, parts = model(x)
    torch.testing.assert_close(glob, z.mean(dim=(1, 3, 4)))
    for p, name in enumerate(layouts.PARTS):
        joints = list(model.layout.parts[name])
        torch.testing.assert_close(parts[:, p], z[..., joints].mean(dim=(1, 3, 4)))
    torch.testing.assert_close(logits, model.fc(glob))


def test_input_of_another_layout_is_refused():
    model = build_model(ModelConfig("stgcn", "coco17", channels=(4,)))
    with pytest.raises(ValueError, match="coco17"):
        model(torch.randn(1, 3, 8, 25, 2))


def test_edge_importance_and_adjacency_reach_the_graph():
    """Zeroing every edge importance leaves the graph convolutions no input: the output no
    longer depends on x."""
    torch.manual_seed(0)
    model = build_model(ModelConfig("stgcn", "penn13", num_classes=3, channels=(4, 4))).eval()
    with torch.no_grad():
        for e in model.edge_importance:
            e.zero_()
    a, b = torch.randn(2, 1, 3, 8, 13, 2)
    torch.testing.assert_close(model(a)[0], model(b)[0])


def synthetic_set(n_per_class=3, classes=4, t=16, layout="penn13", seed=0):
    """Each class moves a different body part at its own frequency; small noise."""
    g = torch.Generator().manual_seed(seed)
    lay = layouts.get(layout)
    xs, ys = [], []
    time = torch.arange(t, dtype=torch.float32)
    for c in range(classes):
        joints = list(lay.parts[layouts.PARTS[c % 5]])
        for _ in range(n_per_class):
            x = 0.1 * torch.randn(3, t, lay.num_joints, 2, generator=g)
            x[c % 3, :, joints, 0] += torch.sin(time * (c + 1) * 0.4)[:, None]
            xs.append(x)
            ys.append(c)
    return torch.stack(xs), torch.tensor(ys)


@pytest.mark.parametrize("backbone", ["stgcn", "agcn"])
def test_small_network_overfits_a_tiny_set(backbone):
    torch.manual_seed(0)
    x, y = synthetic_set()
    model = build_model(ModelConfig(backbone, "penn13", num_classes=4, channels=(16, 16, 32)))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(x)[0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert (model.train()(x)[0].argmax(1) == y).all()
    for m in model.modules():              # running statistics = this set's: eval agrees too
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x)
    assert (model.eval()(x)[0].argmax(1) == y).all()


def test_agcn_adjacency_points_bones_inward():
    from skelpipe.learn.models.agcn import agcn_adjacency
    from skelpipe.learn.models.graph import hop_distance

    lay = layouts.get("kinect20")                       # a tree: every joint but the centre has one parent
    a = agcn_adjacency(lay)
    assert a.shape == (3, 20, 20)
    assert np.array_equal(a[0], np.eye(20))
    depth = hop_distance(lay, max_hop=20)[:, lay.center]
    want = np.zeros((20, 20))
    for i, j in lay.edges:
        child, parent = (i, j) if depth[i] > depth[j] else (j, i)
        want[parent, child] = 1.0                       # each child has one parent: weight 1
    np.testing.assert_allclose(a[1], want)
    children = want.sum(1)
    np.testing.assert_allclose(a[2], want.T / np.where(children > 0, children, 1)[None, :])


@pytest.mark.parametrize("backbone", ["stgcn", "agcn"])
def test_bf16_autocast_runs_and_stays_close(backbone):
    torch.manual_seed(0)
    model = build_model(ModelConfig(backbone, "coco17", num_classes=4, channels=(8, 16))).eval()
    x = torch.randn(2, 3, 16, 17, 2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, glob, parts = model(x)
    assert torch.isfinite(logits).all() and torch.isfinite(parts).all()
    torch.testing.assert_close(logits.float(), model(x)[0], atol=0.1, rtol=0.1)


def test_part_pool_present_ignores_an_empty_person_slot():
    torch.manual_seed(0)
    x = torch.randn(3, 3, 12, 17, 2)
    x[:2, ..., 1] = 0                                  # instances 0 and 1 have one person
    literal = build_model(ModelConfig("stgcn", "coco17", num_classes=4, channels=(8, 16))).eval()
    present = build_model(ModelConfig("stgcn", "coco17", num_classes=4, channels=(8, 16), part_pool="present")).eval()
    present.load_state_dict(literal.state_dict())
    logits_a, glob_a, parts_a = literal(x)
    logits_b, glob_b, parts_b = present(x)
    # the classifier and the global feature are the same; only the part features differ
    assert torch.equal(logits_a, logits_b) and torch.equal(glob_a, glob_b)
    torch.testing.assert_close(parts_a[2], parts_b[2])          # both persons present: same
    assert not torch.allclose(parts_a[:2], parts_b[:2])
    # "present" = the part features of the first person alone
    z = present.features(x).mean(dim=2).view(3, 2, 16, 17)[:, 0]
    torch.testing.assert_close(parts_b[:2], torch.einsum("ncv,pv->npc", z, present.part_pool)[:2])
    with pytest.raises(ValueError, match="part_pool"):
        build_model(ModelConfig("stgcn", "coco17", part_pool="max"))


def test_every_registered_backbone_is_built_from_its_config():
    assert BACKBONES == ("stgcn", "agcn", "efficientgcn-b0", "efficientgcn-b2", "efficientgcn-b4", "pa-resgcn-b19",
                         "pr-gcn", "3s-ra-gcn")
    for backbone in BACKBONES:
        cfg = ModelConfig(backbone, "penn13", num_classes=4, channels=(8, 16))
        model = build_model(cfg)
        assert model.config == cfg and model.layout.name == "penn13"
        assert model(torch.randn(2, 3, 16, 13, 2))[0].shape == (2, 4)
    with pytest.raises(SkelpipeError, match="unknown backbone 'gcn'; known: stgcn, agcn, efficientgcn-b0"):
        build_model(ModelConfig("gcn"))


def test_model_json_rebuilds_the_network_also_from_the_top_level_keys_of_older_files(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig("agcn", "penn13", 3, 4, (8, 16), 3, 1)
    save_model(tmp_path / "m", build_model(cfg), {"stage": "teacher"})
    path = tmp_path / "m" / "model.json"
    meta = json.loads(path.read_text())
    assert meta == {"model": {**cfg.to_dict(), "channels": [8, 16]}, "stage": "teacher"}
    model, _ = load_model(tmp_path / "m")
    assert model.config == cfg
    # older files: the section's keys at the top level, without dropout and part_pool (then 0 and "mean")
    older = {k: v for k, v in meta["model"].items() if k not in ("dropout", "part_pool")}
    path.write_text(json.dumps({**older, "stage": "teacher"}))
    again, meta = load_model(tmp_path / "m")
    assert again.config == cfg and meta["model"]["layout"] == "penn13"
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
    path.write_text(json.dumps({"model": {**older, "width": 2}}))
    with pytest.raises(SkelpipeError, match=r"model.json: the model section lacks dropout, part_pool; has unknown width$"):
        load_model(tmp_path / "m")
