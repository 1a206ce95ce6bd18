"""Evaluation: top-1 / top-5 / per-class accuracy, confusion matrix and per-instance predictions.

Teachers are evaluated on the HQ test data, students on the LQ test data occluded with the
same probability (OP) as in training, one fixed draw per instance
(``noise.test_seeds(test_seed, ids, split)``: a hash of the pack's ``test_seed``, the split
and each sample's id, in a stream of its own that no training mask can repeat; exactly what
``split.degrade`` gives), so every student sees the same test set.
"""

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from skelpipe.core import atomic
from skelpipe.core.console import progress
from skelpipe.core.device import native_bf16, resolve
from skelpipe.core.errors import SkelpipeError
from skelpipe.data.split import DiskRows, load_split
from skelpipe.learn.checkpoint import load_model
from skelpipe.skeleton import noise


@dataclass(frozen=True)
class Occlusion:
    """A fixed occlusion of test inputs: instance i occluded with probability ``op`` from the mask
    seed ``seeds[i]`` (``noise.test_seeds``), in ``mode`` (blocks of ``block_len`` frames), on
    ``channels`` (``noise.occlude_batch``)."""

    op: float
    seeds: torch.Tensor
    mode: str = "track"
    channels: str = "all"
    block_len: int = 15

    def apply(self, xb: torch.Tensor, start: int) -> torch.Tensor:
        """The batch ``xb`` of the instances from ``start`` on, occluded."""
        seeds = self.seeds[start:start + len(xb)].to(xb.device)
        return noise.occlude_batch(xb, seeds, self.op, self.mode, self.channels, self.block_len)


@torch.no_grad()
def predict(model, x, batch_size=256, device="cpu", amp=True, occlusion: Occlusion | None = None,
            show_progress=False) -> torch.Tensor:
    """Logits (N, K) float32 on the CPU of ``model`` (put in eval mode) on ``x`` (N, C, T, V, M),
    occluded by ``occlusion`` when given (op > 0)."""
    if occlusion is not None and occlusion.op > 0 and (occlusion.seeds is None or len(occlusion.seeds) != len(x)):
        raise ValueError("predict with op > 0 needs one occlusion seed per instance")
    occlusion = occlusion if occlusion is not None and occlusion.op > 0 else None
    device = torch.device(device)
    model.eval()
    x = x if isinstance(x, DiskRows) else torch.as_tensor(x)
    amp = amp and native_bf16(device)
    out = []
    with progress("samples", transient=True) as bar:
        task = bar.add_task("evaluate", total=len(x), visible=show_progress)
        for start in range(0, len(x), batch_size):
            xb = x[start:start + batch_size].to(device, non_blocking=True).float()
            if occlusion is not None:
                xb = occlusion.apply(xb, start)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                logits = model(xb)[0]
            out.append(logits.float().cpu())
            bar.advance(task, len(xb))
    return torch.cat(out) if out else torch.zeros(0, 0)


