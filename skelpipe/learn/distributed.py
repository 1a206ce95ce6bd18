"""DistributedDataParallel plumbing: the process group from torchrun's environment, every RNG
state of a process (saved with each checkpoint for exact resume), BatchNorm statistics averaged
over the ranks."""

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from skelpipe.core.device import native_bf16, resolve


@dataclass(frozen=True)
class Run:
    """Where this process computes: its ``rank`` of ``world`` processes, its ``device``, and
    whether it runs bf16 autocast (``amp``: asked for, and native on the device)."""

    rank: int
    world: int
    device: torch.device
    amp: bool

    @property
    def main(self) -> bool:
        """The process that writes files and prints."""
        return self.rank == 0

    def autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.amp)


@contextmanager
def process_group(device_name, amp: bool):
    """The ``Run`` of this process, from torchrun's environment (one process without it); a process
    group made here is destroyed on leaving."""
    device = resolve(device_name)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    created = False
    if world > 1:
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        created = not dist.is_initialized()
        if created:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)
    try:
        yield Run(rank, world, device, amp and native_bf16(device))
    finally:
        if created:
            dist.destroy_process_group()


def rng_state(device):
    """This process's RNG states (torch, CUDA, numpy, python), as tensors and plain values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate()}


def set_rng_state(state, device):
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


def average_buffers(model, world):
    """Average BatchNorm running statistics over the ranks (each rank saw its own batches)."""
    for buf in model.buffers():
        if buf.is_floating_point():
            dist.all_reduce(buf)
            buf /= world
