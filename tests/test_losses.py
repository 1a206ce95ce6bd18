"""The distillation losses against plain per-instance loops written from docs/method.md."""

import math

import pytest
import torch
import torch.nn.functional as F

from skelpipe.learn.losses import global_msc_loss, kl_distill_loss, pmsc_loss


def reference_msc(sim, labels_low, labels_high, pair_index, w):
    """docs/method.md eq. 8-11 instance by instance; sim(i, j) = phi(i, j) / tau (a 0-dim tensor)."""
    losses = []
    for i in range(len(labels_low)):
        y = int(labels_low[i])
        own = int(pair_index[i])
        pos = [j for j in range(len(labels_high)) if int(labels_high[j]) == y and j != own]
        neg = [j for j in range(len(labels_high)) if int(labels_high[j]) != y]
        cp = sum(torch.exp(sim(i, j)) for j in pos) / len(pos) if pos else 0.0
        cn = sum(torch.exp(sim(i, j)) for j in neg) / len(neg) if neg else 0.0
        if own >= 0:
            c_own = torch.exp(sim(i, own))
            losses.append(-torch.log((c_own + w * cp) / (c_own + w * cp + cn)))
        elif pos:
            losses.append(-torch.log(w * cp / (w * cp + cn)))
    return sum(losses) / len(losses) if losses else torch.zeros((), dtype=torch.float64)


def reference_pmsc(f_low, f_high, labels_low, labels_high, pair_index, e, w, tau):
    def sim(i, j):
        phi = sum(F.cosine_similarity(f_low[i, p], f_high[j, p], dim=0) * e[int(labels_low[i]), p]
                  for p in range(5))
        return phi / tau
    return reference_msc(sim, labels_low, labels_high, pair_index, w)


def reference_global(g_low, g_high, labels_low, labels_high, pair_index, w, tau):
    def sim(i, j):
        return F.cosine_similarity(g_low[i], g_high[j], dim=0) / tau
    return reference_msc(sim, labels_low, labels_high, pair_index, w)


def make_batch(seed, b, b_h, num_classes, labels_low=None, labels_high=None, paired=None, c=6):
    """Random features; the first ``paired`` LQ instances have counterparts at shuffled HQ rows."""
    g = torch.Generator().manual_seed(seed)
    f_low = torch.randn(b, 5, c, generator=g, dtype=torch.float64, requires_grad=True)
    f_high = torch.randn(b_h, 5, c, generator=g, dtype=torch.float64, requires_grad=True)
    if labels_high is None:
        labels_high = torch.randint(num_classes, (b_h,), generator=g)
    paired = min(b, b_h) if paired is None else paired
    rows = torch.randperm(b_h, generator=g)[:paired]
    pair_index = torch.full((b,), -1, dtype=torch.long)
    pair_index[:paired] = rows
    if labels_low is None:
        labels_low = torch.randint(num_classes, (b,), generator=g)
        labels_low[:paired] = labels_high[rows]
    pair_index = pair_index[torch.randperm(b, generator=g)]   # paired ones anywhere in the batch
    labels_low = labels_low.clone()
    labels_low[pair_index >= 0] = labels_high[pair_index[pair_index >= 0]]
    e = torch.softmax(torch.randn(num_classes, 5, generator=g, dtype=torch.float64), dim=1)
    return f_low, f_high, torch.as_tensor(labels_low), torch.as_tensor(labels_high), pair_index, e


def check_against_reference(batch, w=0.5, tau=1.0):
    f_low, f_high, yl, yh, pidx, e = batch
    got = pmsc_loss(f_low, f_high, yl, yh, pidx, e, w=w, tau=tau)
    want = reference_pmsc(f_low, f_high, yl, yh, pidx, e, w, tau)
    assert got.dtype == torch.float64
    assert abs(got.item() - float(want.detach() if torch.is_tensor(want) else want)) < 1e-6
    assert got.grad_fn is not None
    g_got = torch.autograd.grad(got, (f_low, f_high), allow_unused=True)
    g_got = [torch.zeros_like(t) if g is None else g for g, t in zip(g_got, (f_low, f_high))]
    assert all(torch.isfinite(g).all() for g in g_got)
    if want.requires_grad:
        g_want = torch.autograd.grad(want, (f_low, f_high), allow_unused=True)
        for a, b, t in zip(g_got, g_want, (f_low, f_high)):
            torch.testing.assert_close(a, torch.zeros_like(t) if b is None else b, atol=1e-9, rtol=1e-7)
    return got


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("w,tau", [(0.5, 1.0), (1.0, 0.2), (0.1, 3.0)])
def test_pmsc_matches_loop_on_random_batches(seed, w, tau):
    """Mixed paired and solitary instances, 3 classes (some sets empty by chance)."""
    check_against_reference(make_batch(seed, b=10, b_h=7, num_classes=3, paired=5), w, tau)


def test_pmsc_empty_positive_sets():
    """Every HQ label distinct: paired instances have no positive besides their own counterpart,
    solitary ones have none at all and must not count."""
    batch = make_batch(1, b=6, b_h=4, num_classes=8, labels_high=torch.tensor([0, 1, 2, 3]),
                       labels_low=torch.tensor([0, 1, 2, 3, 5, 6]), paired=4)
    loss = check_against_reference(batch)
    assert loss.item() > 0


def test_pmsc_empty_negative_sets():
    """One class only: CN = 0, so paired instances have zero loss and solitary ones too."""
    batch = make_batch(2, b=5, b_h=4, num_classes=1, paired=3)
    loss = check_against_reference(batch)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)