def topk_accuracy(logits: torch.Tensor, labels: torch.Tensor, ks=(1, 5)) -> list[float]:
    """Fraction of instances whose label is among the k highest logits, for each k."""
    labels = labels.to(logits.device).view(-1, 1)
    top = logits.topk(min(max(ks), logits.shape[1]), dim=1).indices
    return [float((top[:, :k] == labels).any(dim=1).float().mean()) for k in ks]


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (K, K): row = true class, column = predicted class."""
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def plot_confusion(cm: np.ndarray, class_names, path, title=""):
    """Row-normalised confusion matrix as a PNG (matplotlib, Agg backend), written atomically."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(cm)
    rows = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = min(4 + 0.18 * k, 20)
    fig, ax = plt.subplots(figsize=(size, size))
    im = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=max(4, 10 - k // 10))
    ax.set_yticks(range(k), class_names, fontsize=max(4, 10 - k // 10))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    atomic.write_bytes(path, buf.getvalue())


def _training_config(model_dir, meta: dict) -> dict:
    """The training settings that ``model.json`` records (evaluation's defaults come from them)."""
    if not isinstance(meta.get("config"), dict) or meta.get("stage") not in ("teacher", "student"):
        raise SkelpipeError(f"{Path(model_dir) / 'model.json'}: no training config and stage (not written by "
                            f"skelpipe train)")
    return meta["config"]


def _check_match(model_dir, pack_dir, meta: dict, attrs: dict, which: str):
    """The model reads the pack's skeletons (its layout) and knows every class of it."""
    layout, net = attrs[f"{which}_layout"], meta["model"]
    if layout != net["layout"]:
        raise SkelpipeError(f"{model_dir}: model is for layout {net['layout']}, the {which.upper()} "
                            f"data of {pack_dir} are {layout}")
    if attrs["num_classes"] != net["num_classes"]:
        raise SkelpipeError(f"{model_dir}: model of {net['num_classes']} classes, the data of {pack_dir} have "
                            f"{attrs['num_classes']}")


@dataclass(frozen=True)
class EvalSet:
    """What a model is evaluated on: the ``split`` of a pack, its HQ or LQ skeletons (``which``),
    occluded with probability ``op`` in ``mode`` from the fixed draw ``seed``. None: the model's
    own, HQ for a teacher and LQ for a student, its training OP (on LQ data) and mode, and the
    pack's ``test_seed`` (the draw ``split.degrade`` also makes)."""

    split: str = "test"
    which: str | None = None
    op: float | None = None
    mode: str | None = None
    seed: int | None = None


def evaluate(model_dir, pack_dir, on: EvalSet = EvalSet(), out_dir=None, device="auto", batch_size=256) -> dict:
    """Evaluate the model in ``model_dir`` on the data ``on`` describes of the pack directory
    ``pack_dir``. Writes ``metrics.json``, ``predictions.csv`` and ``confusion.png`` into
    ``out_dir`` when given; returns ``dict(top1, top5, per_class, n, ...)``.
    """

    device = resolve(device)
    model, meta = load_model(model_dir, device)
    cfg = _training_config(model_dir, meta)
    split = on.split
    data = load_split(pack_dir, split)
    which = on.which or ("hq" if meta["stage"] == "teacher" else "lq")
    if which not in ("hq", "lq"):
        raise SkelpipeError(f"evaluate: which must be hq or lq, got {which!r}")
    op = (cfg.get("op", 0.0) if which == "lq" else 0.0) if on.op is None else float(on.op)
    mode = on.mode or cfg.get("occlusion_mode", "track")
    seed = int(data.attrs.get("test_seed", 0)) if on.seed is None else int(on.seed)
    _check_match(model_dir, pack_dir, meta, data.attrs, which)
    x = data.hq if which == "hq" else data.lq
    labels = np.asarray(data.label, dtype=np.int64)
    if which == "hq" and not np.all(data.has_hq):
        keep = np.flatnonzero(data.has_hq)
        x, labels = x[keep], labels[keep]
        ids = [data.ids[i] for i in keep]
    else:
        ids = list(data.ids)
    if len(labels) == 0:
        raise SkelpipeError(f"{pack_dir}: the {split} split has no {which.upper()} instance to evaluate")

    channels = cfg.get("occlusion_channels", "all")
    occlusion = (Occlusion(op, noise.test_seeds(seed, ids, data.name), mode, channels, cfg.get("occlusion_block", 15))
                 if op > 0 else None)
    logits = predict(model, x, batch_size=batch_size, device=device, amp=cfg.get("amp", True),
                     occlusion=occlusion, show_progress=True)
    num_classes = meta["model"]["num_classes"]
    names = meta.get("class_names") or [str(c) for c in range(num_classes)]
    top1, top5 = topk_accuracy(logits, torch.from_numpy(labels), (1, 5))
    probs = logits.softmax(dim=1)
    top = probs.topk(min(5, num_classes), dim=1)
    preds = top.indices[:, 0].numpy()
    cm = confusion_matrix(labels, preds, num_classes)
    support = cm.sum(axis=1)
    per_class = {names[c]: (float(cm[c, c] / support[c]) if support[c] else None) for c in range(num_classes)}
    result = {"top1": top1, "top5": top5, "n": int(len(labels)), "per_class": per_class,
              "split": split, "which": which, "op": op, "occlusion_mode": mode, "occlusion_channels": channels, "seed": seed,
              "model_key": meta.get("config_key"), "stage": meta["stage"], "kd": meta.get("kd")}

    if out_dir is not None:
        _write_outputs(Path(out_dir), result, ids, labels, top, cm, names,
                       title=f"{meta['stage']} {which.upper()} {split}: top-1 {top1:.3f}")
    return result


def _write_outputs(out_dir: Path, result: dict, ids, labels, top, cm, names, title: str):
    """``predictions.csv`` (top-5 per instance), ``confusion.png`` and ``metrics.json``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["id", "label", "pred", "top5", "prob"])
    for i in range(len(labels)):
        writer.writerow([ids[i], int(labels[i]), int(top.indices[i, 0]),
                         " ".join(str(int(c)) for c in top.indices[i]), f"{float(top.values[i, 0]):.6f}"])
    atomic.write_text(out_dir / "predictions.csv", rows.getvalue())
    plot_confusion(cm, names, out_dir / "confusion.png", title=title)
    atomic.write_text(out_dir / "metrics.json", json.dumps(result, indent=2) + "\n")
