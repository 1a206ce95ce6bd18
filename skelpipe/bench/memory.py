"""Peak memory: of this process (every benchmark reports it), and of training on an NTU-60-sized
pack that does not fit in memory (``skelpipe bench memory``)."""

import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.table import Table

from skelpipe.bench.inputs import random_teacher, sparse_pack
from skelpipe.core.device import resolve
from skelpipe.data.split import DiskRows, data_file, load_split, physical_memory
from skelpipe.learn.config import TrainConfig
from skelpipe.learn.models import DEFAULT_CHANNELS
from skelpipe.learn.train import train_split


def peak_memory(device) -> dict:
    """This process's peak resident memory (and peak GPU memory allocated, on CUDA), in MiB."""
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


@dataclass(frozen=True)
class MemoryBench:
    """The settings of ``skelpipe bench memory`` (its options' help says what each means)."""

    samples: int
    frames: int
    stage: str  # teacher, or student: PMSC distillation with the teacher run online
    batch_size: int
    steps: int
    channels: tuple[int, ...] | None  # None: ST-GCN's
    device: str
    where: Path | None  # the folder of the temporary pack; None: the system's


@dataclass(frozen=True)
class MemoryResult:
    """What ``measure_memory`` found, by name (the keys of its JSON line)."""

    values: dict

    def as_json(self) -> dict:
        return self.values

    def table(self) -> Table:
        v = self.values
        table = Table(title=f"training memory on an NTU-60-sized pack ({v['samples']:,} × 3 × {v['frames']} × 25 × 2)")
        for col in ("what", "value"):
            table.add_column(col)
        for k, value in v.items():
            table.add_row(k, str(value))
        return table


def measure_memory(s: MemoryBench) -> MemoryResult:
    """Peak host memory of ``s.steps`` training steps on a sparse pack of ``s.samples`` instances,
    read as ``skelpipe train`` reads a pack (rows from disk when a split exceeds a quarter of the RAM)."""
    channels = s.channels or DEFAULT_CHANNELS
    dev = resolve(s.device)
    student = s.stage == "student"
    with tempfile.TemporaryDirectory(prefix="skelpipe-bench-", dir=s.where) as tmp:
        tmp = Path(tmp)
        pack = data_file(sparse_pack(tmp / "pack", s.samples, s.frames))
        data_gb, disk_gb = pack.stat().st_size / 1e9, pack.stat().st_blocks * 512 / 1e9
        cfg = TrainConfig(stage=s.stage, kd="pmsc" if student else "none", channels=channels,
                          epochs=1, batch_size=s.batch_size, max_steps=s.steps, device=s.device,
                          teacher_features="online", op=0.3 if student else 0.0)
        teacher_dir = random_teacher(tmp / "teacher", channels)[0] if student else None
        part_e = torch.softmax(torch.rand(60, 5), dim=1) if student else None
        t0 = time.perf_counter()
        split = load_split(pack, "train", rows="auto")  # as skelpipe train reads a pack
        train_split(cfg, split, tmp / "run", teacher_dir=teacher_dir, part_matrix=part_e)
        wall = time.perf_counter() - t0
    return MemoryResult({
        "bench": "memory", "device": str(dev), "stage": s.stage, "samples": s.samples, "frames": s.frames,
        "batch": s.batch_size, "steps": s.steps, "channels": list(channels),
        "rows": "disk" if isinstance(split.hq, DiskRows) else "memory",
        "pack_gb": round(data_gb, 1), "pack_disk_gb": round(disk_gb, 3),
        "ram_gb": round(physical_memory() / 1e9, 1), "train_wall_s": round(wall, 1), **peak_memory(dev)})