def test_pmsc_all_solitary_without_positives_is_a_connected_zero():
    batch = make_batch(3, b=4, b_h=3, num_classes=6, labels_high=torch.tensor([0, 1, 2]),
                       labels_low=torch.tensor([3, 4, 5, 3]), paired=0)
    loss = check_against_reference(batch)
    assert loss.item() == 0.0
    f_low, f_high, yl, yh, pidx, e = batch
    pmsc_loss(f_low, f_high, yl, yh, pidx, e).backward()
    assert f_low.grad is not None and torch.all(f_low.grad == 0)


def test_pmsc_solitary_only_with_positives():
    batch = make_batch(4, b=6, b_h=5, num_classes=2, paired=0)
    check_against_reference(batch, w=0.5, tau=0.5)


def test_pmsc_empty_hq_batch():
    f_low = torch.randn(3, 5, 4, requires_grad=True)
    loss = pmsc_loss(f_low, torch.zeros(0, 5, 4), torch.tensor([0, 1, 2]), torch.zeros(0, dtype=torch.long),
                     torch.full((3,), -1), torch.full((3, 5), 0.2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(f_low.grad == 0)


def test_pmsc_hand_computed_single_pair():
    """One paired instance, one negative; cosines chosen by hand (E uniform 1/5)."""
    f_low = torch.zeros(1, 5, 2, dtype=torch.float64)
    f_low[..., 0] = 1.0
    f_high = torch.zeros(2, 5, 2, dtype=torch.float64)
    f_high[0, :, 0] = 1.0      # own counterpart: cos 1 on every part -> phi 1
    f_high[1, :, 1] = 1.0      # negative: cos 0 -> phi 0
    e = torch.full((2, 5), 0.2, dtype=torch.float64)
    loss = pmsc_loss(f_low, f_high, torch.tensor([0]), torch.tensor([0, 1]), torch.tensor([0]), e)
    assert loss.item() == pytest.approx(-math.log(math.e / (math.e + 1.0)), abs=1e-12)


def test_pmsc_extreme_temperature_stays_finite():
    f_low, f_high, yl, yh, pidx, e = make_batch(5, b=8, b_h=6, num_classes=3, paired=4)
    loss = pmsc_loss(f_low.float(), f_high.float(), yl, yh, pidx, e.float(), tau=1e-3)
    assert torch.isfinite(loss)
    grads = torch.autograd.grad(loss, (f_low, f_high), allow_unused=True)
    assert all(g is None or torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("seed", range(4))
def test_global_msc_matches_loop(seed):
    f_low, f_high, yl, yh, pidx, _ = make_batch(10 + seed, b=9, b_h=6, num_classes=3, paired=4)
    g_low = f_low[:, 0].detach().clone().requires_grad_(True)
    g_high = f_high[:, 0].detach().clone().requires_grad_(True)
    got = global_msc_loss(g_low, g_high, yl, yh, pidx, w=0.7, tau=0.5)
    want = reference_global(g_low, g_high, yl, yh, pidx, 0.7, 0.5)
    assert abs(got.item() - float(want.detach() if torch.is_tensor(want) else want)) < 1e-6
    g_got = torch.autograd.grad(got, (g_low, g_high))
    g_want = torch.autograd.grad(want, (g_low, g_high))
    for a, b in zip(g_got, g_want):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def test_global_msc_equals_pmsc_with_one_repeated_part_and_uniform_weights():
    """Global MSC is PMSC with one "part": five copies of g with E = 1/5 give the same phi."""
    f_low, f_high, yl, yh, pidx, _ = make_batch(20, b=7, b_h=5, num_classes=2, paired=3)
    g_low, g_high = f_low[:, 0], f_high[:, 0]
    e = torch.full((2, 5), 0.2, dtype=torch.float64)
    a = global_msc_loss(g_low, g_high, yl, yh, pidx)
    b = pmsc_loss(g_low[:, None].expand(-1, 5, -1), g_high[:, None].expand(-1, 5, -1), yl, yh, pidx, e)
    assert a.item() == pytest.approx(b.item(), abs=1e-12)


@pytest.mark.parametrize("T", [1.0, 2.0])
def test_kl_matches_loop(T):
    g = torch.Generator().manual_seed(0)
    student = torch.randn(6, 4, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 4, generator=g, dtype=torch.float64)
    pidx = torch.tensor([2, -1, 0, -1, 1, -1])
    got = kl_distill_loss(student, teacher, pidx, T=T)
    terms = []
    for i in range(6):
        if pidx[i] < 0:
            continue
        p = torch.softmax(teacher[pidx[i]] / T, 0)
        q = torch.softmax(student[i] / T, 0)
        terms.append(sum(p[k] * torch.log(p[k] / q[k]) for k in range(4)) * T * T)
    want = sum(terms) / len(terms)
    assert abs(got.item() - want.item()) < 1e-10
    (g_got,) = torch.autograd.grad(got, student)
    (g_want,) = torch.autograd.grad(want, student)
    torch.testing.assert_close(g_got, g_want)
    assert torch.all(g_got[pidx < 0] == 0)


def test_kl_no_paired_instance_is_a_connected_zero():
    student = torch.randn(3, 4, requires_grad=True)
    loss = kl_distill_loss(student, torch.randn(2, 4), torch.full((3,), -1))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.all(student.grad == 0)


def test_kl_is_zero_for_identical_distributions():
    logits = torch.randn(4, 5)
    assert kl_distill_loss(logits, logits, torch.arange(4)).item() == pytest.approx(0.0, abs=1e-6)
