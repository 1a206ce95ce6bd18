"""Distillation losses of docs/method.md (§Losses): part-level multi-sample contrastive (PMSC), its global
variant, KL distillation, and the rivals of the paper's Table 3 that differ only in their loss (SKD's
joint-level terms, PE-GCN's predictive encoding) — batched over the instances and safe for empty sets.

An LQ batch of B instances is matched against an HQ batch of B_H instances. ``pair_index[i]``
is the row of instance i's own HQ counterpart in the HQ batch, or -1 when i is solitary.
The contrastive losses are evaluated in log-sum-exp form; an empty set is handled by masks
(never by ``log(0)``), so neither the loss nor its gradient can become NaN or infinite.
"""

import math

import torch
import torch.nn.functional as F


def _masked_logsumexp(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log sum exp(x)`` over the last dim where ``mask`` holds, and whether any entry did.

    Rows with an empty mask get the finite stand-in 0 (the caller masks them out); the
    gradient is finite everywhere and zero for masked-out entries.
    """
    x = x.masked_fill(~mask, float("-inf"))
    shift = x.amax(dim=-1, keepdim=True).detach()
    shift = torch.where(torch.isfinite(shift), shift, torch.zeros_like(shift))
    total = torch.exp(x - shift).sum(dim=-1)
    nonempty = mask.any(dim=-1)
    total = torch.where(nonempty, total, torch.ones_like(total))
    return torch.log(total) + shift.squeeze(-1), nonempty


def _masked_logmeanexp(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log mean exp(x)`` over the masked entries of each row (0 stand-in when none)."""
    lse, nonempty = _masked_logsumexp(x, mask)
    return lse - torch.log(mask.sum(dim=-1).clamp_min(1).to(x.dtype)), nonempty


def _zero_like_inputs(*tensors: torch.Tensor) -> torch.Tensor:
    """A zero that is still connected to the inputs' graphs (so ``backward()`` works)."""
    return sum(t.sum() * 0.0 for t in tensors)


def msc_from_similarity(s: torch.Tensor, labels_low: torch.Tensor, labels_high: torch.Tensor,
                        pair_index: torch.Tensor, w: float = 0.5) -> torch.Tensor:
    """The multi-sample contrastive loss (eq. 8–11) from log-similarities ``s = phi / tau`` (B, B_H).

    C(i, j) = exp(s[i, j]); P_i = same label, not i's own counterpart; N_i = other labels.
    CP_i / CN_i are means over P_i / N_i (0 when empty). Paired i:
    ``-log((C_own + w CP) / (C_own + w CP + CN))``; solitary i: ``-log(w CP / (w CP + CN))``,
    defined only when P_i is non-empty. Mean over the instances whose loss is defined.
    """
    b, b_h = s.shape
    if b == 0 or b_h == 0:
        return _zero_like_inputs(s)
    pair_index = pair_index.to(s.device).long()
    same = labels_low.to(s.device)[:, None] == labels_high.to(s.device)[None, :]
    own = torch.arange(b_h, device=s.device)[None, :] == pair_index[:, None]
    paired = pair_index >= 0
    log_cp, has_p = _masked_logmeanexp(s, same & ~own)
    log_cn, has_n = _masked_logmeanexp(s, ~same)
    s_own = s.gather(1, pair_index.clamp_min(0)[:, None]).squeeze(1)
    use_p = has_p & (w > 0)
    log_w = math.log(w) if w > 0 else 0.0
    terms = torch.stack([s_own, log_cp + log_w, log_cn], dim=1)           # own, w*CP, CN (logs)
    num_mask = torch.stack([paired, use_p, torch.zeros_like(paired)], dim=1)
    den_mask = torch.stack([paired, use_p, has_n], dim=1)
    log_num, defined = _masked_logsumexp(terms, num_mask)
    log_den, _ = _masked_logsumexp(terms, den_mask)
    per_instance = torch.where(defined, log_den - log_num, torch.zeros_like(log_num))
    return per_instance.sum() / defined.sum().clamp_min(1).to(s.dtype)


def _float32_at_least(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.promote_types(t.dtype, torch.float32))


def pmsc_loss(f_low, f_high, labels_low, labels_high, pair_index, part_matrix, w=0.5, tau=1.0):
    """Part-level multi-sample contrastive loss (docs/method.md, §PMSC, eq. 4–11).

    ``f_low (B, 5, C)`` student part features of the LQ batch, ``f_high (B_H, 5, C)`` teacher
    part features of the HQ batch, ``part_matrix (num_classes, 5)`` E. With
    ``phi(i, j) = sum_p cos(f_low[i, p], f_high[j, p]) * E[y_i, p]`` and ``C = exp(phi / tau)``.
    """
    with torch.autocast(f_low.device.type, enabled=False):
        f_low, f_high = _float32_at_least(f_low), _float32_at_least(f_high).to(f_low.dtype)
        if f_low.shape[0] == 0 or f_high.shape[0] == 0:
            return _zero_like_inputs(f_low, f_high)
        e = torch.as_tensor(part_matrix, device=f_low.device, dtype=f_low.dtype)
        weights = e[labels_low.to(f_low.device).long()]                       # (B, 5)
        low = F.normalize(f_low, dim=-1, eps=1e-8) * weights[:, :, None]
        high = F.normalize(f_high, dim=-1, eps=1e-8)
        s = low.flatten(1) @ high.flatten(1).T / tau                          # phi / tau
        return msc_from_similarity(s, labels_low, labels_high, pair_index, w)


def global_msc_loss(g_low, g_high, labels_low, labels_high, pair_index, w=0.5, tau=1.0):
    """The same contrastive loss on global features (B, C) / (B_H, C): one part, weight 1."""
    with torch.autocast(g_low.device.type, enabled=False):
        g_low, g_high = _float32_at_least(g_low), _float32_at_least(g_high).to(g_low.dtype)
        if g_low.shape[0] == 0 or g_high.shape[0] == 0:
            return _zero_like_inputs(g_low, g_high)
        s = F.normalize(g_low, dim=-1, eps=1e-8) @ F.normalize(g_high, dim=-1, eps=1e-8).T / tau
        return msc_from_similarity(s, labels_low, labels_high, pair_index, w)


def kl_distill_loss(student_logits, teacher_logits, pair_index, T=1.0):
    """KL(softmax(teacher/T) || softmax(student/T)) * T², averaged over the paired instances.

    The teacher row of LQ instance i is ``teacher_logits[pair_index[i]]``; solitary instances
    (-1) are left out; 0 (still connected to the inputs) when no instance is paired.
    """
    with torch.autocast(student_logits.device.type, enabled=False):
        student = _float32_at_least(student_logits)
        teacher = _float32_at_least(teacher_logits).to(student.dtype)
        if student.shape[0] == 0 or teacher.shape[0] == 0:
            return _zero_like_inputs(student, teacher)
        pair_index = pair_index.to(student.device).long()
        paired = pair_index >= 0
        log_p_teacher = F.log_softmax(teacher / T, dim=-1)[pair_index.clamp_min(0)]
        log_p_student = F.log_softmax(student / T, dim=-1)
        kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=-1)
        kl = torch.where(paired, kl, torch.zeros_like(kl))
        return kl.sum() / paired.sum().clamp_min(1).to(kl.dtype) * T * T


