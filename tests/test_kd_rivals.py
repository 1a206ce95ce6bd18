"""The rivals of the paper's Table 3 that differ from PMSC only in the distillation term: SKD
(Bian et al., TIP 2021) and PE-GCN (Yoon, Yu, Jeon, Applied Intelligence 2022). Each loss is
pinned against a per-instance loop written from the paper (SKD: from its authors' released
code), the gradient revision against its formula, and a short training of each runs."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skelpipe.core.errors import SkelpipeError
from skelpipe.learn import losses
from skelpipe.learn.checkpoint import load_model
from skelpipe.learn.config import TrainConfig
from skelpipe.learn.distill import revise, revised_backward, skd_joints
from skelpipe.learn.train import train_split as train
from skelpipe.skeleton import layouts
from tests.test_train import OVERFIT, make_split, metrics


def _pdist_loop(nodes):
    """Distances between every two nodes, one pair at a time, divided by their non-zero mean."""
    n = len(nodes)
    d = torch.zeros(n, n, dtype=torch.float64)
    for a in range(n):
        for b in range(n):
            if a != b:
                d[a, b] = torch.sqrt(((nodes[a] - nodes[b]) ** 2).sum())
    return d / d[d > 0].mean()


def _smooth_l1(x, y):
    diff = (x - y).abs()
    return torch.where(diff < 1, 0.5 * diff ** 2, diff - 0.5).mean()


def _skd_loop(logits, t_logits, z_low, z_high, pair_index):
    """SKD's KL, distance and node terms, one paired instance (and person slot) at a time."""
    kl, dist, mse, rows, paired = 0.0, 0.0, 0.0, 0, 0
    for i, j in enumerate(pair_index.tolist()):
        if j < 0:
            continue
        p_t = torch.softmax(t_logits[j], 0)
        kl += float((p_t * (torch.log(p_t) - torch.log_softmax(logits[i], 0))).sum())
        paired += 1
        for m in range(z_low.shape[1]):
            s, t = z_low[i, m], z_high[j, m]                           # (C, T, V)
            nodes_s = [s[:, tt, v] for v in range(s.shape[2]) for tt in range(s.shape[1])]
            nodes_t = [t[:, tt, v] for v in range(t.shape[2]) for tt in range(t.shape[1])]
            dist += float(_smooth_l1(_pdist_loop(nodes_s), _pdist_loop(nodes_t)))
            mse += float(((s - t) ** 2).sum())
            rows += 1
    numel = rows * z_low[0, 0].numel()
    return kl / paired, dist / rows, mse / numel


def test_skd_terms_equal_a_per_instance_loop():
    g = torch.Generator().manual_seed(0)
    b, b_h, m, c, t, v, k = 5, 4, 2, 6, 3, 4, 7
    logits, t_logits = torch.randn(b, k, generator=g), torch.randn(b_h, k, generator=g)
    z_low = torch.relu(torch.randn(b, m, c, t, v, generator=g)).double()
    z_high = torch.relu(torch.randn(b_h, m, c, t, v, generator=g)).double()
    pair_index = torch.tensor([2, -1, 0, 3, -1])
    got = losses.skd_terms(logits.double(), t_logits.double(), z_low, z_high, pair_index)
    want = _skd_loop(logits.double(), t_logits.double(), z_low, z_high, pair_index)
    for a, w in zip(got, want):
        assert float(a) == pytest.approx(w, rel=1e-9)
    assert float(got[1]) > 0.01 and float(got[2]) > 0.1   # not trivially zero


def test_skd_distance_term_ignores_scale_and_is_zero_for_the_same_structure():
    z = torch.randn(3, 4, 5, 6, dtype=torch.float64)
    assert float(losses.skd_distance_loss(2.5 * z, z)) == pytest.approx(0.0, abs=1e-12)
    assert float(losses.skd_distance_loss(z, torch.randn_like(z))) > 0.01


def test_skd_terms_are_finite_with_dead_features_and_no_pairs():
    z_low = torch.zeros(3, 1, 4, 2, 3, requires_grad=True)
    z_high = torch.zeros(2, 1, 4, 2, 3)
    logits = torch.randn(3, 5, requires_grad=True)
    terms = losses.skd_terms(logits, torch.randn(2, 5), z_low, z_high, torch.tensor([0, 1, -1]))
    sum(terms).backward()
    assert all(torch.isfinite(x) for x in terms) and torch.isfinite(z_low.grad).all()
    none = losses.skd_terms(logits, torch.randn(2, 5), z_low, z_high, torch.tensor([-1, -1, -1]))
    assert [float(x.detach()) for x in none] == [0.0, 0.0, 0.0]
    sum(none).backward()                                           # still connected to the graph


def _pe_gcn_loop(g_low, g_high, pair_index, weight, tau=None):
    """-log f(own) / sum_j f(j): CPC's log-bilinear f = exp(g_high[j]^T W g_low[i]), or (tau) the
    exponentiated cosine of the prediction W g_low[i] and g_high[j] over tau."""
    total, n = 0.0, 0
    for i, own in enumerate(pair_index.tolist()):
        if own < 0:
            continue
        pred = weight @ g_low[i]
        if tau is None:
            f = [math.exp(float(g_high[j] @ pred)) for j in range(len(g_high))]
        else:
            f = [math.exp(float(g_high[j] @ pred / (g_high[j].norm() * pred.norm())) / tau)
                 for j in range(len(g_high))]
        total += -math.log(f[own] / sum(f))
        n += 1
    return total / n


@pytest.mark.parametrize("tau", [None, 0.5])
def test_pe_gcn_loss_equals_a_per_instance_loop(tau):
    g = torch.Generator().manual_seed(1)
    g_low, g_high = torch.randn(6, 5, generator=g).double(), torch.randn(4, 3, generator=g).double()
    weight = torch.randn(3, 5, generator=g).double() * 0.5
    pair_index = torch.tensor([1, 3, -1, 0, -1, 2])
    got = losses.pe_gcn_loss(g_low, g_high, pair_index, weight, tau=tau)
    assert float(got) == pytest.approx(_pe_gcn_loop(g_low, g_high, pair_index, weight, tau), rel=1e-9)
    assert float(losses.pe_gcn_loss(g_low, g_high, torch.full((6,), -1), weight, tau=tau)) == 0.0


def test_revision_removes_only_the_conflicting_component():
    g_ce = torch.tensor([1.0, 0.0, 0.0])
    agree, conflict = torch.tensor([0.5, 1.0, 0.0]), torch.tensor([-2.0, 0.0, 3.0])
    total = revise(g_ce, [agree, conflict])
    # the conflicting term loses its part along g_ce: (-2, 0, 3) - (-2) (1, 0, 0) = (0, 0, 3)
    assert torch.allclose(total, g_ce + agree + torch.tensor([0.0, 0.0, 3.0]))
    assert float(revise(g_ce, [conflict]) @ g_ce) >= float(g_ce @ g_ce) - 1e-6  # never against ce


def test_revised_backward_sets_the_revised_gradients():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    ce = F.cross_entropy(model(x), torch.tensor([0, 1, 0, 1]))
    term = -3.0 * F.cross_entropy(model(x), torch.tensor([0, 1, 0, 1]))   # pulls straight against ce
    revised_backward(model, ce, [term])
    params = list(model.parameters())
    g_ce = torch.cat([g.flatten() for g in torch.autograd.grad(
        F.cross_entropy(model(x), torch.tensor([0, 1, 0, 1])), params)])
    got = torch.cat([p.grad.flatten() for p in params])
    assert torch.allclose(got, g_ce, atol=1e-6)                    # the opposed term is removed entirely


def test_skd_joints_same_layout_all_else_shared_by_name():
    assert skd_joints("coco17", "coco17") == (list(range(17)), list(range(17)))
    low, high = skd_joints("coco17", "ntu25")
    coco, ntu = layouts.get("coco17"), layouts.get("ntu25")
    assert len(low) == 12 and [coco.joints[i] for i in low] == [ntu.joints[i] for i in high]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    out = tmp_path_factory.mktemp("teacher") / "run"
    train(TrainConfig(stage="teacher", **{**OVERFIT, "epochs": 6}), make_split(paired_fraction=2 / 3), out)
    return out


@pytest.mark.parametrize("kd,variant", [("skd", dict(skd_revision=True)), ("skd", dict(skd_revision=False)),
                                        ("pe-gcn", dict(pe_gcn_score="cosine")), ("pe-gcn", dict(pe_gcn_score="bilinear"))])
def test_each_rival_trains_and_its_extras_stay_out_of_the_model(kd, variant, teacher, tmp_path):
    cfg = TrainConfig(stage="student", kd=kd, op=0.1, **variant, **{**OVERFIT, "epochs": 12})
    train(cfg, make_split(paired_fraction=2 / 3), tmp_path / "s", teacher_dir=teacher)
    m = metrics(tmp_path / "s")
    assert m[-1]["ce"] < 0.5 * m[0]["ce"] and m[-1]["kd"] < m[0]["kd"]
    for r in m:
        assert r["loss"] == pytest.approx(r["ce"] + cfg.alpha * r["kd"], rel=1e-5) and r["kd"] > 0
        assert np.isfinite(r["grad_kd"]) and r["grad_kd"] > 0
    model, meta = load_model(tmp_path / "s")
    assert meta["kd"] == kd and not hasattr(model, "kd_projection")


def test_skd_refuses_a_student_of_other_width(teacher, tmp_path):
    cfg = TrainConfig(stage="student", kd="skd", **{**OVERFIT, "epochs": 1, "channels": (8, 8, 16, 32)})
    with pytest.raises(SkelpipeError, match="joint features .* differ from the teacher's"):
        train(cfg, make_split(paired_fraction=2 / 3), tmp_path / "s", teacher_dir=teacher)
