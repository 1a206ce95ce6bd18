"""Training: the teacher on HQ skeletons, the student on LQ skeletons with distillation.

One loop holds everything, as torchvision's classification reference and nanoGPT's
``train.py`` do: bf16 autocast on CUDA, optional ``torch.compile``, DistributedDataParallel
under ``torchrun``, and a checkpoint every epoch with exact resume.

- **Teacher** (``stage="teacher"``): cross-entropy on the HQ skeletons of ``D_pair`` (eq. 2).
- **Student** (``stage="student"``): cross-entropy on the LQ skeletons of ``D_pair ∪ D_sol``,
  occluded on the fly with probability ``op``, plus ``alpha`` times a distillation term
  (``kd``: ``none``, ``kl``, ``global-msc`` or ``pmsc``, METHOD.md). The HQ batch ``B_H`` holds
  the HQ counterparts of the paired instances of the LQ batch (optionally topped up with
  ``hq_topup`` extra ``D_pair`` instances); ``pair_index`` maps each LQ instance to its
  counterpart in ``B_H`` (-1 for a solitary one).
- The teacher is frozen (eval mode, no gradients) and its HQ input is not augmented, so its
  outputs are computed once per run over the HQ training data and looked up per batch
  (``teacher_features="cached"``); ``"online"`` re-runs it on every batch (same loss).

Exact resume: the data order of an epoch comes from a generator seeded by (seed, epoch), the
occlusion draws from (occlusion_seed, "train", split, sample id[, epoch]) (``noise``: a stream
that no test draw can repeat; ``seed`` changes initialisation and order, not the degraded data); ``last.pt`` (written atomically at the end of
every epoch) holds model, optimiser, scheduler, every rank's RNG states and the metrics so far.
A run killed at any moment restarts from the last finished epoch and ends with the weights an
uninterrupted run would have (bit for bit on CPU).
"""

import dataclasses
import functools
import hashlib
import json
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from skelpipe.core import atomic
from skelpipe.skeleton import layouts, noise
from skelpipe.learn import losses, partmatrix
from skelpipe.core.console import console, progress
from skelpipe.core.device import resolve
from skelpipe.core.errors import SkelpipeError
from skelpipe.learn.evaluate import predict, topk_accuracy
from skelpipe.learn.models import DEFAULT_CHANNELS, build_model
from skelpipe.learn.models.stgcn import PART_POOLS

STAGES = ("teacher", "student")
KD_VARIANTS = ("none", "kl", "global-msc", "pmsc")

# Settings that only the distillation term reads: a student without KD ignores them.
KD_FIELDS = ("alpha", "alpha_warmup", "w", "tau", "kl_temperature", "hq_topup", "part_pool")

# Settings that change how fast a run goes, not what it computes; left out of the config key.
RUNTIME_FIELDS = ("device", "compile", "eval_every", "teacher_features", "deterministic",
                  "eval_batch_size")


