"""The student's distillation term (docs/method.md, §Losses): the frozen teacher, its outputs
over the HQ training data (computed once: the teacher is frozen and its input is not
augmented), the part matrix E, and the loss of ``kd`` (``kl``, ``global-msc`` or ``pmsc``).
"""

import functools

import torch

from skelpipe.core.device import fits, holding
from skelpipe.core.errors import SkelpipeError
from skelpipe.learn import losses
from skelpipe.learn.checkpoint import load_model


class Distiller:
    """The distillation term: the frozen teacher (or its outputs over the HQ training data,
    computed once), the part matrix E and the loss of ``cfg.kd``."""

    def __init__(self, cfg, teacher, teacher_meta, hq, cached, part_e, labels, teacher_width):
        self.cfg, self.teacher, self.hq, self.cached, self.part_e = cfg, teacher, hq, cached, part_e
        self.teacher_key = teacher_meta["config_key"]
        self.teacher_width = teacher_width
        self.projection = None  # a PartProjection the student trains (projection = "linear")
        self.labels = labels
        self.loss = functools.partial(distillation_loss, cfg)

    @classmethod
    def of(cls, cfg, data,  teacher_dir, part_matrix, device, amp) -> "Distiller":
        if teacher_dir is None:
            raise SkelpipeError(f"--kd {cfg.kd} needs --teacher (a trained teacher directory)")
        attrs = data.split.attrs
        teacher, meta = load_model(teacher_dir, device)
        teacher.requires_grad_(False)
        if meta["layout"] != attrs["hq_layout"] or meta["num_classes"] != data.num_classes:
            raise SkelpipeError(
                f"{teacher_dir}: teacher ({meta['layout']}, {meta['num_classes']} classes) does not "
                f"match the pack's HQ data ({attrs['hq_layout']}, {data.num_classes})")
        if len(data.pair_pool) == 0:
            raise SkelpipeError(f"--kd {cfg.kd}: the training split has no paired (HQ) instance to distil from")
        width = teacher.fc.in_features
        hq = holding(data.split.hq, device,
                     cfg.teacher_features == "online" and fits(device, data.split.hq))
        cached = None
        if cfg.teacher_features == "cached":
            cached = teacher_outputs(teacher, hq, data.pair_pool, cfg.eval_batch_size, device, amp)
            teacher = hq = None  # not needed any more
        part_e = None
        if cfg.kd == "pmsc":
            if part_matrix is None:
                raise SkelpipeError("--kd pmsc needs --part-matrix (see skelpipe partmatrix)")
            part_e = torch.as_tensor(part_matrix, dtype=torch.float32)
            if part_e.shape != (data.num_classes, 5):
                raise SkelpipeError(f"part matrix: shape {tuple(part_e.shape)}, expected ({data.num_classes}, 5)")
            part_e = part_e.to(device)
        return cls(cfg, teacher, meta, hq, cached, part_e, data.labels, width)

    def __call__(self, logits, glob, parts, y, hq_idx, pair_index, device, amp) -> torch.Tensor:
        """The distillation term of one batch, given its HQ batch ``hq_idx``."""
        if self.cached is not None:
            t_logits, t_glob, t_parts = (c[hq_idx] for c in self.cached)
        else:
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
                hx = self.hq[hq_idx.to(self.hq.device)].to(device, non_blocking=True).float()
                t_logits, t_glob, t_parts = (t.float() for t in self.teacher(hx))
        parts = parts.float() if self.projection is None else self.projection(parts.float())
        return self.loss(logits.float(), glob.float(), parts, y, t_logits, t_glob, t_parts,
                         self.labels[hq_idx], pair_index, self.part_e)


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


def distillation_loss(cfg, logits, glob, parts, y, t_logits, t_glob, t_parts, t_labels, pair_index, part_e):
    """The distillation term of ``cfg.kd`` for one batch (float32 inputs)."""
    if cfg.kd == "kl":
        return losses.kl_distill_loss(logits, t_logits, pair_index, T=cfg.kl_temperature)
    if cfg.kd == "global-msc":
        return losses.global_msc_loss(glob, t_glob, y, t_labels, pair_index, w=cfg.w, tau=cfg.tau)
    return losses.pmsc_loss(parts, t_parts, y, t_labels, pair_index, part_e, w=cfg.w, tau=cfg.tau)
