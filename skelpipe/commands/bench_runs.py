"""``skelpipe bench train|extract``: throughput benchmarks (samples/s, frames/s) of the real
training loop and the real extraction pipeline, and of the reference they are compared with."""

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import click
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from skelpipe.commands.extract import extract_file
from skelpipe.commands.train import _int_list
from skelpipe.core.console import console
from skelpipe.core.device import resolve
from skelpipe.core.errors import SkelpipeError
from skelpipe.data.split import Split
from skelpipe.learn.checkpoint import save_model
from skelpipe.learn.config import KD_VARIANTS, TrainConfig
from skelpipe.learn.models import DEFAULT_CHANNELS, build_model
from skelpipe.learn.train import train_split
from skelpipe.pose.decoding import BIASED_CONFIG
from skelpipe.pose.extract import sample_id_for
from skelpipe.pose.network import (
    Network,
    Runner,
    checkpoint_file,
    load_network,
    random_checkpoint,
    resolve_backbone,
)
from skelpipe.pose.video import VideoReader, frames, probe
from skelpipe.skeleton import layouts
from skelpipe.skeleton.store import open_store


@click.group("bench")
def bench_command():
    """Speed benchmarks; print tables of measured throughput.

    \b
    Example:
      skelpipe bench train --device cuda --amp
      skelpipe bench extract --backbone shufflenetv2k16 --video clip.mp4
    """


def random_split(n, layout, lq_layout="coco17", frames=300, num_classes=60, seed=0):
    """A ``Split`` of NTU-60-shaped random data: HQ in ``layout`` (3 channels), LQ in ``lq_layout``."""
    g = torch.Generator().manual_seed(seed)

    def skeletons(name):
        return torch.randn(n, 3, frames, layouts.get(name).num_joints, 2, generator=g).numpy()

    return Split(hq=skeletons(layout), lq=skeletons(lq_layout), has_hq=np.ones(n, bool),
                 label=torch.randint(num_classes, (n,), generator=g).numpy(),
                 ids=[str(i) for i in range(n)],
                 attrs={"hq_layout": layout, "lq_layout": lq_layout, "num_classes": num_classes,
                        "key": f"random-{n}-{frames}-{seed}"})


@bench_command.command("train")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp/--no-amp", default=True, show_default=True, help="bf16 autocast (CUDA only).")
@click.option("--compile", is_flag=True, help="torch.compile the model.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--steps", type=int, default=20, show_default=True, help="Timed steps per run (after a warm-up epoch of as many).")
@click.option("--frames", type=int, default=300, show_default=True, help="T.")
@click.option("--channels", callback=_int_list, default=None, help="Block channels [default: ST-GCN's].")
@click.option("--runs", default="teacher,none,kl,global-msc,pmsc", show_default=True, help="Which runs (teacher and/or student kd variants).")
@click.option("--profile", is_flag=True, help="Print torch.profiler's top operators of each run.")
def bench_train(device, amp, compile, batch_size, steps, frames, channels, runs, profile):
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
                train_split(cfg, data, tmp / f"run-{run}", teacher_dir=teacher_dir, part_matrix=part_e)
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


# --------------------------------------------------------------------------- extraction

def bench_network(net: Network, video: Path, device, batch_size: int, long_edge: int | None) -> tuple[float, int]:
    """Frames/s of the network alone (forward + copy of the fields to host) on the video's frames in memory."""
    info = probe(video, long_edge)
    with VideoReader(info, batch_size) as reader:
        batches = [b.copy() for _, b in reader]
    frames = np.concatenate(batches)
    batches = [frames[i:i + batch_size] for i in range(0, len(frames), batch_size)]
    runner = Runner(net, device)
    runner.fields(runner.launch(batches[0]))  # warm-up (cudnn autotune, allocations)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    pending = None
    for b in batches:
        launched = runner.launch(b)
        if pending is not None:
            runner.fields(pending)
        pending = launched
    runner.fields(pending)
    return len(frames) / (time.perf_counter() - t0), len(frames)


def bench_openpifpaf_video(video: Path, checkpoint: str, device, long_edge: int | None,
                           decoder_config: dict | None) -> tuple[float, float, int]:
    """``python -m openpifpaf.video`` on the video: (frames/s of its frame loop, wall seconds, frames)."""
    cfg = {**dict(decoder_config or {})}
    neighbors = cfg.pop("cif_neighbors", None)
    args = ["--source", str(video), "--checkpoint", str(checkpoint), "--json-output"]
    with tempfile.TemporaryDirectory() as tmp:
        args.append(str(Path(tmp) / "out.json"))
        if long_edge:
            args += ["--long-edge", str(long_edge)]
        if device.type != "cuda":
            args.append("--disable-cuda")
        for key, flag in (("seed_threshold", "--seed-threshold"), ("cif_th", "--cif-th"), ("caf_th", "--caf-th"),
                          ("keypoint_threshold", "--keypoint-threshold"),
                          ("instance_threshold", "--instance-threshold")):
            if key in cfg:
                args += [flag, str(cfg[key])]
        # same decoder settings as ours; the CifHr neighbour count has no flag, so set it before running
        code = ("import sys, runpy, torch, openpifpaf\n"
                + (f"torch.classes.openpifpaf_decoder_utils.CifHr.set_neighbors({int(neighbors)})\n"
                   if neighbors else "")
                + f"sys.argv = ['openpifpaf.video'] + {args!r}\n"
                + "runpy.run_module('openpifpaf.video', run_name='__main__')\n")
        env = dict(os.environ, TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1", MPLBACKEND="Agg")
        if device.type == "cuda" and device.index is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(device.index)
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise SkelpipeError(f"python -m openpifpaf.video failed on {video} (exit {proc.returncode}):\n{tail}")
    loops = [float(m) for m in re.findall(r"loop time = (\d+(?:\.\d+)?)ms", proc.stdout + proc.stderr)]
    steady = loops[1:] or loops
    fps = len(steady) / (sum(steady) / 1000.0) if steady and sum(steady) else 0.0
    return fps, wall, len(loops)


@bench_command.command("extract")
@click.option("--backbone", required=True, help="Backbone / checkpoint name (as for skelpipe extract).")
@click.option("--video", required=True, type=click.Path(exists=True, path_type=Path),
              help="One video (or frame folder).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="A local checkpoint.")
@click.option("--weights", type=click.Choice(["checkpoint", "random", "biased"]), default="checkpoint",
              show_default=True,
              help="checkpoint: the named / given checkpoint; random: randomly initialised network (no people "
                   "found); biased: random network with heads fixed to a person everywhere (decoder busy).")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=int, default=None, help="[16 on CUDA, 4 on CPU]")
@click.option("--long-edge", type=int, default=641, show_default=True)
@click.option("--decoder-workers", type=int, default=None)
@click.option("--max-frames", type=int, default=None, help="Use only the first N frames.")
@click.option("--skip-openpifpaf-video", is_flag=True, help="Do not run python -m openpifpaf.video.")
def bench_extract(backbone, video, checkpoint, weights, device, batch_size, long_edge, decoder_workers, max_frames,
                  skip_openpifpaf_video):
    """Frames/s on one video: skelpipe extract end to end, the network alone, and python -m openpifpaf.video.

    \b
    Example:
      skelpipe bench extract --backbone shufflenetv2k16 --video clip.mp4 --device cuda
      skelpipe bench extract --backbone mobilenetv3small --video clip.mp4 --weights biased --device cpu
    """
    dev = resolve(device)
    batch_size = batch_size or (16 if dev.type == "cuda" else 4)
    decoder_config = dict(BIASED_CONFIG) if weights == "biased" else None
    with tempfile.TemporaryDirectory(prefix="skelpipe-bench-") as tmp:
        tmp = Path(tmp)
        if weights == "checkpoint":
            if checkpoint is None:
                load_network(backbone)  # named: from the hub cache, else downloaded there
                checkpoint = str(checkpoint_file(resolve_backbone(backbone))[1])
        else:
            checkpoint = str(random_checkpoint(backbone, tmp / "random.pkl", biased=weights == "biased"))
        clip = video
        if max_frames:
            clip = _first_frames(video, max_frames, tmp)
        net = load_network(backbone, checkpoint)
        console.print(f"[bold]{resolve_backbone(backbone)}[/] ({weights} weights) on {dev}, batch {batch_size}, "
                      f"long edge {long_edge}, {'fp16' if dev.type == 'cuda' else 'fp32'}: {video}")
        net_fps, n = bench_network(net, clip, dev, batch_size, long_edge)
        t0 = time.perf_counter()
        work_root = tmp / "e2e.h5"
        manifest = extract_file([clip], work_root, backbone=backbone, checkpoint=checkpoint, device=str(dev),
                                batch_size=batch_size, long_edge=long_edge, decoder_workers=decoder_workers,
                                decoder_config=decoder_config)
        e2e_wall = time.perf_counter() - t0
        e2e_fps = manifest.get("extract_fps", 0.0)
        with open_store(work_root) as s:
            smp = s.read(s.ids()[0])
            people = int((smp.keypoints[..., 2] > 0).any(axis=2).sum())
        rows = [("skelpipe extract (end to end)", e2e_fps, f"{e2e_wall:.1f} s incl. start-up; {people} person-frames")]
        rows.append((f"network alone (batch {batch_size})", net_fps, "forward + fields to host"))
        if not skip_openpifpaf_video:
            op_fps, op_wall, op_n = bench_openpifpaf_video(clip, checkpoint, dev, long_edge, decoder_config)
            rows.append(("python -m openpifpaf.video", op_fps, f"{op_wall:.1f} s incl. start-up; {op_n} frames"))
    table = Table(title=f"extraction speed, {n} frames")
    table.add_column("what")
    table.add_column("frames/s", justify="right")
    table.add_column("vs openpifpaf.video", justify="right")
    table.add_column("note")
    ref = rows[2][1] if len(rows) > 2 and rows[2][1] else None
    for what, fps, note in rows:
        table.add_row(what, f"{fps:,.1f}", f"{fps / ref:.2f}x" if ref else "", note)
    console.print(table)


def _first_frames(video: Path, n: int, tmp: Path) -> Path:
    """The first ``n`` frames of ``video`` as an MJPG .avi (so every tool sees the same frames)."""
    import cv2  # optional at start-up: only this benchmark writes frames

    info = probe(video)
    out = tmp / f"{sample_id_for(video)}_first{n}.avi"
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), info.fps, (info.width, info.height))
    for i, img in enumerate(frames(info)):
        if i >= n:
            break
        w.write(img)
    w.release()
    return out