@dataclass
class TrainConfig:
    """Every setting of a training run; METHOD.md's values are the defaults."""

    stage: str = "teacher"                 # teacher | student
    kd: str = "none"                       # student distillation: none | kl | global-msc | pmsc
    backbone: str = "stgcn"
    channels: tuple = DEFAULT_CHANNELS
    temporal_kernel: int = 9
    dropout: float = 0.0
    part_pool: str = "mean"                # part features over the person slots: mean | present
    part_dropout: float = 0.0              # probability of zeroing one random body part of a training input
    epochs: int = 60
    batch_size: int = 64                   # global batch (split over the ranks under DDP)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple = (30, 40, 50)
    gamma: float = 0.1
    alpha: float = 1.0                     # weight of the distillation term
    alpha_warmup: int = 0                  # > 0: alpha ramps up linearly over this many epochs
    w: float = 0.5                         # weight of the positives in the MSC losses
    tau: float = 1.0                       # temperature of the MSC losses
    kl_temperature: float = 1.0            # temperature of the KL baseline
    hq_topup: int = 0                      # extra D_pair HQ instances added to every B_H
    lq_data: str = "all"                   # student's LQ data: all (D_pair ∪ D_sol) | pair (D_pair)
    op: float = 0.0                        # occlusion probability of the LQ input (student)
    occlusion_mode: str = "track"          # track | joint | block
    occlusion_draws: str = "fixed"         # fixed: one draw per instance; fresh: new every epoch
    occlusion_seed: int = 0                # the training masks' seed (seed leaves them alone)
    seed: int = 0                          # initialisation and data order
    amp: bool = True                       # bf16 autocast (CUDA only; CPU runs in fp32)
    device: str = "auto"
    compile: bool = False
    eval_every: int = 0                    # test top-1/top-5 every N epochs (0: never)
    eval_batch_size: int = 256
    teacher_features: str = "cached"       # cached | online
    deterministic: bool = False            # deterministic kernels (slower on CUDA)

    def __post_init__(self):
        for f in dataclasses.fields(self):  # types first, so that a bad --set is one line, not a TypeError
            value = getattr(self, f.name)
            if f.type is tuple:
                ok = isinstance(value, (list, tuple)) and all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value)
                wanted = "a list of integers"
            else:
                kinds = {float: (int, float), int: (int,), str: (str,), bool: (bool,)}[f.type]
                ok = isinstance(value, kinds) and (f.type is bool or not isinstance(value, bool))
                wanted = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}[f.type]
            if not ok:
                raise SkelpipeError(f"training config: {f.name} must be {wanted}, got {value!r}")
        self.channels = tuple(self.channels)
        self.milestones = tuple(self.milestones)
        checks = [
            (self.stage in STAGES, f"stage must be one of {STAGES}, got {self.stage!r}"),
            (self.kd in KD_VARIANTS, f"kd must be one of {KD_VARIANTS}, got {self.kd!r}"),
            (self.stage == "student" or self.kd == "none", "a teacher is trained without --kd"),
            (self.occlusion_mode in noise.MODES, f"occlusion mode must be one of {noise.MODES}"),
            (self.occlusion_draws in ("fixed", "fresh"), "occlusion draws must be fixed or fresh"),
            (self.teacher_features in ("cached", "online"), "teacher features: cached or online"),
            (0.0 <= self.op <= 1.0, f"op must lie in [0, 1], got {self.op}"),
            (self.epochs >= 1 and self.batch_size >= 1, "epochs and batch size must be >= 1"),
            (self.hq_topup >= 0, "hq_topup must be >= 0"),
            (self.alpha_warmup >= 0, "alpha_warmup must be >= 0"),
            (self.lq_data in ("all", "pair"), f"lq_data must be all or pair, got {self.lq_data!r}"),
            (self.part_pool in PART_POOLS, f"part_pool must be one of {PART_POOLS}, got {self.part_pool!r}"),
            (0.0 <= self.part_dropout <= 1.0, f"part_dropout must lie in [0, 1], got {self.part_dropout}"),
        ]
        for ok, message in checks:
            if not ok:
                raise SkelpipeError(f"training config: {message}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        """A config from a dict (a pipeline section); unknown keys are an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise SkelpipeError(f"training config: unknown setting(s) {', '.join(unknown)}")
        return cls(**d)

    def key(self, **inputs) -> str:
        """Short hash of the settings that define the result, plus the keys of the inputs."""
        blob = json.dumps({"config": _settings(self.to_dict()), "inputs": inputs}, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _settings(config: dict) -> dict:
    """The settings of a config dict that define the result (JSON-normalised)."""
    return json.loads(json.dumps({k: v for k, v in config.items() if k not in RUNTIME_FIELDS}, default=list))


# ----------------------------------------------------------------------------- model files

def save_model(out_dir, model, meta: dict):
    """``model.pt`` (state dict) then ``model.json`` (metadata; its presence marks completion)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out_dir / "model.pt")
    atomic.write_text(out_dir / "model.json", json.dumps(meta, indent=2, default=list) + "\n")


def load_model(model_dir, device="cpu"):
    """(model in eval mode on ``device``, metadata) from a directory written by ``train``."""
    model_dir = Path(model_dir)
    meta_path, weights = model_dir / "model.json", model_dir / "model.pt"
    for path in (meta_path, weights):
        if not path.is_file():
            raise SkelpipeError(f"{path}: missing (not a finished training run)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise SkelpipeError(f"{meta_path}: not valid JSON ({e})") from None
    model = build_model(meta["backbone"], meta["layout"], meta["in_channels"], meta["num_classes"],
                        meta["channels"], meta["temporal_kernel"], meta["num_persons"],
                        meta.get("dropout", 0.0), meta.get("part_pool", "mean"))
    try:
        state = torch.load(weights, map_location=device, weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # a truncated file, or weights of another architecture
        raise SkelpipeError(f"{weights}: cannot load the weights ({str(e).splitlines()[0]})") from None
    return model.to(device).eval(), meta


def load_part_matrix(path) -> torch.Tensor:
    """The action-specific part matrix E (num_classes, 5) from a .npy, .pt or .json file, or
    the ``part_matrix.npy`` of a ``skelpipe partmatrix`` directory."""
    path = Path(path)
    if path.is_dir():
        path = path / "part_matrix.npy"
    if not path.is_file():
        raise SkelpipeError(f"{path}: part matrix file not found")
    try:
        if path.suffix == ".npy":
            e = torch.from_numpy(np.load(path))
        elif path.suffix == ".json":
            data = json.loads(path.read_text())
            e = torch.tensor(data["E"] if isinstance(data, dict) else data)
        else:
            e = torch.load(path, map_location="cpu", weights_only=True)
            e = e["E"] if isinstance(e, dict) else e
    except Exception as err:
        raise SkelpipeError(f"{path}: cannot read the part matrix ({err})") from None
    e = torch.as_tensor(e, dtype=torch.float32)
    if e.dim() != 2 or e.shape[1] != 5:
        raise SkelpipeError(f"{path}: a part matrix has shape (classes, 5), got {tuple(e.shape)}")
    return e


def _atomic_save(obj, path: Path):
    with atomic.replacing(path) as tmp:
        torch.save(obj, tmp)


# ----------------------------------------------------------------------------- data plumbing

def _load_splits(pack, test, cfg):
    """(train split, test split or None, data key): ``pack`` is a pack directory or a split."""
    if isinstance(pack, (str, os.PathLike)):
        from skelpipe.data.pack import input_key, load_split
        train_split = load_split(pack, "train")
        test = load_split(pack, "test") if cfg.eval_every and test is None else test
        return train_split, test, input_key(pack)
    return pack, test, pack.attrs.get("key")


def _fits_on(device, *arrays) -> bool:
    """Whether the arrays fit comfortably (half the free memory) on ``device``."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return sum(a.nbytes for a in arrays) < free // 2


def _resident(array, device, on_device: bool) -> torch.Tensor:
    """A split array as a tensor on ``device`` (when it fits there) or in host memory."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    return t.to(device) if on_device else t


def _epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> np.ndarray:
    """This rank's instance order for an epoch: a permutation seeded by (seed, epoch), padded
    to a multiple of ``world`` and dealt round robin (DistributedSampler's scheme)."""
    g = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0]))
    order = torch.randperm(n, generator=g).numpy()
    pad = (-n) % world
    order = np.concatenate([order, order[:pad]])
    return order[rank::world]


