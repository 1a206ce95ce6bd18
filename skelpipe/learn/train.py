"""Training: the teacher on HQ skeletons, the student on LQ skeletons with distillation.

``train`` reads as torchvision's classification reference does: seed, data, distiller (the
frozen teacher, its cached outputs, the part matrix E), model and optimiser, resume, then
``train_one_epoch`` and a checkpoint per epoch. bf16 autocast wherever the device runs it natively
(CUDA, a CPU with AMX or AVX512-BF16), optional ``torch.compile``, DistributedDataParallel under
``torchrun``, exact resume.

- **Teacher** (``stage="teacher"``): cross-entropy on the HQ skeletons of ``D_pair`` (eq. 2).
- **Student** (``stage="student"``): cross-entropy on the LQ skeletons of ``D_pair ∪ D_sol``,
  occluded on the fly with probability ``op``, plus ``alpha`` times a distillation term
  (``kd``: ``none``, ``kl``, ``global-msc``, ``pmsc``, ``skd`` or ``pe-gcn``; docs/method.md,
  §Losses). The HQ batch ``B_H`` holds the HQ counterparts of the paired instances of the LQ batch (optionally topped up with
  ``hq_topup`` extra ``D_pair`` instances); ``pair_index`` maps each LQ instance to its
  counterpart in ``B_H`` (-1 for a solitary one).
- The teacher is frozen (eval mode, no gradients) and its HQ input is not augmented, so its
  outputs are computed once per run over the HQ training data and looked up per batch
  (``teacher_features="cached"``); ``"online"`` re-runs it on every batch (same loss).

Exact resume: the data order of an epoch comes from a generator seeded by (seed, epoch), the
occlusion draws from (occlusion_seed, "train", split, sample id[, epoch]) (``noise``: a stream
that no test draw can repeat; ``seed`` changes initialisation and order, not the degraded data); ``last.pt``
(written atomically at the end of every epoch) holds model, optimiser, scheduler, every rank's RNG states and the metrics so far.
A run killed at any moment restarts from the last finished epoch and ends with the weights an
uninterrupted run would have (bit for bit on CPU).
"""

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from skelpipe.core import atomic
from skelpipe.core.console import console, progress
from skelpipe.core.device import fits, holding, native_bf16
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fingerprint import input_key
from skelpipe.data.split import Split, load_split
from skelpipe.learn import distributed, partmatrix
from skelpipe.learn.batches import epoch_order, epoch_plan
from skelpipe.learn.checkpoint import init_from_teacher, load_part_matrix, save_atomic, save_model
from skelpipe.learn.config import TrainConfig, settings
from skelpipe.learn.distill import Distiller
from skelpipe.learn.evaluate import predict, topk_accuracy
from skelpipe.learn.models import build_model, classification_loss
from skelpipe.skeleton import layouts, noise

# ----------------------------------------------------------------------------- entry points

def train(cfg: TrainConfig, pack_dir, out_dir, teacher_dir=None, part_matrix=None) -> Path:
    """Train ``cfg.stage`` on a pack directory into ``out_dir``: ``model.pt``, ``model.json``,
    ``metrics.jsonl``, ``last.pt``.

    A student with distillation needs ``teacher_dir`` (a finished teacher run) and, for
    ``pmsc``, ``part_matrix`` (a file or a ``skelpipe partmatrix`` directory). Rerunning
    resumes; a finished run returns at once.
    """
    if _finished(cfg, out_dir):
        return Path(out_dir)
    e = load_part_matrix(part_matrix) if cfg.kd == "pmsc" and part_matrix is not None else None
    split = load_split(pack_dir, "train", rows="auto")  # larger than memory: read batch by batch
    test = load_split(pack_dir, "test", rows="auto") if cfg.eval_every else None
    return train_split(cfg, split, out_dir, teacher_dir, e, test=test, data_key=input_key(pack_dir),
                       where=str(pack_dir))


