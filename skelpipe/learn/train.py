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
from skelpipe.core.device import fits, holding
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fingerprint import input_key
from skelpipe.data.split import Split, load_split
from skelpipe.learn import distributed, partmatrix
from skelpipe.learn.batches import epoch_order, epoch_plan, part_dropout_mask
from skelpipe.learn.checkpoint import init_from_teacher, load_part_matrix, save_atomic, save_model
from skelpipe.learn.config import TrainConfig, settings
from skelpipe.learn.distill import Distiller, Outputs
from skelpipe.learn.distributed import Run
from skelpipe.learn.evaluate import Occlusion, predict, topk_accuracy
from skelpipe.learn.models import ModelConfig, build_model, classification_loss
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
    with distributed.process_group(cfg.device, cfg.amp) as run:
        _seed(cfg, run.device)
        if cfg.batch_size % run.world:
            raise SkelpipeError(f"batch size {cfg.batch_size} is not divisible by {run.world} processes")
        data = TrainData.of(cfg, split, run.device, where, data_key or split.attrs.get("key"))
        _train(cfg, run, data, test, out_dir, teacher_dir, part_matrix)
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

def _train(cfg, run: Run, data: "TrainData", test, out_dir: Path, teacher_dir, part_matrix):
    distiller = Distiller.of(cfg, data, teacher_dir, part_matrix, run) if data.distill else None
    model = build_model(ModelConfig.of(cfg, layout=data.layout, in_channels=data.channels,
                                       num_classes=data.num_classes, num_persons=data.persons)).to(run.device)
    start = init_from_teacher(model, teacher_dir) if cfg.init == "teacher" else None
    if distiller is not None:
        distiller.attach(model, run.device)
    key = cfg.key(data=data.key, teacher=distiller and distiller.teacher_key,
                  part_matrix=None if distiller is None or distiller.part_e is None
                  else distiller.part_e.cpu().numpy().round(6).tolist(),
                  **({"init": start} if start else {}))
    meta = _model_meta(cfg, data, key, distiller)
    if start:
        meta["init_from"] = start
    state = TrainState.of(cfg, model)
    start_epoch, history = _resume(out_dir / "last.pt", key, state, run)
    if cfg.compile:
        model = torch.compile(model)
        if distiller is not None:  # B_H varies from batch to batch
            distiller.loss = torch.compile(distiller.loss, dynamic=True)
    if run.world > 1:
        model = DDP(model, device_ids=[run.device.index] if run.device.type == "cuda" else None,
                    gradient_as_bucket_view=True)
    if run.main:
        out_dir.mkdir(parents=True, exist_ok=True)

    board = _tensorboard(out_dir) if run.main else None
    for epoch in range(start_epoch, cfg.epochs):
        record = train_one_epoch(cfg, model, state, data, distiller, epoch, run)
        if test is not None and cfg.eval_every and run.main and (
                (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
            record.update(_test_accuracy(state.model, test, cfg, run))
        history.append(record)
        state.scheduler.step()
        _save_checkpoint(out_dir, state, history, key, run, cfg.stage)
        if board is not None:
            for name in ("loss", "ce", "kd", "train_acc", "lr", "samples_per_s", "test_top1", "test_top5"):
                if name in record:
                    board.add_scalar(f"{cfg.stage}/{name}", record[name], record["epoch"])
            board.flush()
    if board is not None:
        board.close()
    if run.main:
        save_model(out_dir, state.model, {**meta, "epochs_done": len(history), "metrics": history[-1]})


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
    key: str | None               # the data's cache key (part of the run's key)
    x: torch.Tensor               # (N, C, T, V, M): LQ for a student, HQ for a teacher
    labels: torch.Tensor          # (N,) on the device
    has_hq: np.ndarray            # (N,) bool: in D_pair
    train_index: np.ndarray       # the instances trained on
    pair_pool: np.ndarray         # the D_pair instances
    sample_keys: torch.Tensor | None  # per-instance occlusion keys (student with op > 0)
    part_keep: torch.Tensor | None    # (5, V) part dropout's keep masks (part_dropout > 0)
    layout: str
    num_classes: int
    channels: int
    persons: int
    student: bool
    distill: bool

    @classmethod
    def of(cls, cfg, split: Split, device, where: str, key: str | None) -> "TrainData":
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
        layout = split.attrs["lq_layout" if student else "hq_layout"]
        part_keep = (partmatrix.part_keep_masks(layouts.get(layout)).to(device)
                     if cfg.part_dropout > 0 else None)
        return cls(split, key, holding(x_np, device, fits(device, x_np)),
                   torch.from_numpy(labels).to(device), has_hq, train_index, np.flatnonzero(has_hq),
                   keys, part_keep, layout, int(split.attrs["num_classes"]), int(x_np.shape[1]),
                   int(x_np.shape[4]), student, student and cfg.kd != "none")


@dataclass
class TrainState:
    """What training changes and a checkpoint keeps: the network (itself, not compiled or wrapped by DDP),
    its optimiser and its schedule."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @classmethod
    def of(cls, cfg, model) -> "TrainState":
        """SGD and its schedule: lr × gamma at each milestone, after a linear warm-up from lr / n
        over ``cfg.lr_warmup`` = n epochs, if any."""
        optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        steps = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
        if cfg.lr_warmup:
            warmup = torch.optim.lr_scheduler.LinearLR(optimizer, 1 / cfg.lr_warmup, total_iters=cfg.lr_warmup - 1)
            steps = torch.optim.lr_scheduler.ChainedScheduler([warmup, steps])
        return cls(model, optimizer, steps)


def _model_meta(cfg, data: TrainData, key, distiller) -> dict:
    """What ``model.json`` says of the run besides the network (``model.config``) and its metrics."""
    attrs = data.split.attrs
    return {"class_names": list(attrs.get("class_names", [])),
            "T": int(data.x.shape[2]), "stage": cfg.stage, "kd": cfg.kd, "config": cfg.to_dict(),
            "config_key": key, "teacher_key": distiller and distiller.teacher_key,
            "data": {"key": data.key, **{k: attrs[k] for k in ("benchmark", "extractor", "hq_layout",
                                                               "lq_layout", "test_seed") if k in attrs}}}


def _resume(last: Path, key, state: TrainState, run: Run) -> tuple[int, list]:
    """(first epoch to run, metrics so far): from ``last.pt`` when it exists."""
    if not last.is_file():
        return 0, []
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    if ckpt["config_key"] != key:
        raise SkelpipeError(f"{last}: a checkpoint of another configuration (key "
                            f"{ckpt['config_key']}, this run {key}); remove it or use another --out")
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    state.scheduler.load_state_dict(ckpt["scheduler"])
    if len(ckpt["rng"]) == run.world:
        distributed.set_rng_state(ckpt["rng"][run.rank], run.device)
    if run.main:
        console.print(f"resuming {last.parent} after epoch {ckpt['epoch']}")
    return ckpt["epoch"], ckpt["metrics"]


def _save_checkpoint(out_dir: Path, state: TrainState, history: list, key, run: Run, stage: str):
    """``last.pt`` (weights, optimiser, schedule, every rank's RNG states) and ``metrics.jsonl`` after the epoch
    ``history[-1]``; none after a non-finite loss (the weights are lost: ``last.pt`` keeps the last good epoch)."""
    epoch = history[-1]["epoch"]
    if not np.isfinite(history[-1]["loss"]):
        raise SkelpipeError(f"{out_dir}: {stage} epoch {epoch}: the loss is {history[-1]['loss']} (not "
                            "finite); lower lr or alpha, or check the data")
    rng = [distributed.rng_state(run.device)]
    if run.world > 1:
        rng = [None] * run.world
        dist.all_gather_object(rng, distributed.rng_state(run.device))
    if run.main:
        save_atomic({"model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
                     "scheduler": state.scheduler.state_dict(), "rng": rng, "epoch": epoch,
                     "metrics": history, "config_key": key}, out_dir / "last.pt")
        atomic.write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        console.print(_epoch_line(history[-1]))


class Totals:
    """An epoch's sums over its batches by name (loss terms weighted by batch size, correct predictions, instances):
    one tensor on the device in ``FIELDS`` order, so no sync per step and one all-reduce over the ranks."""

    FIELDS = ("loss", "ce", "kd", "correct", "count")

    def __init__(self, device):
        self.sums = torch.zeros(len(self.FIELDS), device=device)

    def add(self, **values: torch.Tensor):
        self.sums += torch.stack([values[name] for name in self.FIELDS])

    def reduced(self, world: int) -> dict:
        """The sums over every rank, by name."""
        if world > 1:
            dist.all_reduce(self.sums)
        return dict(zip(self.FIELDS, self.sums.tolist()))


def train_one_epoch(cfg, model, state: TrainState, data: TrainData, distiller, epoch, run: Run) -> dict:
    """One epoch over this rank's share of the data (``model``: ``state.model`` as it runs,
    compiled or under DDP); the epoch's metrics record."""
    local_batch = cfg.batch_size // run.world
    per_rank = -(-len(data.train_index) // run.world)
    steps = -(-per_rank // local_batch)
    steps = min(steps, cfg.max_steps) if cfg.max_steps else steps
    model.train()
    order_dev, order_data, (hq_order, pair_order, hq_offsets) = _epoch_batches(
        cfg, data, distiller is not None, epoch, run)
    draw_epoch = epoch if cfg.occlusion_draws == "fresh" else None
    alpha = cfg.alpha * min(1.0, (epoch + 1) / cfg.alpha_warmup) if cfg.alpha_warmup else cfg.alpha
    totals, grad_norms = Totals(run.device), None
    with progress("samples", transient=True) as bar:
        task = bar.add_task(f"{cfg.stage} epoch {epoch + 1}/{cfg.epochs}", total=steps) if run.main else None
        t0 = time.perf_counter()
        for step in range(steps):
            s0, s1 = step * local_batch, min((step + 1) * local_batch, len(order_dev))
            x, y = _batch(cfg, data, order_dev[s0:s1], order_data[s0:s1], draw_epoch, run.device)
            with run.autocast():
                out = Outputs(*model(x))
            ce = classification_loss(state.model, out.logits, y)  # a multi-stream model adds its streams'
            kd = torch.zeros((), device=run.device)
            if distiller is not None:
                kd = distiller(out, y, hq_order[hq_offsets[step]:hq_offsets[step + 1]], pair_order[s0:s1], run)
            loss = ce + alpha * kd
            state.optimizer.zero_grad(set_to_none=True)
            if distiller is None:
                loss.backward()
            else:  # once an epoch (one process): how hard each term pulls
                diagnose = step == 0 and run.world == 1
                grad_norms = distiller.backward(state.model, ce, loss, alpha, diagnose) or grad_norms
            state.optimizer.step()
            with torch.no_grad():
                n = float(s1 - s0)
                totals.add(loss=loss.detach() * n, ce=ce.detach() * n, kd=kd.detach() * n,
                           correct=(out.logits.argmax(1) == y).sum().float(),
                           count=torch.full((), n, device=run.device))
            if step == 0:  # the steps after the first: the steady rate (without warm-up and diagnostics)
                if run.device.type == "cuda":
                    torch.cuda.synchronize(run.device)
                t1, first = time.perf_counter(), float(s1 - s0) * run.world
            if task is not None:
                bar.update(task, advance=1, rate=(step + 1) * local_batch * run.world / (time.perf_counter() - t0))
        sums = totals.reduced(run.world)
        if run.world > 1:
            distributed.average_buffers(state.model, run.world)
        elapsed = time.perf_counter() - t0
        if task is not None:
            bar.remove_task(task)
    count = sums["count"]
    record = {"epoch": epoch + 1, "loss": sums["loss"] / count, "ce": sums["ce"] / count,
              "kd": sums["kd"] / count, "lr": state.optimizer.param_groups[0]["lr"],
              "train_acc": sums["correct"] / count, "samples": int(count), "samples_per_s": count / elapsed,
              "time": elapsed, **({"steady_samples_per_s": (count - first) / (t0 + elapsed - t1)} if steps > 1 else {})}
    return record | ({"grad_ce": grad_norms[0], "grad_kd": grad_norms[1], "alpha": alpha} if grad_norms else {})


def _batch(cfg, data: TrainData, idx, data_idx, draw_epoch, device):
    """One training batch (x, y): the instances ``idx`` (``data_idx`` where the data live),
    occluded (a student with op > 0) and with part dropout as configured."""
    x = data.x[data_idx].to(device, non_blocking=True).float()
    y = data.labels[idx]
    if data.student and cfg.op > 0:
        seeds = noise.instance_seeds(cfg.occlusion_seed, data.sample_keys[idx], "train",
                                     data.split.name, draw_epoch)
        x = noise.occlude_batch(x, seeds, cfg.op, cfg.occlusion_mode, cfg.occlusion_channels, cfg.occlusion_block)
    if data.part_keep is not None:
        x = x * part_dropout_mask(data.part_keep, len(x), cfg.part_dropout, device)
    return x, y


# ----------------------------------------------------------------------------- batches and test

def _epoch_batches(cfg, data: TrainData, distill: bool, epoch, run: Run):
    """The epoch's plan: this rank's instance order (on the device, and where the data live)
    and, for distillation, the HQ batches and pair indices. Made on the CPU and sent once, so
    the steps never wait on a copy."""
    order = data.train_index[epoch_order(len(data.train_index), cfg.seed, epoch, run.rank, run.world)]
    order_dev = torch.from_numpy(order).to(run.device)
    hq_plan = (None, None, None)
    if distill:
        hq_order, pair_order, hq_offsets = epoch_plan(
            order, cfg.batch_size // run.world, data.has_hq, data.pair_pool, cfg.hq_topup,
            np.random.default_rng([cfg.seed, epoch, run.rank]))
        hq_plan = (torch.from_numpy(hq_order).to(run.device), torch.from_numpy(pair_order).to(run.device),
                   hq_offsets)
    return order_dev, order_dev.to(data.x.device), hq_plan


def _test_accuracy(model, test, cfg, run: Run) -> dict:
    """Top-1/top-5 on the test split: HQ for a teacher, occluded LQ (fixed draws) for a student."""
    student = cfg.stage == "student"
    labels = np.asarray(test.label)
    occlusion = None
    if student:
        x = test.lq
        if cfg.op > 0:
            occlusion = Occlusion(cfg.op, noise.test_seeds(int(test.attrs.get("test_seed", 0)), test.ids, test.name),
                                  cfg.occlusion_mode, cfg.occlusion_channels, cfg.occlusion_block)
    else:
        keep = np.asarray(test.has_hq, dtype=bool)
        x, labels = test.hq[keep], labels[keep]
    logits = predict(model, x, batch_size=cfg.eval_batch_size, device=run.device, amp=run.amp, occlusion=occlusion)
    model.train()
    top1, top5 = topk_accuracy(logits, torch.from_numpy(labels), (1, 5))
    return {"test_top1": top1, "test_top5": top5}


def _epoch_line(r: dict) -> str:
    line = (f"epoch {r['epoch']}: loss {r['loss']:.4f} (ce {r['ce']:.4f}, kd {r['kd']:.4f}) "
            f"acc {r['train_acc']:.3f} lr {r['lr']:.3g} {r['samples_per_s']:,.0f} samples/s")
    if "test_top1" in r:
        line += f" test top-1 {r['test_top1']:.3f} top-5 {r['test_top5']:.3f}"
    return line