def _hq_batch(idx, has_hq, pair_pool, topup, rng):
    """The HQ batch of an LQ batch: (hq indices, pair_index), both numpy.

    ``B_H`` = the paired instances of ``idx`` in batch order, then ``topup`` extra ``D_pair``
    instances that are not in the LQ batch; ``pair_index[i]`` = position of i's counterpart in
    ``B_H`` or -1.
    """
    paired = has_hq[idx]
    hq_idx = idx[paired]
    pair_index = np.where(paired, np.cumsum(paired) - 1, -1)
    if topup:
        candidates = pair_pool[rng.permutation(len(pair_pool))[: topup + len(idx)]]
        extra = candidates[~np.isin(candidates, idx)][:topup]
        hq_idx = np.concatenate([hq_idx, extra])
    return hq_idx, pair_index


def _epoch_plan(order, batch, has_hq, pair_pool, topup, rng):
    """``_hq_batch`` for every batch of an epoch, concatenated: (HQ indices, pair_index aligned
    with ``order``, offsets of each batch's HQ indices)."""
    hq, pairs, offsets = [], [], [0]
    for start in range(0, len(order), batch):
        hq_idx, pair_index = _hq_batch(order[start:start + batch], has_hq, pair_pool, topup, rng)
        hq.append(hq_idx)
        pairs.append(pair_index)
        offsets.append(offsets[-1] + len(hq_idx))
    return np.concatenate(hq).astype(np.int64), np.concatenate(pairs).astype(np.int64), offsets


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


# ----------------------------------------------------------------------------- distributed

def _setup_distributed(device_name):
    """(rank, world size, device, whether we created the process group), from torchrun's env."""
    device = resolve(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, device, False
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device, created


def _rng_state(device):
    """This process's RNG states (torch, CUDA, numpy, python), as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate()}


def _set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def _average_buffers(model, world):
    """Average BatchNorm running statistics over the ranks (each rank saw its own batches)."""
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= world


# ----------------------------------------------------------------------------- training

def train(cfg: TrainConfig, pack, out_dir, teacher_dir=None, part_matrix=None, test=None) -> Path:
    """Train ``cfg.stage`` on ``pack`` (a pack directory, or a split as ``pack.load_split``
    returns it) into ``out_dir``: ``model.pt``, ``model.json``, ``metrics.jsonl``, ``last.pt``.

    A student with distillation needs ``teacher_dir`` (a finished teacher run) and, for
    ``pmsc``, ``part_matrix`` (a file or a (classes, 5) tensor). ``test``: the test split for
    ``cfg.eval_every`` when ``pack`` is a split. Rerunning resumes; a finished run returns at once.
    """
    out_dir = Path(out_dir)
    if (out_dir / "model.json").is_file():
        done = json.loads((out_dir / "model.json").read_text()).get("config", {})
        if _settings(done) != _settings(cfg.to_dict()):
            raise SkelpipeError(f"{out_dir / 'model.json'}: a finished run of another configuration; "
                                "remove it or use another --out")
        return out_dir
    rank, world, device, created_group = _setup_distributed(cfg.device)
    try:
        _train(cfg, pack, out_dir, teacher_dir, part_matrix, test, rank, world, device)
    finally:
        if created_group:
            dist.destroy_process_group()
    return out_dir


def _train(cfg, pack, out_dir, teacher_dir, part_matrix, test, rank, world, device):
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True
    amp = cfg.amp and device.type == "cuda"
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")  # TF32 where fp32 remains (--no-amp)
    student = cfg.stage == "student"
    distill = student and cfg.kd != "none"
    if cfg.batch_size % world:
        raise SkelpipeError(f"batch size {cfg.batch_size} is not divisible by {world} processes")
    local_batch = cfg.batch_size // world

    # --- data: the whole split as tensors, on the GPU when it fits
    split, test, data_key = _load_splits(pack, test, cfg)
    attrs = split.attrs
    x_np = split.lq if student else split.hq
    layout = attrs["lq_layout"] if student else attrs["hq_layout"]
    has_hq = np.asarray(split.has_hq, dtype=bool)
    labels_np = np.asarray(split.label, dtype=np.int64)
    train_index = (np.arange(len(labels_np)) if student and cfg.lq_data == "all"
                   else np.flatnonzero(has_hq))
    pair_pool = np.flatnonzero(has_hq)
    if len(train_index) == 0:
        raise SkelpipeError("training split: no instance to train on (no HQ skeletons for a teacher)")
    classes = np.unique(labels_np[train_index])
    if len(classes) < 2:
        raise SkelpipeError(f"training split of {pack if isinstance(pack, (str, os.PathLike)) else 'the data'}: "
                            f"{len(train_index)} instance(s) of {len(classes)} class(es); a classifier needs "
                            "at least 2 classes")
    on_device = _fits_on(device, x_np)
    x_all = _resident(x_np, device, on_device)
    data_device = x_all.device
    labels = torch.from_numpy(labels_np).to(device)
    sample_keys = torch.from_numpy(noise.sample_keys(split.ids)).to(device) if student and cfg.op > 0 else None
    num_classes = int(attrs["num_classes"])
    n_channels, t_len, _, n_persons = x_np.shape[1:]

    # --- teacher and part matrix (student with distillation)
    teacher, teacher_meta, part_e, hq_all, cached = None, None, None, None, None
    if distill:
        if teacher_dir is None:
            raise SkelpipeError(f"--kd {cfg.kd} needs --teacher (a trained teacher directory)")
        teacher, teacher_meta = load_model(teacher_dir, device)
        teacher.requires_grad_(False)
        if teacher_meta["layout"] != attrs["hq_layout"] or teacher_meta["num_classes"] != num_classes:
            raise SkelpipeError(
                f"{teacher_dir}: teacher ({teacher_meta['layout']}, {teacher_meta['num_classes']} "
                f"classes) does not match the pack's HQ data ({attrs['hq_layout']}, {num_classes})")
        if len(pair_pool) == 0:
            raise SkelpipeError(f"--kd {cfg.kd}: the training split has no paired (HQ) instance to distil from")
        hq_all = _resident(split.hq, device, cfg.teacher_features == "online" and _fits_on(device, split.hq))
        if cfg.teacher_features == "cached":
            cached = teacher_outputs(teacher, hq_all, pair_pool, cfg.eval_batch_size, device, amp)
            teacher = hq_all = None  # not needed any more
        if cfg.kd == "pmsc":
            if part_matrix is None:
                raise SkelpipeError("--kd pmsc needs --part-matrix (see skelpipe partmatrix)")
            part_e = (load_part_matrix(part_matrix) if isinstance(part_matrix, (str, os.PathLike))
                      else torch.as_tensor(part_matrix, dtype=torch.float32))
            if part_e.shape != (num_classes, 5):
                raise SkelpipeError(f"part matrix: shape {tuple(part_e.shape)}, expected ({num_classes}, 5)")
            part_e = part_e.to(device)

    key = cfg.key(data=data_key, teacher=teacher_meta and teacher_meta["config_key"],
                  part_matrix=None if part_e is None else part_e.cpu().numpy().round(6).tolist())
    meta = {"backbone": cfg.backbone, "layout": layout, "in_channels": int(n_channels),
            "num_classes": num_classes, "class_names": list(attrs.get("class_names", [])),
            "channels": list(cfg.channels), "temporal_kernel": cfg.temporal_kernel,
            "num_persons": int(n_persons), "dropout": cfg.dropout, "part_pool": cfg.part_pool, "T": int(t_len),
            "stage": cfg.stage, "kd": cfg.kd, "config": cfg.to_dict(), "config_key": key,
            "teacher_key": teacher_meta and teacher_meta["config_key"],
            "data": {"key": data_key, **{k: attrs[k] for k in ("benchmark", "extractor", "hq_layout",
                                                               "lq_layout", "test_seed") if k in attrs}}}

    # --- model, optimiser, schedule; resume from last.pt
    model = build_model(cfg.backbone, layout, int(n_channels), num_classes, cfg.channels,
                        cfg.temporal_kernel, int(n_persons), cfg.dropout, cfg.part_pool).to(device)
    part_keep = partmatrix.part_keep_masks(layouts.get(layout)).to(device) if cfg.part_dropout > 0 else None
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(cfg.milestones), cfg.gamma)
    start_epoch, history = 0, []
    last = out_dir / "last.pt"
    if last.is_file():
        ckpt = torch.load(last, map_location="cpu", weights_only=True)
        if ckpt["config_key"] != key:
            raise SkelpipeError(f"{last}: a checkpoint of another configuration (key "
                                f"{ckpt['config_key']}, this run {key}); remove it or use another --out")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if len(ckpt["rng"]) == world:
            _set_rng_state(ckpt["rng"][rank], device)
        start_epoch, history = ckpt["epoch"], ckpt["metrics"]
        if rank == 0:
            console.print(f"resuming {out_dir} after epoch {start_epoch}")
    raw_model = model
    distillation = functools.partial(_distillation, cfg)
    if cfg.compile:
        model = torch.compile(model)
        distillation = torch.compile(distillation, dynamic=True)  # B_H varies from batch to batch
    if world > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                    gradient_as_bucket_view=True)
    if rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)

    # --- the loop
    n_local = -(-len(train_index) // world)
    steps = -(-n_local // local_batch)
    with progress("samples", transient=True) as bar:
        for epoch in range(start_epoch, cfg.epochs):
            model.train()
            # The epoch's plan (instance order; for distillation the HQ batches and pair indices)
            # is made on the CPU and sent to the device once, so the steps never wait on a copy.
            order = train_index[_epoch_order(len(train_index), cfg.seed, epoch, rank, world)]
            order_dev = torch.from_numpy(order).to(device)
            order_data = order_dev.to(data_device)
            if distill:
                hq_order, pair_order, hq_offsets = _epoch_plan(
                    order, local_batch, has_hq, pair_pool, cfg.hq_topup,
                    np.random.default_rng([cfg.seed, epoch, rank]))
                hq_order, pair_order = (torch.from_numpy(a).to(device) for a in (hq_order, pair_order))
            draw_epoch = epoch if cfg.occlusion_draws == "fresh" else None
            alpha = cfg.alpha * min(1.0, (epoch + 1) / cfg.alpha_warmup) if cfg.alpha_warmup else cfg.alpha
            sums = torch.zeros(5, device=device)  # loss, ce, kd (sample-weighted), correct, count
            task = bar.add_task(f"{cfg.stage} epoch {epoch + 1}/{cfg.epochs}", total=steps) if rank == 0 else None
            t0 = time.perf_counter()
            for step in range(steps):
                s0, s1 = step * local_batch, min((step + 1) * local_batch, len(order))
                idx = order_dev[s0:s1]
                x = x_all[order_data[s0:s1]].to(device, non_blocking=True).float()
                y = labels[idx]
                if student and cfg.op > 0:
                    seeds = noise.instance_seeds(cfg.occlusion_seed, sample_keys[idx], "train",
                                                 getattr(split, "name", "train"), draw_epoch)
                    x = x * noise.occlusion_mask(seeds, cfg.op, x.shape[2:], cfg.occlusion_mode)
                if part_keep is not None:
                    x = x * part_dropout_mask(part_keep, len(x), cfg.part_dropout, device)
                with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                    logits, glob, parts = model(x)
                ce = F.cross_entropy(logits.float(), y)
                kd = torch.zeros((), device=device)
                if distill:
                    hq_idx = hq_order[hq_offsets[step]:hq_offsets[step + 1]]
                    pair_index = pair_order[s0:s1]
                    if cached is not None:
                        t_logits, t_glob, t_parts = (c[hq_idx] for c in cached)
                    else:
                        with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
                            hx = hq_all[hq_idx.to(hq_all.device)].to(device, non_blocking=True).float()
                            t_logits, t_glob, t_parts = (t.float() for t in teacher(hx))
                    kd = distillation(logits.float(), glob.float(), parts.float(), y,
                                       t_logits, t_glob, t_parts, labels[hq_idx], pair_index, part_e)
                loss = ce + alpha * kd
                if distill and step == 0 and world == 1:  # once an epoch: how hard each term pulls
                    grad_norms = _gradient_norms(raw_model, ce, alpha * kd)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                with torch.no_grad():
                    n = float(s1 - s0)
                    sums[:4] += torch.stack([loss.detach() * n, ce.detach() * n, kd.detach() * n,
                                             (logits.argmax(1) == y).sum().float()])
                    sums[4] += n
                if task is not None:
                    bar.update(task, advance=1, rate=(step + 1) * local_batch * world / (time.perf_counter() - t0))
            if world > 1:
                dist.all_reduce(sums)
                _average_buffers(raw_model, world)
            loss_sum, ce_sum, kd_sum, correct, count = sums.tolist()
            elapsed = time.perf_counter() - t0
            if task is not None:
                bar.remove_task(task)
            record = {"epoch": epoch + 1, "loss": loss_sum / count, "ce": ce_sum / count,
                      "kd": kd_sum / count, "lr": optimizer.param_groups[0]["lr"],
                      "train_acc": correct / count, "samples_per_s": count / elapsed, "time": elapsed}
            if distill and world == 1:
                record.update(grad_ce=grad_norms[0], grad_kd=grad_norms[1], alpha=alpha)
            if test is not None and cfg.eval_every and rank == 0 and (
                    (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs):
                record.update(_test_accuracy(raw_model, test, cfg, device, amp))
            history.append(record)
            scheduler.step()
            rng = [_rng_state(device)]
            if world > 1:
                rng = [None] * world
                dist.all_gather_object(rng, _rng_state(device))
            if rank == 0:
                _atomic_save({"model": raw_model.state_dict(), "optimizer": optimizer.state_dict(),
                              "scheduler": scheduler.state_dict(), "rng": rng, "epoch": epoch + 1,
                              "metrics": history, "config_key": key}, last)
                atomic.write_text(out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
                console.print(_epoch_line(record))
    if rank == 0:
        save_model(out_dir, raw_model, {**meta, "epochs_done": len(history), "metrics": history[-1]})


def _gradient_norms(model, ce, kd) -> tuple[float, float]:
    """L2 norms of the gradients of ``ce`` and of ``kd`` (already weighted by alpha) with respect to
    the weights, each on its own (the graph is kept for the step's real backward pass)."""
    params = [p for p in model.parameters() if p.requires_grad]
    norms = []
    for term in (ce, kd):
        grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
        norms.append(float(torch.sqrt(sum((g.float() ** 2).sum() for g in grads if g is not None))))
    return norms[0], norms[1]


def part_dropout_mask(part_keep: torch.Tensor, n: int, p: float, device) -> torch.Tensor:
    """(n, 1, 1, V, 1) keep-mask: with probability ``p`` an instance loses one body part drawn
    uniformly (all its joints, frames, persons and channels), as the part matrix occludes it; so
    a teacher trained with it has seen occluded parts and E measures reliance, not surprise."""
    drop = torch.rand(n, device=device) < p
    part = torch.randint(len(part_keep), (n,), device=device)
    keep = torch.where(drop[:, None], part_keep[part], torch.ones_like(part_keep[part]))
    return keep[:, None, None, :, None]


def _distillation(cfg, logits, glob, parts, y, t_logits, t_glob, t_parts, t_labels, pair_index, part_e):
    """The distillation term of ``cfg.kd`` for one batch (float32 inputs)."""
    if cfg.kd == "kl":
        return losses.kl_distill_loss(logits, t_logits, pair_index, T=cfg.kl_temperature)
    if cfg.kd == "global-msc":
        return losses.global_msc_loss(glob, t_glob, y, t_labels, pair_index, w=cfg.w, tau=cfg.tau)
    return losses.pmsc_loss(parts, t_parts, y, t_labels, pair_index, part_e, w=cfg.w, tau=cfg.tau)


def _test_accuracy(model, test, cfg, device, amp) -> dict:
    """Top-1/top-5 on the test split: HQ for a teacher, occluded LQ (fixed draws) for a student."""
    student = cfg.stage == "student"
    labels = np.asarray(test.label)
    seeds = None
    if student:
        x = test.lq
        if cfg.op > 0:
            seeds = noise.test_seeds(int(test.attrs.get("test_seed", 0)), test.ids, getattr(test, "name", "test"))
    else:
        keep = np.asarray(test.has_hq, dtype=bool)
        x, labels = test.hq[keep], labels[keep]
    logits = predict(model, x, batch_size=cfg.eval_batch_size, device=device, amp=amp,
                     op=cfg.op if student else 0.0, mode=cfg.occlusion_mode, seeds=seeds)
    model.train()
    top1, top5 = topk_accuracy(logits, torch.from_numpy(labels), (1, 5))
    return {"test_top1": top1, "test_top5": top5}


def _epoch_line(r: dict) -> str:
    line = (f"epoch {r['epoch']}: loss {r['loss']:.4f} (ce {r['ce']:.4f}, kd {r['kd']:.4f}) "
            f"acc {r['train_acc']:.3f} lr {r['lr']:.3g} {r['samples_per_s']:,.0f} samples/s")
    if "test_top1" in r:
        line += f" test top-1 {r['test_top1']:.3f} top-5 {r['test_top5']:.3f}"
    return line


# ----------------------------------------------------------------------------- command line

_DEFAULTS = TrainConfig()


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def _default(name):
    value = getattr(_DEFAULTS, name)
    return f"[default: {','.join(map(str, value)) if isinstance(value, tuple) else value}]"


@click.command("train")
@click.option("--stage", type=click.Choice(STAGES), required=True, help="teacher (HQ, cross-entropy) or student (LQ + distillation).")
@click.option("--kd", type=click.Choice(KD_VARIANTS), default="none", show_default=True, help="Student distillation term.")
@click.option("--pack", "pack_dir", required=True, type=click.Path(exists=True), help="Packed data directory (skelpipe pack).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory (rerun to resume).")
@click.option("--teacher", "teacher_dir", type=click.Path(file_okay=False), help="Trained teacher directory (students with --kd).")
@click.option("--part-matrix", type=click.Path(), help="Part matrix E (skelpipe partmatrix directory or .npy/.pt/.json file) for --kd pmsc.")
@click.option("--backbone", type=click.Choice(["stgcn", "agcn"]), default=None, help=_default("backbone"))
@click.option("--channels", callback=_int_list, help="Channels of the blocks, comma-separated. " + _default("channels"))
@click.option("--temporal-kernel", type=int, help=_default("temporal_kernel"))
@click.option("--dropout", type=float, help=_default("dropout"))
@click.option("--epochs", type=int, help=_default("epochs"))
@click.option("--batch-size", type=int, help="Global batch size. " + _default("batch_size"))
@click.option("--lr", type=float, help=_default("lr"))
@click.option("--milestones", callback=_int_list, help="Epochs where lr is multiplied by --gamma. " + _default("milestones"))
@click.option("--gamma", type=float, help=_default("gamma"))
@click.option("--momentum", type=float, help=_default("momentum"))
@click.option("--weight-decay", type=float, help=_default("weight_decay"))
@click.option("--alpha", type=float, help="Weight of the distillation term. " + _default("alpha"))
@click.option("--alpha-warmup", type=int, help="Epochs over which alpha ramps up linearly (0: none). " + _default("alpha_warmup"))
@click.option("--w", type=float, help="Weight of the positives in the MSC losses. " + _default("w"))
@click.option("--tau", type=float, help="Temperature of the MSC losses. " + _default("tau"))
@click.option("--kl-temperature", type=float, help=_default("kl_temperature"))
@click.option("--hq-topup", type=int, help="Extra D_pair HQ instances per HQ batch. " + _default("hq_topup"))
@click.option("--lq-data", type=click.Choice(["all", "pair"]), help="Student LQ data: D_pair ∪ D_sol or D_pair only. " + _default("lq_data"))
@click.option("--op", type=float, help="Occlusion probability of the LQ input. " + _default("op"))
@click.option("--occlusion-mode", type=click.Choice(list(noise.MODES)), help=_default("occlusion_mode"))
@click.option("--occlusion-draws", type=click.Choice(["fixed", "fresh"]), help=_default("occlusion_draws"))
@click.option("--part-pool", type=click.Choice(list(PART_POOLS)), help="Part features over the person slots. " + _default("part_pool"))
@click.option("--part-dropout", type=float, help="Probability of zeroing one random body part of a training input. " + _default("part_dropout"))
@click.option("--seed", type=int, help="Seed of the initialisation and the data order. " + _default("seed"))
@click.option("--occlusion-seed", type=int, help="Seed of the training occlusion masks. " + _default("occlusion_seed"))
@click.option("--device", help="auto, cpu, cuda or cuda:<i>. " + _default("device"))
@click.option("--amp/--no-amp", default=None, help="bf16 autocast on CUDA. [default: on]")
@click.option("--compile", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--eval-every", type=int, help="Test top-1/top-5 every N epochs (0: never). " + _default("eval_every"))
@click.option("--teacher-features", type=click.Choice(["cached", "online"]), help=_default("teacher_features"))
@click.option("--deterministic", is_flag=True, default=None, help="Deterministic kernels (slower on CUDA).")
def train_command(pack_dir, out_dir, teacher_dir, part_matrix, **options):
    """Train the teacher (HQ skeletons) or a student (LQ skeletons, optional distillation).

    SGD with METHOD.md's schedule (all settable). A checkpoint is written every epoch: rerun the
    same command to resume. Under torchrun --nproc-per-node N it trains with DDP (NCCL on GPUs,
    gloo on CPUs; --batch-size is the global batch).

    \b
    Example:
      skelpipe train --stage teacher --pack cache/pack/ab12 --out runs/teacher
      skelpipe partmatrix --teacher runs/teacher --pack cache/pack/ab12 --out runs/E
      skelpipe train --stage student --kd pmsc --op 0.3 --pack cache/pack/ab12 \\
          --teacher runs/teacher --part-matrix runs/E/part_matrix.npy --out runs/student
      torchrun --nproc-per-node 8 -m skelpipe train --stage teacher --pack cache/pack/ab12 --out runs/t8
    """
    cfg = TrainConfig.from_dict({k: v for k, v in options.items() if v is not None})
    train(cfg, pack_dir, out_dir, teacher_dir=teacher_dir, part_matrix=part_matrix)
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"[green]trained[/] {cfg.stage} → {out_dir}")


# ----------------------------------------------------------------------------- benchmark

def random_split(n, layout, lq_layout="coco17", frames=300, num_classes=60, seed=0):
    """NTU-60-shaped random data: HQ in ``layout`` (3 channels), LQ in ``lq_layout``."""
    from types import SimpleNamespace

    from skelpipe.skeleton import layouts
    g = torch.Generator().manual_seed(seed)

    def skeletons(name):
        return torch.randn(n, 3, frames, layouts.get(name).num_joints, 2, generator=g).numpy()

    return SimpleNamespace(hq=skeletons(layout), lq=skeletons(lq_layout), has_hq=np.ones(n, bool),
                           label=torch.randint(num_classes, (n,), generator=g).numpy(),
                           ids=[str(i) for i in range(n)],
                           attrs={"hq_layout": layout, "lq_layout": lq_layout, "num_classes": num_classes,
                                  "key": f"random-{n}-{frames}-{seed}"})


@click.command("train")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 autocast (CUDA only).")
@click.option("--compile", is_flag=True, help="torch.compile the model.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--steps", type=int, default=20, show_default=True, help="Timed steps per run (after a warm-up epoch of as many).")
@click.option("--frames", type=int, default=300, show_default=True, help="T.")
@click.option("--channels", callback=_int_list, default=None, help="Block channels [default: ST-GCN's].")
@click.option("--runs", default="teacher,none,kl,global-msc,pmsc", show_default=True, help="Which runs (teacher and/or student kd variants).")
@click.option("--profile", is_flag=True, help="Print torch.profiler's top operators of each run.")
def bench_command(device, amp, compile, batch_size, steps, frames, channels, runs, profile):
    """Training throughput (samples/s) of the teacher (ntu25, 3D) and the student (coco17, 2D)
    with each distillation variant, on NTU-60-shaped random data (M=2, 60 classes).

    Each run is the real training loop for two epochs of --steps batches; the second (warm)
    epoch is timed. Overhead = student time per sample relative to the student without
    distillation (teacher features cached, as in training).

    \b
    Example:
      skelpipe bench train --device cuda --amp --steps 50
      skelpipe bench train --device cpu --steps 2 --frames 64 --runs none,pmsc
    """
    import tempfile

    from rich.console import Console
    from rich.table import Table

    channels = channels or DEFAULT_CHANNELS
    wanted = [r.strip() for r in runs.split(",") if r.strip()]
    for r in wanted:
        if r != "teacher" and r not in KD_VARIANTS:
            raise SkelpipeError(f"--runs: unknown run {r!r} (teacher, {', '.join(KD_VARIANTS)})")
    data = random_split(batch_size * steps, "ntu25", frames=frames)
    base = dict(channels=channels, epochs=2, batch_size=batch_size, milestones=(), device=device, amp=amp,
                compile=compile, op=0.3)
    results = {}
    with tempfile.TemporaryDirectory(prefix="skelpipe-bench-") as tmp:
        tmp = Path(tmp)
        teacher_dir = tmp / "random-teacher"
        teacher = build_model("stgcn", "ntu25", 3, 60, channels)
        save_model(teacher_dir, teacher, {"backbone": "stgcn", "layout": "ntu25", "in_channels": 3,
                                          "num_classes": 60, "channels": list(channels), "temporal_kernel": 9,
                                          "num_persons": 2, "stage": "teacher", "config_key": "random"})
        part_e = torch.softmax(torch.rand(60, 5), dim=1)
        for run in wanted:
            cfg = TrainConfig(stage="teacher", **base) if run == "teacher" else \
                TrainConfig(stage="student", kd=run, **base)
            console.print(f"bench: {run} ({'ntu25 3D' if run == 'teacher' else 'coco17 2D'}) ...")
            with torch.profiler.profile(activities=_profiler_activities()) if profile else nullcontext() as prof:
                train(cfg, data, tmp / f"run-{run}", teacher_dir=teacher_dir, part_matrix=part_e)
            if profile:
                sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
                click.echo(prof.key_averages().table(sort_by=sort, row_limit=15))
            last = [json.loads(line) for line in (tmp / f"run-{run}" / "metrics.jsonl").read_text().splitlines()][-1]
            results[run] = last["samples_per_s"]

    table = Table(title=f"skelpipe bench train: batch {batch_size}, T={frames}, M=2, 60 classes, "
                        f"{steps} timed steps, device {device}, amp {amp}, compile {compile}")
    for col in ("run", "input", "samples/s", "ms/step", "overhead vs student w/o KD"):
        table.add_column(col, justify="left" if col in ("run", "input") else "right", no_wrap=col == "run")
    for run, rate in results.items():
        over = f"{results['none'] / rate - 1:+.1%}" if run not in ("teacher", "none") and "none" in results else ""
        table.add_row(run if run == "teacher" else f"student kd={run}",
                      "ntu25 3D (HQ)" if run == "teacher" else "coco17 2D (LQ)",
                      f"{rate:,.1f}", f"{1000 * batch_size / rate:,.1f}", over)
    Console().print(table)


def _profiler_activities():
    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts

