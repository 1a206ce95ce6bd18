"""The action-specific part matrix E (docs/method.md, §Part matrix, eq. 12–13).

Every HQ training instance of D_pair is classified by the teacher five times, once with each
body part zeroed (all its joints, frames, persons and channels). ``E[c, p]`` is the fraction of
class-c instances misclassified with part p occluded, then each row goes through a softmax over
the five parts; a class without instances gets the uniform row 1/5.

``measure`` selects what is averaged per class and part before the softmax (a setting; the
paper's is the default):

- ``error`` (paper): 1 if the occluded instance is misclassified (argmax), else 0.
- ``prob_drop``: the drop of the teacher's true-class probability when the part is occluded
  (clean minus occluded) — graded, so it ranks parts even when the argmax never flips.

A teacher trained with ``part_dropout`` (``train``) has seen occluded parts, so its E measures
how much a class relies on a part rather than how surprised the teacher is by an input it never
saw. ``agreement`` scores an E against the parts a class is known to use (the demo's
generator parts).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skelpipe.core import atomic
from skelpipe.core.console import console, progress
from skelpipe.core.device import resolve
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fields import MAX_BATCH, bounded, check_ranges, from_section
from skelpipe.data.split import load_split
from skelpipe.learn.checkpoint import load_model
from skelpipe.skeleton.layouts import PARTS, Layout

MEASURES = ("error", "prob_drop")


@dataclass
class PartMatrixConfig:
    """Settings of the part-matrix stage (all part of its cache key; names as in pipelines/*.toml
    [partmatrix]). The device is not one: it changes where E is computed, not E."""
    batch_size: int = bounded(256, 1, MAX_BATCH)  # occluded copies per forward pass
    measure: str = bounded("error", choices=MEASURES)  # what is averaged per class and part (module docstring)

    def __post_init__(self):
        check_ranges("part matrix", self)

    @classmethod
    def from_dict(cls, config: dict) -> "PartMatrixConfig":
        return from_section("part matrix", cls, config)


def part_error_rates(labels, predictions, num_classes) -> tuple[torch.Tensor, torch.Tensor]:
    """(num_classes, 5) misclassification rate per class and occluded part, and the class counts."""
    labels = torch.as_tensor(labels).long().reshape(-1)
    predictions = torch.as_tensor(predictions).long()
    if predictions.shape != (labels.shape[0], len(PARTS)):
        raise ValueError(f"predictions must have shape ({labels.shape[0]}, 5), got {tuple(predictions.shape)}")
    wrong = (predictions != labels[:, None]).double()
    errors = torch.zeros(num_classes, len(PARTS), dtype=torch.float64).index_add_(0, labels, wrong)
    counts = torch.bincount(labels, minlength=num_classes)
    return errors / counts.clamp_min(1)[:, None], counts


def part_matrix_from_predictions(labels, predictions, num_classes) -> torch.Tensor:
    """E (num_classes, 5), float32: softmax over parts of the per-class error rates.

    ``labels (N,)`` true classes, ``predictions (N, 5)`` the teacher's class for each instance
    with part p occluded (parts in ``layouts.PARTS`` order).
    """
    return part_matrix_from_scores(*part_error_rates(labels, predictions, num_classes))


def part_matrix_from_scores(scores, counts) -> torch.Tensor:
    """E (num_classes, 5), float32: softmax over parts of per-class scores; uniform rows for
    classes without instances."""
    e = torch.softmax(torch.as_tensor(scores, dtype=torch.float64), dim=1)
    e[torch.as_tensor(counts) == 0] = 1.0 / len(PARTS)
    return e.float()


def part_probability_drops(labels, logits, num_classes) -> tuple[torch.Tensor, torch.Tensor]:
    """(num_classes, 5) mean drop of the true-class probability when part p is occluded, and
    the class counts. ``logits (N, 6, K)``: column 0 clean, column 1 + p with part p occluded."""
    labels = torch.as_tensor(labels).long().reshape(-1)
    probs = torch.as_tensor(logits).double().softmax(-1)
    true = probs.gather(2, labels.view(-1, 1, 1).expand(-1, probs.shape[1], 1))[..., 0]  # (N, 6)
    drops = true[:, :1] - true[:, 1:]
    sums = torch.zeros(num_classes, len(PARTS), dtype=torch.float64).index_add_(0, labels, drops)
    counts = torch.bincount(labels, minlength=num_classes)
    return sums / counts.clamp_min(1)[:, None], counts


def agreement(e, class_names, expected: dict) -> dict:
    """How many classes rank one of their ``expected`` parts (class name → part names) first in
    E: ``{"hits", "classes", "top_part": {class: part, or None for a tie}}`` over the classes
    ``expected`` names."""
    e = np.asarray(e)
    top = {}
    for i, c in enumerate(class_names):
        best = np.flatnonzero(np.isclose(e[i], e[i].max(), rtol=0, atol=1e-6))
        top[str(c)] = PARTS[int(best[0])] if len(best) == 1 else None  # a tie ranks no part first
    known = [c for c in top if c in expected]
    return {"hits": sum(top[c] in expected[c] for c in known), "classes": len(known), "top_part": top}


def part_keep_masks(layout: Layout) -> torch.Tensor:
    """(5, V) float: row p is 0 on the joints of part p and 1 elsewhere."""
    keep = torch.ones(len(PARTS), layout.num_joints)
    for p, name in enumerate(PARTS):
        keep[p, list(layout.parts[name])] = 0.0
    return keep


@torch.no_grad()
def occluded_logits(model, x, layout=None, batch_size=256, device="cpu", index=None) -> torch.Tensor:
    """(N, 6, K) float32: the model's logits for each instance, clean (column 0) and with part p
    zeroed (column 1 + p, parts in ``PARTS`` order).

    ``x (N, C, T, V, M)`` array or tensor (rows ``index`` only, when given). The model runs in
    eval mode; each forward holds ``batch_size`` copies (6 per instance). ``layout`` defaults to
    ``model.layout``.
    """
    layout = layout or model.layout
    device = torch.device(device)
    rows = np.arange(len(x)) if index is None else np.asarray(index)
    keep = torch.cat([torch.ones(1, layout.num_joints), part_keep_masks(layout)]).to(device)
    keep = keep[:, None, None, None, :, None]                            # (6, 1, 1, 1, V, 1)
    chunk = max(1, batch_size // len(keep))
    was_training = model.training
    model.eval()
    out = None
    try:
        with progress("instances", transient=True) as bar:
            task = bar.add_task("occluding parts", total=len(rows))
            for start in range(0, len(rows), chunk):
                sel = rows[start:start + chunk]
                xb = x[torch.as_tensor(sel)] if torch.is_tensor(x) else torch.from_numpy(
                    np.ascontiguousarray(x[sel]))
                xb = xb.to(device, torch.float32, non_blocking=True)
                occluded = (xb[None] * keep).flatten(0, 1)                     # (6*b, C, T, V, M)
                logits = model(occluded)[0].float().view(len(keep), len(sel), -1).transpose(0, 1).cpu()
                if out is None:
                    out = torch.empty(len(rows), len(keep), logits.shape[-1])
                out[start:start + len(sel)] = logits
                bar.advance(task, len(sel))
    finally:
        model.train(was_training)
    return out if out is not None else torch.zeros(0, len(keep), 0)


def occluded_predictions(model, x, layout=None, batch_size=256, device="cpu", index=None) -> torch.Tensor:
    """(N, 5) long: the model's predicted class for each instance with each part zeroed."""
    logits = occluded_logits(model, x, layout, batch_size, device, index)
    return logits[:, 1:].argmax(-1) if logits.numel() else torch.zeros(len(logits), len(PARTS), dtype=torch.long)


def plot_part_matrix(E, class_names, part_names=PARTS, path="part_matrix.png") -> Path:
    """Heat map actions × parts (as the paper's Fig. 5), written atomically as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    e = np.asarray(E, dtype=float)
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(len(e))]
    labels = [str(p).replace("_", " ") for p in part_names]
    fig = Figure(figsize=(1.2 * len(labels) + 3.0, 0.22 * len(e) + 1.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(e, aspect="auto", cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names, fontsize=7 if len(names) > 30 else 9)
    ax.set_xlabel("occluded body part")
    ax.set_ylabel("action")
    ax.set_title("action-specific part matrix E")
    if len(names) <= 40:
        for (r, c), v in np.ndenumerate(e):
            ax.text(c, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    path = Path(path)
    with atomic.replacing(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return path


def compute_part_matrix(teacher_dir, pack_dir, out_dir, config: PartMatrixConfig | None = None,
                        device="auto") -> np.ndarray:
    """Occlude each part of the HQ training instances (D_pair), classify with the teacher and
    write ``part_matrix.npy``, ``part_matrix.json`` (classes, parts, the per-class scores of
    ``measure`` and both measures' raw values, counts) and ``part_matrix.png`` to ``out_dir``.
    ``config``: the settings (default: ``PartMatrixConfig()``). Returns E (num_classes, 5)."""
    config = config or PartMatrixConfig()
    measure = config.measure

    device = resolve(device) if isinstance(device, str) else torch.device(device)
    model, meta = load_model(teacher_dir, device)
    sp = load_split(pack_dir, "train")
    hq_layout = sp.attrs.get("hq_layout")
    if hq_layout is not None and hq_layout != model.layout.name:
        raise SkelpipeError(f"{Path(teacher_dir) / 'model.json'}: teacher layout {model.layout.name} "
                            f"does not match the pack's HQ layout {hq_layout} ({pack_dir})")
    num_classes = meta["model"]["num_classes"]
    class_names = list(meta.get("class_names") or sp.attrs.get("class_names") or range(num_classes))
    index = np.flatnonzero(sp.has_hq)
    if len(index) == 0:
        raise SkelpipeError(f"{pack_dir}: the training split has no HQ instance (D_pair is empty)")
    labels = torch.from_numpy(sp.label[index])
    if int(labels.max()) >= num_classes or int(labels.min()) < 0:
        raise SkelpipeError(f"{pack_dir}: training labels span 0..{int(labels.max())} but the teacher "
                            f"({teacher_dir}) has {num_classes} classes")
    console.print(f"part matrix: teacher {teacher_dir}, {len(index)} HQ training instances × 5 parts")
    logits = occluded_logits(model, sp.hq, model.layout, config.batch_size, device, index=index)
    rates, counts = part_error_rates(labels, logits[:, 1:].argmax(-1), num_classes)
    drops, _ = part_probability_drops(labels, logits, num_classes)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    e = part_matrix_from_scores(rates if measure == "error" else drops, counts).numpy()
    if not np.isfinite(e).all():
        raise SkelpipeError(f"{teacher_dir}: the part matrix of this teacher is not finite (its outputs on "
                            f"{pack_dir} are NaN or inf?); nothing written")
    with atomic.replacing(out_dir / "part_matrix.npy") as tmp:
        np.save(tmp, e)
    info = {"parts": list(PARTS), "class_names": [str(c) for c in class_names],
            "E": e.round(6).tolist(), "measure": measure, "error_rates": rates.numpy().round(6).tolist(),
            "probability_drops": drops.numpy().round(6).tolist(),
            "counts": counts.tolist(), "teacher": str(teacher_dir), "pack": str(pack_dir),
            "num_instances": int(len(index))}
    atomic.write_text(out_dir / "part_matrix.json", json.dumps(info, indent=1) + "\n")
    plot_part_matrix(e, class_names, PARTS, out_dir / "part_matrix.png")
    console.print(f"part matrix written to {out_dir}/part_matrix.npy (+ .json, .png)")
    return e
