"""Training throughput (samples/s) of the real training loop, teacher and students, and the
teacher's inference throughput, on NTU-60-shaped random data (``skelpipe bench train``)."""

import json
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np
import torch
from rich.table import Table

from skelpipe.bench.inputs import random_split, random_teacher
from skelpipe.bench.memory import peak_memory
from skelpipe.core.console import console
from skelpipe.core.device import resolve
from skelpipe.core.errors import SkelpipeError
from skelpipe.learn.config import KD_VARIANTS, TrainConfig
from skelpipe.learn.evaluate import predict
from skelpipe.learn.models import DEFAULT_CHANNELS
from skelpipe.learn.train import train_split


@dataclass(frozen=True)
class TrainBench:
    """The settings of ``skelpipe bench train`` (its options' help says what each means)."""

    device: str
    amp: bool
    compile: bool
    batch_size: int
    steps: int
    frames: int
    channels: tuple[int, ...] | None  # None: ST-GCN's
    runs: tuple[str, ...]  # teacher and/or student distillation variants (parse_runs)
    profile: bool
    progress: bool  # a line as each run starts


def parse_runs(text: str) -> tuple[str, ...]:
    """``--runs``' comma-separated list: teacher and/or distillation variants, checked."""
    runs = tuple(r.strip() for r in text.split(",") if r.strip())
    for r in runs:
        if r != "teacher" and r not in KD_VARIANTS:
            raise SkelpipeError(f"--runs: unknown run {r!r} (teacher, {', '.join(KD_VARIANTS)})")
    return runs


@dataclass(frozen=True)
class RunRate:
    """Samples/s of one run's timed epoch: without its first step (``steady``), and in all."""

    steady: float
    epoch: float


@dataclass(frozen=True)
class TrainResult:
    """What ``measure_training`` found: each run's rate, the teacher's inference rate, peak memory."""

    settings: TrainBench
    device: torch.device
    channels: tuple[int, ...]
    runs: dict[str, RunRate]
    infer_samples_per_s: float
    memory: dict

    def as_json(self) -> dict:
        s = self.settings
        return {"bench": "train", "device": str(self.device), "batch": s.batch_size, "frames": s.frames,
                "persons": 2, "channels": list(self.channels), "amp": s.amp, "compile": s.compile,
                "threads": torch.get_num_threads(), "steps": s.steps,
                "train_samples_per_s": {r: round(v.steady, 2) for r, v in self.runs.items()},
                "epoch_samples_per_s": {r: round(v.epoch, 2) for r, v in self.runs.items()},
                "infer_samples_per_s": round(self.infer_samples_per_s, 2), **self.memory}

    def table(self) -> Table:
        s = self.settings
        table = Table(title=f"skelpipe bench train: batch {s.batch_size}, T={s.frames}, M=2, 60 classes, "
                            f"{s.steps} timed steps, device {s.device}, amp {s.amp}, compile {s.compile}")
        for col in ("run", "input", "samples/s", "ms/step", "overhead vs student w/o KD"):
            table.add_column(col, justify="left" if col in ("run", "input") else "right", no_wrap=col == "run")
        rates = {run: r.steady for run, r in self.runs.items()}
        for run, rate in rates.items():
            over = f"{rates['none'] / rate - 1:+.1%}" if run not in ("teacher", "none") and "none" in rates else ""
            table.add_row(run if run == "teacher" else f"student kd={run}",
                          "ntu25 3D (HQ)" if run == "teacher" else "coco17 2D (LQ)",
                          f"{rate:,.1f}", f"{1000 * s.batch_size / rate:,.1f}", over)
        infer = self.infer_samples_per_s
        table.add_row("teacher inference", "ntu25 3D (HQ)", f"{infer:,.1f}", f"{1000 * s.batch_size / infer:,.1f}", "")
        return table


def measure_training(s: TrainBench) -> TrainResult:
    """Each run is the real training loop for two epochs of ``s.steps`` batches; the second (warm)
    epoch is timed. The students distil from an untrained teacher with a random part matrix."""
    channels = s.channels or DEFAULT_CHANNELS
    dev = resolve(s.device)
    data = random_split(s.batch_size * s.steps, "ntu25", frames=s.frames)
    base = dict(channels=channels, epochs=2, batch_size=s.batch_size, milestones=(), device=s.device, amp=s.amp,
                compile=s.compile, op=0.3)
    rates = {}
    with tempfile.TemporaryDirectory(prefix="skelpipe-bench-") as tmp:
        tmp = Path(tmp)
        teacher_dir, teacher = random_teacher(tmp / "random-teacher", channels)
        part_e = torch.softmax(torch.rand(60, 5), dim=1)
        for run in s.runs:
            cfg = TrainConfig(stage="teacher", **base) if run == "teacher" else \
                TrainConfig(stage="student", kd=run, **base)
            if s.progress:
                console.print(f"bench: {run} ({'ntu25 3D' if run == 'teacher' else 'coco17 2D'}) ...")
            rates[run] = _timed_run(cfg, data, tmp / f"run-{run}", teacher_dir, part_e, s.profile)
        infer = _inference_rate(teacher, data.hq[:s.batch_size], max(1, s.steps // 2), dev, s.amp)
    return TrainResult(s, dev, channels, rates, infer, peak_memory(dev))


def _timed_run(cfg: TrainConfig, data, run_dir: Path, teacher_dir: Path, part_e, profile: bool) -> RunRate:
    """One training run; its last epoch's rates from the run's metrics (with ``profile``, torch.profiler's
    top operators printed as well)."""
    with torch.profiler.profile(activities=_profiler_activities()) if profile else nullcontext() as prof:
        train_split(cfg, data, run_dir, teacher_dir=teacher_dir, part_matrix=part_e)
    if profile:
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        click.echo(prof.key_averages().table(sort_by=sort, row_limit=15))
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    return RunRate(steady=last.get("steady_samples_per_s") or last["samples_per_s"], epoch=last["samples_per_s"])


def _inference_rate(model, batch: np.ndarray, repeats: int, device, amp: bool) -> float:
    """Samples/s of ``predict`` (evaluation's forward pass) on one batch, repeated, after a warm-up."""
    model = model.to(device)
    x = np.concatenate([batch] * repeats)
    predict(model, batch, batch_size=len(batch), device=device, amp=amp)
    t0 = time.perf_counter()
    predict(model, x, batch_size=len(batch), device=device, amp=amp)
    return len(x) / (time.perf_counter() - t0)


def _profiler_activities():
    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts
