"""The student's distillation term (docs/method.md, §Losses): the frozen teacher, its outputs
over the HQ training data (computed once: the teacher is frozen and its input is not
augmented), the part matrix E, and the loss of ``kd`` (``kl``, ``global-msc``, ``pmsc``, or the
rivals ``skd`` and ``pe-gcn``), and the backward pass (SKD's gradient revision).
"""

import functools
from typing import NamedTuple

import torch
import torch.distributed as dist

from skelpipe.core.device import fits, holding
from skelpipe.core.errors import SkelpipeError
from skelpipe.learn import losses
from skelpipe.learn.checkpoint import load_model
from skelpipe.skeleton import layouts


class Outputs(NamedTuple):
    """A network's outputs for a batch: logits (B, K), global feature (B, C), part features (B, 5, C)."""

    logits: torch.Tensor
    glob: torch.Tensor
    parts: torch.Tensor


class Distiller:
    """The distillation term: the frozen teacher (or its outputs over the HQ training data,
    computed once), the part matrix E and the loss of ``cfg.kd``."""

    def __init__(self, cfg, teacher, teacher_meta, hq, cached, part_e, labels, teacher_width):
        self.cfg, self.teacher, self.hq, self.cached, self.part_e = cfg, teacher, hq, cached, part_e
        self.teacher_key = teacher_meta["config_key"]
        self.teacher_width = teacher_width
        self.projection = None  # a PartProjection the student trains (projection = "linear")
        self.predictor = None   # PE-GCN's W, trained with the student
        self.student = None     # the student network (SKD reads its joint features)
        self.terms = None       # SKD: the batch's separate terms, for the gradient revision
        self.joints = None      # SKD: (student joints, teacher joints) compared one to one
        self.labels = labels
        self.loss = functools.partial(distillation_loss, cfg)

    @classmethod
    def of(cls, cfg, data, teacher_dir, part_matrix, run) -> "Distiller":
        """The distillation term of ``cfg`` for the training data ``data``, on ``run``'s device."""
        device = run.device
        if teacher_dir is None:
            raise SkelpipeError(f"--kd {cfg.kd} needs --teacher (a trained teacher directory)")
        attrs = data.split.attrs
        teacher, meta = load_model(teacher_dir, device)
        teacher.requires_grad_(False)
        net = meta["model"]
        if net["layout"] != attrs["hq_layout"] or net["num_classes"] != data.num_classes:
            raise SkelpipeError(
                f"{teacher_dir}: teacher ({net['layout']}, {net['num_classes']} classes) does not "
                f"match the pack's HQ data ({attrs['hq_layout']}, {data.num_classes})")
        if len(data.pair_pool) == 0:
            raise SkelpipeError(f"--kd {cfg.kd}: the training split has no paired (HQ) instance to distil from")
        width = teacher.fc.in_features
        online = cfg.teacher_features == "online" or cfg.kd == "skd"  # SKD reads joint features: online
        hq = holding(data.split.hq, device, online and fits(device, data.split.hq))
        cached = None
        if not online:
            cached = teacher_outputs(teacher, hq, data.pair_pool, cfg.eval_batch_size, device, run.amp)
            teacher = hq = None  # not needed any more
        part_e = None
        if cfg.kd == "pmsc":
            if part_matrix is None:
                raise SkelpipeError("--kd pmsc needs --part-matrix (see skelpipe partmatrix)")
            part_e = torch.as_tensor(part_matrix, dtype=torch.float32)
            if part_e.shape != (data.num_classes, 5):
                raise SkelpipeError(f"part matrix: shape {tuple(part_e.shape)}, expected ({data.num_classes}, 5)")
            part_e = part_e.to(device)
        distiller = cls(cfg, teacher, meta, hq, cached, part_e, data.labels, width)
        if cfg.kd == "skd":
            distiller.joints = skd_joints(attrs["lq_layout"], attrs["hq_layout"])
        return distiller

    def attach(self, model, device):
        """What the distillation term adds to the student ``model`` while it trains (optimised,
        checkpointed and synced with it, left out of the saved model): PMSC's projection, PE-GCN's
        W; SKD keeps the student's joint features."""
        self.student = model
        if self.cfg.kd == "pmsc" and self.cfg.projection == "linear":
            self.projection = model.kd_projection = PartProjection(model.fc.in_features, self.teacher_width).to(device)
        if self.cfg.kd == "pe-gcn":
            self.predictor = model.kd_projection = torch.nn.Linear(
                model.fc.in_features, self.teacher_width, bias=False).to(device)
        if self.cfg.kd == "skd":
            if not (hasattr(model, "keep_joint_features") and hasattr(self.teacher, "keep_joint_features")):
                raise SkelpipeError("--kd skd: the student's or the teacher's backbone gives no joint features")
            if self.cfg.skd_revision and dist.is_initialized() and dist.get_world_size() > 1:
                raise SkelpipeError("--kd skd: the gradient revision runs in one process; "
                                    "set skd_revision = false to train under torchrun")
            model.keep_joint_features = self.teacher.keep_joint_features = True

    def __call__(self, out: Outputs, y, hq_idx, pair_index, run) -> torch.Tensor:
        """The distillation term of one batch (the student's outputs ``out``, labels ``y``),
        given its HQ batch ``hq_idx``."""
        if self.cached is not None:
            teacher = Outputs(*(c[hq_idx] for c in self.cached))
        else:
            with torch.no_grad(), run.autocast():
                hx = self.hq[hq_idx.to(self.hq.device)].to(run.device, non_blocking=True).float()
                teacher = Outputs(*(t.float() for t in self.teacher(hx)))
        if self.cfg.kd == "skd":
            self.terms = self.skd_terms(out.logits.float(), teacher.logits, pair_index)
            return sum(self.terms)
        if self.cfg.kd == "pe-gcn":
            return losses.pe_gcn_loss(out.glob.float(), teacher.glob, pair_index, self.predictor.weight,
                                      tau=self.cfg.tau if self.cfg.pe_gcn_score == "cosine" else None)
        parts = out.parts.float() if self.projection is None else self.projection(out.parts.float())
        student = Outputs(out.logits.float(), out.glob.float(), parts)
        return self.loss(student, teacher, y, self.labels[hq_idx], pair_index, self.part_e)


    def skd_terms(self, logits, t_logits, pair_index):
        """SKD's (KL, distance, node) terms on the joints both networks see (``self.joints``)."""
        z_s, z_t = self.student.joint_features, self.teacher.joint_features.float()
        (low, high), m = self.joints, z_s.shape[0] // logits.shape[0]
        z_s, z_t = z_s[..., low].float(), z_t[..., high]
        z_s, z_t = z_s.view(logits.shape[0], m, *z_s.shape[1:]), z_t.view(t_logits.shape[0], m, *z_t.shape[1:])
        if z_s.shape[2:] != z_t.shape[2:]:
            raise SkelpipeError(f"--kd skd: the student's joint features {tuple(z_s.shape[2:4])} (channels, "
                                f"frames) differ from the teacher's {tuple(z_t.shape[2:4])}; SKD compares "
                                "them one to one (give both the same channels)")
        return losses.skd_terms(logits, t_logits, z_s, z_t, pair_index, T=self.cfg.kl_temperature)

    def backward(self, model, ce, loss, alpha, diagnose: bool):
        """Backpropagate the step's ``loss`` = ce + alpha × kd into ``model``'s gradients: under SKD
        (``skd_revision``) with each term's gradient revised against the cross-entropy's; the norms
        of the two gradients when ``diagnose`` (once an epoch), else None."""
        if self.terms is not None and self.cfg.skd_revision:
            norms = revised_backward(model, ce, [alpha * t for t in self.terms])
            return norms if diagnose else None
        if diagnose:
            return gradient_norms(model, ce, loss)
        loss.backward()
        return None


def skd_joints(lq_layout: str, hq_layout: str) -> tuple[list[int], list[int]]:
    """The joints SKD compares, in the student's and in the teacher's layout: every joint when the
    two layouts are one, else the joints both layouts name (``layouts.shared_joints``)."""
    low, high = layouts.get(lq_layout), layouts.get(hq_layout)
    if low.name == high.name:
        return list(range(low.num_joints)), list(range(high.num_joints))
    joints = layouts.shared_joints(low, high)
    if len(joints[0]) < 2:
        raise SkelpipeError(f"--kd skd: layouts {lq_layout} and {hq_layout} share {len(joints[0])} "
                            "joint(s); SKD needs at least 2 to compare")
    return joints


def revise(g_ce: torch.Tensor, g_terms: list[torch.Tensor]) -> torch.Tensor:
    """SKD's gradient revision on flat gradients: a term's gradient at an obtuse angle to the
    cross-entropy's loses its component along it, ``g - (g·g_ce / |g_ce|²) g_ce``; the step's
    gradient is ``g_ce`` plus the (revised) terms'."""
    total = g_ce.clone()
    norm_sq = (g_ce @ g_ce).clamp_min(torch.finfo(g_ce.dtype).tiny)
    for g in g_terms:
        dot = g @ g_ce
        total += torch.where(dot < 0, g - dot / norm_sq * g_ce, g)
    return total


def _flat_grad(loss, params) -> torch.Tensor:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).flatten() for p, g in zip(params, grads)])


def revised_backward(model, ce, terms) -> tuple[float, float]:
    """Set ``model``'s gradients to ``revise`` of the cross-entropy's and the terms' gradients
    (one backward pass each); the norms of the cross-entropy's and of the terms' revised sum."""
    params = [p for p in model.parameters() if p.requires_grad]
    g_ce = _flat_grad(ce, params)
    total = revise(g_ce, [_flat_grad(t, params) for t in terms])
    start = 0
    for p in params:
        p.grad = total[start:start + p.numel()].view_as(p).clone()
        start += p.numel()
    return float(g_ce.norm()), float((total - g_ce).norm())


def gradient_norms(model, ce, loss) -> tuple[float, float]:
    """Backpropagate ``loss`` = ce + alpha × kd and return the L2 norms of the gradients of
    ``ce`` and of ``alpha × kd`` with respect to the weights: the cross-entropy's gradient is
    taken on its own first (one extra backward pass), the distillation term's is the rest."""
    params = [p for p in model.parameters() if p.requires_grad]
    g_ce = torch.autograd.grad(ce, params, retain_graph=True, allow_unused=True)
    loss.backward()
    ce_sq = kd_sq = 0.0
    for p, g in zip(params, g_ce):
        if p.grad is None:
            continue
        g = torch.zeros_like(p.grad) if g is None else g
        ce_sq += float((g.float() ** 2).sum())
        kd_sq += float(((p.grad - g).float() ** 2).sum())
    return ce_sq ** 0.5, kd_sq ** 0.5


class PartProjection(torch.nn.Module):
    """A learned linear map per body part from the student's part features to the teacher's
    channels (``projection = "linear"``; docs/method.md, §Student initialisation and projection):
    the identity where the two widths match, so training starts from the paper's loss."""

    def __init__(self, width_in: int, width_out: int, parts: int = 5):
        super().__init__()
        if width_in == width_out:
            weight = torch.eye(width_out).repeat(parts, 1, 1)
        else:
            weight = torch.randn(parts, width_out, width_in) / width_in ** 0.5
        self.weight = torch.nn.Parameter(weight)

    def forward(self, parts: torch.Tensor) -> torch.Tensor:
        """(B, P, C_in) → (B, P, C_out)."""
        return torch.einsum("bpc,poc->bpo", parts, self.weight)


@torch.no_grad()
def teacher_outputs(teacher, x, index, batch_size, device, amp):
    """The frozen teacher's (logits, global, parts) for the instances ``index`` of ``x``, in
    float32, as tensors over all N instances of ``x`` (zero rows elsewhere)."""
    teacher.eval()
    out = None
    for start in range(0, len(index), batch_size):
        idx = torch.as_tensor(index[start:start + batch_size], device=x.device)
        xb = x[idx].to(device, non_blocking=True).float()
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            results = teacher(xb)
        if out is None:
            out = [torch.zeros((x.shape[0],) + r.shape[1:], device=device) for r in results]
        for o, r in zip(out, results):
            o[idx.to(device)] = r.float()
    return tuple(out)


def distillation_loss(cfg, student: Outputs, teacher: Outputs, y, t_labels, pair_index, part_e):
    """The distillation term of ``cfg.kd`` for one batch (float32 outputs; ``y`` and ``t_labels``:
    the labels of the LQ and of the HQ batch)."""
    if cfg.kd == "kl":
        return losses.kl_distill_loss(student.logits, teacher.logits, pair_index, T=cfg.kl_temperature)
    if cfg.kd == "global-msc":
        return losses.global_msc_loss(student.glob, teacher.glob, y, t_labels, pair_index, w=cfg.w, tau=cfg.tau)
    return losses.pmsc_loss(student.parts, teacher.parts, y, t_labels, pair_index, part_e, w=cfg.w, tau=cfg.tau)