def skd_distance_loss(z_low: torch.Tensor, z_high: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """SKD's structural (edge) term (docs/method.md, §Rival distillation terms): per row, the
    Euclidean distances between every two nodes (a joint at a frame, its C channels) of the
    student's joint features ``z_low (R, C, T, V)`` and of the teacher's ``z_high``, each divided by
    the mean of its non-zero distances, compared by smooth L1 (mean over the node pairs, then over
    the rows). The teacher's side carries no gradient."""
    with torch.autocast(z_low.device.type, enabled=False):
        if z_low.shape[0] == 0:
            return _zero_like_inputs(z_low)

        def distances(z):
            nodes = _float32_at_least(z).permute(0, 3, 2, 1).flatten(1, 2)      # (R, V*T, C)
            sq = nodes.pow(2).sum(-1)
            d = (sq[:, :, None] + sq[:, None, :] - 2 * nodes @ nodes.transpose(1, 2)).clamp_min(eps).sqrt()
            d = d * (1 - torch.eye(d.shape[1], device=d.device, dtype=d.dtype))  # a node's own distance is 0
            mean = d.sum((1, 2)) / (d > 0).sum((1, 2)).clamp_min(1)
            return d / mean.clamp_min(eps)[:, None, None]

        with torch.no_grad():
            t = distances(z_high)
        s = distances(z_low)
        return F.smooth_l1_loss(s, t.to(s.dtype), reduction="none").mean((1, 2)).mean()


def skd_terms(logits, t_logits, z_low, z_high, pair_index, T=1.0):
    """SKD's three distillation terms for one batch: (KL of the logits, structural distance term,
    node term), each over the paired instances only. ``z_low (B, M, C, T', V)`` are the student's
    joint features of the LQ batch, ``z_high (B_H, M, C, T', V)`` the teacher's of the HQ batch on
    the same joints; the node term is the mean squared difference of every feature (all zero,
    still connected to the inputs, when no instance is paired)."""
    pair_index = pair_index.to(z_low.device).long()
    paired = pair_index >= 0
    kl = kl_distill_loss(logits, t_logits, pair_index, T=T)
    if not bool(paired.any()):
        zero = _zero_like_inputs(z_low, z_high)
        return kl, zero, zero
    low = _float32_at_least(z_low[paired]).flatten(0, 1)                        # (R, C, T', V)
    high = _float32_at_least(z_high[pair_index[paired]]).flatten(0, 1).to(low.dtype)
    return kl, skd_distance_loss(low, high), F.mse_loss(low, high)


def pe_gcn_loss(g_low, g_high, pair_index, weight, tau=None):
    """PE-GCN's predictive-encoding term (InfoNCE, docs/method.md): a score ``s[i, j]`` of LQ
    instance i's prediction ``W g_low[i]`` (``W = weight (C_high, C_low)``) against HQ instance j;
    each paired i must pick its own HQ counterpart among the HQ batch:
    ``-log softmax_j(s[i, :])[pair_index[i]]``, averaged over the paired instances. ``tau=None``:
    CPC's log-bilinear score ``g_high[j] · W g_low[i]``; else ``cos(W g_low[i], g_high[j]) / tau``."""
    with torch.autocast(g_low.device.type, enabled=False):
        g_low = _float32_at_least(g_low)
        g_high, weight = g_high.to(g_low.dtype), weight.to(g_low.dtype)
        if g_low.shape[0] == 0 or g_high.shape[0] == 0:
            return _zero_like_inputs(g_low, g_high, weight)
        pair_index = pair_index.to(g_low.device).long()
        paired = pair_index >= 0
        predicted = g_low @ weight.T                                             # (B, C_high)
        if tau is None:
            scores = predicted @ g_high.T                                        # (B, B_H)
        else:
            scores = F.normalize(predicted, dim=-1, eps=1e-8) @ F.normalize(g_high, dim=-1, eps=1e-8).T / tau
        nll = F.cross_entropy(scores, pair_index.clamp_min(0), reduction="none")
        nll = torch.where(paired, nll, torch.zeros_like(nll))
        return nll.sum() / paired.sum().clamp_min(1).to(nll.dtype)