def train_split(cfg: TrainConfig, split: Split, out_dir, teacher_dir=None, part_matrix=None,
                test: Split | None = None, data_key=None, where="the data") -> Path:
    """``train`` on a split in memory (``part_matrix``: a (classes, 5) tensor or None; ``test``:
    the split ``cfg.eval_every`` evaluates on)."""
    out_dir = Path(out_dir)
    if _finished(cfg, out_dir):
        return out_dir
    rank, world, device, created_group = distributed.setup(cfg.device)
    try:
        _train(cfg, split, test, data_key or split.attrs.get("key"), where, out_dir, teacher_dir,
               part_matrix, rank, world, device)
    finally:
        if created_group:
            dist.destroy_process_group()
    return out_dir


def _finished(cfg: TrainConfig, out_dir) -> bool:
    """Whether ``out_dir`` holds a finished run of ``cfg`` (an error if of another config)."""
    path = Path(out_dir) / "model.json"
    if not path.is_file():
        return False
    if settings(json.loads(path.read_text()).get("config", {})) != settings(cfg.to_dict()):
        raise SkelpipeError(f"{path}: a finished run of another configuration; "
                            "remove it or use another --out")
    return True


# ----------------------------------------------------------------------------- the run

def _train(cfg, split, test, data_key, where, out_dir, teacher_dir, part_matrix, rank, world, device):
    _seed(cfg, device)
    amp = cfg.amp and native_bf16(device)
    if cfg.batch_size % world:
        raise SkelpipeError(f"batch size {cfg.batch_size} is not divisible by {world} processes")
    data = TrainData.of(cfg, split, device, where)
    distiller = Distiller.of(cfg, data, teacher_dir, part_matrix, device, amp) if data.distill else None
    model = build_model(cfg.backbone, data.layout, data.channels, data.num_classes, cfg.channels,
                        cfg.temporal_kernel, data.persons, cfg.dropout, cfg.part_pool).to(device)
    start = init_from_teacher(model, teacher_dir) if cfg.init == "teacher" else None
    if distiller is not None:
        distiller.attach(model, device)
    key = cfg.key(data=data_key, teacher=distiller and distiller.teacher_key,
                  part_matrix=None if distiller is None or distiller.part_e is None
                  else distiller.part_e.cpu().numpy().round(6).tolist(),
                  **({"init": start} if start else {}))
    meta = _model_meta(cfg, data, key, data_key, distiller)
    if start:
        meta["init_from"] = start
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    last = out_dir / "last.pt"
    start_epoch, history = _resume(last, key, model, optimizer, scheduler, rank, world, device)
    raw_model = model
    if cfg.compile:
        model = torch.compile(model)
        if distiller is not None:  # B_H varies from batch to batch
            distiller.loss = torch.compile(distiller.loss, dynamic=True)
    if world > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    gradient_as_bucket_view=True)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    part_keep = (partmatrix.part_keep_masks(layouts.get(data.layout)).to(device)
                 if cfg.part_dropout > 0 else None)

    board = _tensorboard(out_dir) if rank == 0 else None
    for epoch in range(start_epoch, cfg.epochs):
        record = train_one_epoch(cfg, model, raw_model, optimizer, data, distiller, part_keep, epoch,
                                 rank, world, device, amp)
        if test is not None and cfg.eval_every and rank == 0 and (
                (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            record.update(_test_accuracy(raw_model, test, cfg, device, amp))
        history.append(record)
        scheduler.step()
        _save_checkpoint(last, out_dir, raw_model, optimizer, scheduler, epoch, history, key,
                         rank, world, device, cfg.stage)
        if board is not None:
            for name in ("loss", "ce", "kd", "train_acc", "lr", "samples_per_s", "test_top1", "test_top5"):
                if name in record:
                    board.add_scalar(f"{cfg.stage}/{name}", record[name], record["epoch"])
            board.flush()
    if board is not None:
        board.close()
    if rank == 0:
        save_model(out_dir, raw_model, {**meta, "epochs_done": len(history), "metrics": history[-1]})


def _tensorboard(out_dir: Path):
    """A TensorBoard writer into ``out_dir/tensorboard`` when the optional extra is installed
    (``pip install 'skelpipe[tensorboard]'``); None otherwise: training is the same either way."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency: tensorboard
    except ImportError:
        return None
    return SummaryWriter(str(out_dir / "tensorboard"))


def _seed(cfg, device):
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 where fp32 remains (--no-amp)


@dataclass
class TrainData:
    """A training split as tensors (on the GPU when it fits) and what the loop needs of it."""

    split: Split
    x: torch.Tensor               # (N, C, T, V, M): LQ for a student, HQ for a teacher
    labels: torch.Tensor          # (N,) on the device
    has_hq: np.ndarray            # (N,) bool: in D_pair
    train_index: np.ndarray       # the instances trained on
    pair_pool: np.ndarray         # the D_pair instances
    sample_keys: torch.Tensor | None  # per-instance occlusion keys (student with op > 0)
    layout: str
    num_classes: int
    channels: int
    persons: int
    student: bool
    distill: bool

    @classmethod
    def of(cls, cfg, split: Split, device, where: str) -> "TrainData":
        student = cfg.stage == "student"
        x_np = split.lq if student else split.hq
        has_hq = np.asarray(split.has_hq, dtype=bool)
        labels = np.asarray(split.label, dtype=np.int64)
        train_index = (np.arange(len(labels)) if student and cfg.lq_data == "all"
                       else np.flatnonzero(has_hq))
        if len(train_index) == 0:
            raise SkelpipeError("training split: no instance to train on (no HQ skeletons for a teacher)")
        classes = np.unique(labels[train_index])
        if len(classes) < 2:
            raise SkelpipeError(f"training split of {where}: {len(train_index)} instance(s) of "
                                f"{len(classes)} class(es); a classifier needs at least 2 classes")
        keys = (torch.from_numpy(noise.sample_keys(split.ids)).to(device)
                if student and cfg.op > 0 else None)
        return cls(split, holding(x_np, device, fits(device, x_np)),
                   torch.from_numpy(labels).to(device), has_hq, train_index, np.flatnonzero(has_hq),
                   keys, split.attrs["lq_layout" if student else "hq_layout"],
                   int(split.attrs["num_classes"]), int(x_np.shape[1]), int(x_np.shape[4]),
                   student, student and cfg.kd != "none")


def _model_meta(cfg, data: TrainData, key, data_key, distiller) -> dict:
    """What ``model.json`` says of the run besides its metrics: enough to rebuild the model."""
    attrs = data.split.attrs
    return {"backbone": cfg.backbone, "layout": data.layout, "in_channels": data.channels,
            "num_classes": data.num_classes, "class_names": list(attrs.get("class_names", [])),
            "channels": list(cfg.channels), "temporal_kernel": cfg.temporal_kernel,
            "num_persons": data.persons, "dropout": cfg.dropout, "part_pool": cfg.part_pool,
            "T": int(data.x.shape[2]), "stage": cfg.stage, "kd": cfg.kd, "config": cfg.to_dict(),
            "config_key": key, "teacher_key": distiller and distiller.teacher_key,
            "data": {"key": data_key, **{k: attrs[k] for k in ("benchmark", "extractor", "hq_layout",
                                                               "lq_layout", "test_seed") if k in attrs}}}


def _resume(last: Path, key, model, optimizer, scheduler, rank, world, device) -> tuple[int, list]:
    """(first epoch to run, metrics so far): from ``last.pt`` when it exists."""
    if not last.is_file():
        return 0, []
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    if ckpt["config_key"] != key:
        raise SkelpipeError(f"{last}: a checkpoint of another configuration (key "
                            f"{ckpt['config_key']}, this run {key}); remove it or use another --out")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if len(ckpt["rng"]) == world:
        distributed.set_rng_state(ckpt["rng"][rank], device)
    if rank == 0:
        console.print(f"resuming {last.parent} after epoch {ckpt['epoch']}")
    return ckpt["epoch"], ckpt["metrics"]


def _save_checkpoint(last, out_dir, raw_model, optimizer, scheduler, epoch, history, key, rank, world, device,
                     stage):
    """``last.pt`` (weights, optimiser, schedule, every rank's RNG states) and ``metrics.jsonl``;
    none after a non-finite loss (the weights are lost: ``last.pt`` keeps the last good epoch)."""
    if not np.isfinite(history[-1]["loss"]):
        raise SkelpipeError(f"{out_dir}: {stage} epoch {epoch + 1}: the loss is {history[-1]['loss']} (not "
                            "finite); lower lr or alpha, or check the data")
    rng = [distributed.rng_state(device)]
    if world > 1:
        rng = [None] * world
        dist.all_gather_object(rng, distributed.rng_state(device))
    if rank == 0:
        save_atomic({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "rng": rng, "epoch": epoch + 1,
                     "metrics": history, "config_key": key}, last)
        atomic.write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        console.print(_epoch_line(history[-1]))


def train_one_epoch(cfg, model, raw_model, optimizer, data: TrainData, distiller, part_keep, epoch,
                    rank, world, device, amp) -> dict:
    """One epoch over this rank's share of the data; the epoch's metrics record."""
    local_batch = cfg.batch_size // world
    per_rank = -(-len(data.train_index) // world)
    steps = -(-per_rank // local_batch)
    steps = min(steps, cfg.max_steps) if cfg.max_steps else steps
    model.train()
    order_dev, order_data, (hq_order, pair_order, hq_offsets) = _epoch_batches(
        cfg, data, distiller is not None, epoch, rank, world, device)
    draw_epoch = epoch if cfg.occlusion_draws == "fresh" else None
    alpha = cfg.alpha * min(1.0, (epoch + 1) / cfg.alpha_warmup) if cfg.alpha_warmup else cfg.alpha
    sums = torch.zeros(5, device=device)  # loss, ce, kd (sample-weighted), correct, count
    grad_norms = None
    with progress("samples", transient=True) as bar:
        task = bar.add_task(f"{cfg.stage} epoch {epoch + 1}/{cfg.epochs}", total=steps) if rank == 0 else None
        t0 = time.perf_counter()
        for step in range(steps):
            s0, s1 = step * local_batch, min((step + 1) * local_batch, len(order_dev))
            x, y = _batch(cfg, data, order_dev[s0:s1], order_data[s0:s1], draw_epoch, part_keep, device)
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                logits, glob, parts = model(x)
            ce = classification_loss(raw_model, logits, y)  # a multi-stream model adds its streams'
            kd = torch.zeros((), device=device)
            if distiller is not None:
                kd = distiller(logits, glob, parts, y, hq_order[hq_offsets[step]:hq_offsets[step + 1]],
                               pair_order[s0:s1], device, amp)
            loss = ce + alpha * kd
            optimizer.zero_grad(set_to_none=True)
            if distiller is None:
                loss.backward()
            else:  # once an epoch (one process): how hard each term pulls
                grad_norms = distiller.backward(raw_model, ce, loss, alpha, step == 0 and world == 1) or grad_norms
            optimizer.step()
            with torch.no_grad():
                n = float(s1 - s0)
                sums[:4] += torch.stack([loss.detach() * n, ce.detach() * n, kd.detach() * n,
                                         (logits.argmax(1) == y).sum().float()])
                sums[4] += n
            if step == 0:  # the steps after the first: the steady rate (without warm-up and diagnostics)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t1, first = time.perf_counter(), float(s1 - s0) * world
            if task is not None:
                bar.update(task, advance=1, rate=(step + 1) * local_batch * world / (time.perf_counter() - t0))
        if world > 1:
            dist.all_reduce(sums)
            distributed.average_buffers(raw_model, world)
        loss_sum, ce_sum, kd_sum, correct, count = sums.tolist()
        elapsed = time.perf_counter() - t0
        if task is not None:
            bar.remove_task(task)
    record = {"epoch": epoch + 1, "loss": loss_sum / count, "ce": ce_sum / count,
              "kd": kd_sum / count, "lr": optimizer.param_groups[0]["lr"],
              "train_acc": correct / count, "samples": int(count), "samples_per_s": count / elapsed,
              "time": elapsed, **({"steady_samples_per_s": (count - first) / (t0 + elapsed - t1)} if steps > 1 else {})}
    return record | ({"grad_ce": grad_norms[0], "grad_kd": grad_norms[1], "alpha": alpha} if grad_norms else {})


def _batch(cfg, data: TrainData, idx, data_idx, draw_epoch, part_keep, device):
    """One training batch (x, y): the instances ``idx`` (``data_idx`` where the data live),
    occluded (a student with op > 0) and with part dropout (``part_keep``) as configured."""
    x = data.x[data_idx].to(device, non_blocking=True).float()
    y = data.labels[idx]
    if data.student and cfg.op > 0:
        seeds = noise.instance_seeds(cfg.occlusion_seed, data.sample_keys[idx], "train",
                                     data.split.name, draw_epoch)
        x = noise.occlude_batch(x, seeds, cfg.op, cfg.occlusion_mode, cfg.occlusion_channels, cfg.occlusion_block)
    if part_keep is not None:
        x = x * part_dropout_mask(part_keep, len(x), cfg.part_dropout, device)
    return x, y


# ----------------------------------------------------------------------------- batches and test

def _epoch_batches(cfg, data: TrainData, distill: bool, epoch, rank, world, device):
    """The epoch's plan: this rank's instance order (on the device, and where the data live)
    and, for distillation, the HQ batches and pair indices. Made on the CPU and sent once, so
    the steps never wait on a copy."""
    order = data.train_index[epoch_order(len(data.train_index), cfg.seed, epoch, rank, world)]
    order_dev = torch.from_numpy(order).to(device)
    hq_plan = (None, None, None)
    if distill:
        hq_order, pair_order, hq_offsets = epoch_plan(
            order, cfg.batch_size // world, data.has_hq, data.pair_pool, cfg.hq_topup,
            np.random.default_rng([cfg.seed, epoch, rank]))
        hq_plan = (torch.from_numpy(hq_order).to(device), torch.from_numpy(pair_order).to(device), hq_offsets)
    return order_dev, order_dev.to(data.x.device), hq_plan


def part_dropout_mask(part_keep: torch.Tensor, n: int, p: float, device) -> torch.Tensor:
    """(n, 1, 1, V, 1) keep-mask: with probability ``p`` an instance loses one body part drawn
    uniformly (all its joints, frames, persons and channels), as the part matrix occludes it; so
    a teacher trained with it has seen occluded parts and E measures reliance, not surprise."""
    drop = torch.rand(n, device=device) < p
    part = torch.randint(len(part_keep), (n,), device=device)
    keep = torch.where(drop[:, None], part_keep[part], torch.ones_like(part_keep[part]))
    return keep[:, None, None, :, None]


def _test_accuracy(model, test, cfg, device, amp) -> dict:
    """Top-1/top-5 on the test split: HQ for a teacher, occluded LQ (fixed draws) for a student."""
    student = cfg.stage == "student"
    labels = np.asarray(test.label)
    seeds = None
    if student:
        x = test.lq
        if cfg.op > 0:
            seeds = noise.test_seeds(int(test.attrs.get("test_seed", 0)), test.ids, test.name)
    else:
        keep = np.asarray(test.has_hq, dtype=bool)
        x, labels = test.hq[keep], labels[keep]
    logits = predict(model, x, batch_size=cfg.eval_batch_size, device=device, amp=amp,
                     op=cfg.op if student else 0.0, mode=cfg.occlusion_mode, seeds=seeds,
                     channels=cfg.occlusion_channels, block_len=cfg.occlusion_block)
    model.train()
    top1, top5 = topk_accuracy(logits, torch.from_numpy(labels), (1, 5))
    return {"test_top1": top1, "test_top5": top5}


def _epoch_line(r: dict) -> str:
    line = (f"epoch {r['epoch']}: loss {r['loss']:.4f} (ce {r['ce']:.4f}, kd {r['kd']:.4f}) "
            f"acc {r['train_acc']:.3f} lr {r['lr']:.3g} {r['samples_per_s']:,.0f} samples/s")
    if "test_top1" in r:
        line += f" test top-1 {r['test_top1']:.3f} top-5 {r['test_top5']:.3f}"
    return line
