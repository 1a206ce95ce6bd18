"""``skelpipe bench train|extract|memory``: throughput (samples/s, frames/s) of the real training
loop, evaluation and extraction pipeline, the reference they are compared with, and peak memory.
Each prints a table, or with ``--json`` one JSON line (what ``skelpipe bench all`` collects)."""

import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import click
import h5py
import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from skelpipe.commands.extract import extract_file
from skelpipe.core.console import console
from skelpipe.core.device import native_bf16, resolve
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fields import MAX_BATCH, MAX_FRAMES, IntList
from skelpipe.data.split import DiskRows, Split, data_file, load_split, physical_memory
from skelpipe.learn.checkpoint import save_model
from skelpipe.learn.config import KD_VARIANTS, TrainConfig
from skelpipe.learn.evaluate import predict
from skelpipe.learn.models import DEFAULT_CHANNELS, build_model
from skelpipe.learn.train import train_split
from skelpipe.pose.decoding import BIASED_CONFIG
from skelpipe.pose.blazepose import BlazePose, BlazePoseFrames, is_blazepose
from skelpipe.pose.extract import load_estimator
from skelpipe.pose.network import (
    Network,
    Runner,
    checkpoint_file,
    load_network,
    random_checkpoint,
    resolve_backbone,
)
from skelpipe.pose.settings import (BATCH_SIZE, BATCH_TEXT, DECODER_WORKERS, DEFAULT_LONG_EDGE, LONG_EDGE,
                                    default_batch_size)
from skelpipe.pose.video import VideoReader, first_frames, probe
from skelpipe.skeleton import layouts
from skelpipe.skeleton.store import open_store


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


@click.command("train")
@click.option("--device", default="auto", show_default=True)
@click.option("--amp/--no-amp", default=True, show_default=True,
              help="bf16 autocast where native (CUDA; a CPU with AMX or AVX512-BF16).")
@click.option("--compile", is_flag=True, help="torch.compile the model.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=64, show_default=True)
@click.option("--steps", type=click.IntRange(1, 100_000), default=20, show_default=True, help="Timed steps per run (after a warm-up epoch of as many).")
@click.option("--frames", type=click.IntRange(1, MAX_FRAMES), default=300, show_default=True, help="T.")
@click.option("--channels", type=IntList(), default=None, help="Block channels [default: ST-GCN's].")
@click.option("--runs", default="teacher,none,kl,global-msc,pmsc", show_default=True, help="Which runs (teacher and/or student kd variants).")
@click.option("--profile", is_flag=True, help="Print torch.profiler's top operators of each run.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of the table.")
def bench_train(device, amp, compile, batch_size, steps, frames, channels, runs, profile, as_json):
    """Training throughput (samples/s) of the teacher (ntu25, 3D) and the student (coco17, 2D)
    with each distillation variant, and the teacher's inference throughput, on NTU-60-shaped
    random data (M=2, 60 classes).

    Each run is the real training loop for two epochs of --steps batches; the second (warm)
    epoch is timed, without its first step (which also takes the once-an-epoch gradient-norm
    diagnostic of a distillation run: one extra backward pass). Overhead = student time per
    sample relative to the student without distillation (teacher features cached, as in training).

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
    dev = resolve(device)
    data = random_split(batch_size * steps, "ntu25", frames=frames)
    base = dict(channels=channels, epochs=2, batch_size=batch_size, milestones=(), device=device, amp=amp,
                compile=compile, op=0.3)
    results, epochs = {}, {}
    with tempfile.TemporaryDirectory(prefix="skelpipe-bench-") as tmp:
        tmp = Path(tmp)
        teacher_dir, teacher = random_teacher(tmp / "random-teacher", channels)
        part_e = torch.softmax(torch.rand(60, 5), dim=1)
        for run in wanted:
            cfg = TrainConfig(stage="teacher", **base) if run == "teacher" else \
                TrainConfig(stage="student", kd=run, **base)
            if not as_json:
                console.print(f"bench: {run} ({'ntu25 3D' if run == 'teacher' else 'coco17 2D'}) ...")
            with torch.profiler.profile(activities=_profiler_activities()) if profile else nullcontext() as prof:
                train_split(cfg, data, tmp / f"run-{run}", teacher_dir=teacher_dir, part_matrix=part_e)
            if profile:
                sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
                click.echo(prof.key_averages().table(sort_by=sort, row_limit=15))
            last = [json.loads(line) for line in (tmp / f"run-{run}" / "metrics.jsonl").read_text().splitlines()][-1]
            results[run] = last.get("steady_samples_per_s") or last["samples_per_s"]
            epochs[run] = last["samples_per_s"]
        infer = _inference_rate(teacher, data.hq[:batch_size], max(1, steps // 2), dev, amp)
    if as_json:
        click.echo(json.dumps({
            "bench": "train", "device": str(dev), "batch": batch_size, "frames": frames, "persons": 2,
            "channels": list(channels), "amp": amp, "compile": compile, "threads": torch.get_num_threads(),
            "steps": steps, "train_samples_per_s": {r: round(v, 2) for r, v in results.items()},
            "epoch_samples_per_s": {r: round(v, 2) for r, v in epochs.items()},
            "infer_samples_per_s": round(infer, 2), **peak_memory(dev)}))
        return
    _train_table(results, infer, f"skelpipe bench train: batch {batch_size}, T={frames}, M=2, 60 classes, "
                                 f"{steps} timed steps, device {device}, amp {amp}, compile {compile}", batch_size)


def random_teacher(out_dir: Path, channels):
    """An untrained ntu25 ST-GCN teacher (60 classes) saved as a finished run: the distillation
    benchmarks need one, not a good one. Returns (its directory, the model)."""
    teacher = build_model("stgcn", "ntu25", 3, 60, channels)
    save_model(out_dir, teacher, {"backbone": "stgcn", "layout": "ntu25", "in_channels": 3, "num_classes": 60,
                                  "channels": list(channels), "temporal_kernel": 9, "num_persons": 2,
                                  "stage": "teacher", "config_key": "random"})
    return out_dir, teacher


def _train_table(results: dict, infer: float, title: str, batch_size: int):
    table = Table(title=title)
    for col in ("run", "input", "samples/s", "ms/step", "overhead vs student w/o KD"):
        table.add_column(col, justify="left" if col in ("run", "input") else "right", no_wrap=col == "run")
    for run, rate in results.items():
        over = f"{results['none'] / rate - 1:+.1%}" if run not in ("teacher", "none") and "none" in results else ""
        table.add_row(run if run == "teacher" else f"student kd={run}",
                      "ntu25 3D (HQ)" if run == "teacher" else "coco17 2D (LQ)",
                      f"{rate:,.1f}", f"{1000 * batch_size / rate:,.1f}", over)
    table.add_row("teacher inference", "ntu25 3D (HQ)", f"{infer:,.1f}", f"{1000 * batch_size / infer:,.1f}", "")
    Console().print(table)


def _inference_rate(model, batch: np.ndarray, repeats: int, device, amp: bool) -> float:
    """Samples/s of ``predict`` (evaluation's forward pass) on one batch, repeated, after a warm-up."""
    model = model.to(device)
    x = np.concatenate([batch] * repeats)
    predict(model, batch, batch_size=len(batch), device=device, amp=amp)
    t0 = time.perf_counter()
    predict(model, x, batch_size=len(batch), device=device, amp=amp)
    return len(x) / (time.perf_counter() - t0)


def peak_memory(device) -> dict:
    """This process's peak resident memory (and peak GPU memory allocated, on CUDA), in MiB."""
    out = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    if device.type == "cuda":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return out


def _profiler_activities():
    acts = [torch.profiler.ProfilerActivity.CPU]
    if torch.cuda.is_available():
        acts.append(torch.profiler.ProfilerActivity.CUDA)
    return acts


# --------------------------------------------------------------------------- extraction

def bench_network(net: Network | BlazePose, video: Path, device, batch_size: int,
                  long_edge: int | None) -> tuple[float, int]:
    """Frames/s of the network alone on the video's frames in memory: OpenPifPaf's forward + copy
    of the fields to host, or BlazePose's whole per-frame solution (detector, landmarks, smoothing)."""
    info = probe(video, long_edge)
    with VideoReader(info, batch_size) as reader:
        batches = [b.copy() for _, b in reader]
    frames = np.concatenate(batches)
    batches = [frames[i:i + batch_size] for i in range(0, len(frames), batch_size)]
    if isinstance(net, BlazePose):
        estimator = BlazePoseFrames(net)
        estimator.begin(info)
        t0 = time.perf_counter()
        for b in batches:
            estimator.put("bench", 0, b)
        estimator.close()
        return len(frames) / (time.perf_counter() - t0), len(frames)
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
        code = ("import sys, runpy, torch, openpifpaf\nfrom skelpipe.pose.network import safe_globals\n"
                "torch.serialization.add_safe_globals(safe_globals())\n"  # its torch.load: weights_only
                + (f"torch.classes.openpifpaf_decoder_utils.CifHr.set_neighbors({int(neighbors)})\n" if neighbors else "")
                + f"sys.argv = ['openpifpaf.video'] + {args!r}\n"
                + "runpy.run_module('openpifpaf.video', run_name='__main__')\n")
        env = dict(os.environ, MPLBACKEND="Agg")
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


@click.command("extract")
@click.option("--backbone", required=True, help="Backbone / checkpoint name (as for skelpipe extract).")
@click.option("--video", required=True, type=click.Path(exists=True, path_type=Path),
              help="One video (or frame folder).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None, help="A local checkpoint.")
@click.option("--weights", type=click.Choice(["checkpoint", "people", "biased", "random"]), default="checkpoint",
              show_default=True,
              help="checkpoint: the named / given checkpoint; people: random network whose fields are those of "
                   "two people walking across the frame (a trained network's load on a clear clip); biased: "
                   "heads fixed to a person at every cell (a grid of people: decoder very busy); random: "
                   "randomly initialised network.")
@click.option("--device", default="auto", show_default=True)
@click.option("--batch-size", type=click.IntRange(*BATCH_SIZE), default=None, help=f"[{BATCH_TEXT}]")
@click.option("--long-edge", type=click.IntRange(*LONG_EDGE), default=DEFAULT_LONG_EDGE, show_default=True)
@click.option("--decoder-workers", type=click.IntRange(*DECODER_WORKERS), default=None)
@click.option("--max-frames", type=click.IntRange(1), default=None, help="Use only the first N frames.")
@click.option("--skip-openpifpaf-video", is_flag=True, help="Do not run python -m openpifpaf.video.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of the table.")
def bench_extract(backbone, video, checkpoint, weights, device, batch_size, long_edge, decoder_workers, max_frames,
                  skip_openpifpaf_video, as_json):
    """Frames/s on one video: skelpipe extract end to end, the network alone, and python -m openpifpaf.video.

    \b
    Example:
      skelpipe bench extract --backbone shufflenetv2k16 --video clip.mp4 --device cuda
      skelpipe bench extract --backbone mobilenetv3small --video clip.mp4 --weights biased --device cpu
    """
    dev = resolve(device)
    batch_size = batch_size or default_batch_size(dev)
    decoder_config = dict(BIASED_CONFIG) if weights == "biased" else None
    with tempfile.TemporaryDirectory(prefix="skelpipe-bench-") as tmp:
        tmp = Path(tmp)
        bp = is_blazepose(backbone)  # mediapipe's own model files, on the CPU
        checkpoint = None if bp else _bench_checkpoint(backbone, checkpoint, weights, tmp)
        clip = first_frames(video, max_frames, tmp) if max_frames else video
        net = load_estimator(backbone, checkpoint)
        if not as_json:
            precision = ("mediapipe, CPU" if bp else "fp16" if dev.type == "cuda"
                         else "bf16 backbone" if native_bf16(dev) else "fp32")
            console.print(f"[bold]{resolve_backbone(backbone)}[/] ({weights} weights) on {dev}, batch {batch_size}, "
                          f"long edge {long_edge}, {precision}: {video}")
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
        rows.append((f"network alone (batch {batch_size})", net_fps,
                     "mediapipe's pose solution per frame" if bp else "forward + fields to host"))
        if not (skip_openpifpaf_video or bp):
            op_fps, op_wall, op_n = bench_openpifpaf_video(clip, checkpoint, dev, long_edge, decoder_config)
            rows.append(("python -m openpifpaf.video", op_fps, op_wall if as_json else
                         f"{op_wall:.1f} s incl. start-up; {op_n} frames"))
    ref = rows[2][1] if len(rows) > 2 and rows[2][1] else None
    if as_json:
        click.echo(json.dumps({
            "bench": "extract", "backbone": resolve_backbone(backbone), "weights": weights, "device": str(dev),
            "batch": batch_size, "long_edge": long_edge, "frames": n, "extract_fps": round(e2e_fps, 2),
            "extract_wall_s": round(e2e_wall, 1), "person_frames": people, "network_fps": round(net_fps, 2),
            "openpifpaf_video_fps": ref and round(ref, 2), "openpifpaf_video_wall_s": ref and round(rows[2][2], 1),
            "ratio_vs_openpifpaf_video": ref and round(e2e_fps / ref, 2), **peak_memory(dev)}))
        return
    table = Table(title=f"extraction speed, {n} frames")
    table.add_column("what")
    table.add_column("frames/s", justify="right")
    table.add_column("vs openpifpaf.video", justify="right")
    table.add_column("note")
    for what, fps, note in rows:
        table.add_row(what, f"{fps:,.1f}", f"{fps / ref:.2f}x" if ref else "", note)
    console.print(table)


def _bench_checkpoint(backbone: str, checkpoint, weights: str, tmp: Path) -> str:
    """The checkpoint file of ``--weights``: the named one (from the hub cache, else downloaded
    there), the given file, or a random network saved in ``tmp``."""
    if weights != "checkpoint":
        return str(random_checkpoint(backbone, tmp / "random.pkl", biased=weights == "biased",
                                     people=2 if weights == "people" else 0))
    if checkpoint is None:
        load_network(backbone)
        checkpoint = str(checkpoint_file(resolve_backbone(backbone))[1])
    return checkpoint


# --------------------------------------------------------------------------- memory

@click.command("memory")
@click.option("--samples", type=click.IntRange(1, 10**7), default=40091, show_default=True, help="Training instances (NTU-60 x-sub).")
@click.option("--frames", type=click.IntRange(1, MAX_FRAMES), default=300, show_default=True, help="T.")
@click.option("--stage", type=click.Choice(["teacher", "student"]), default="teacher", show_default=True,
              help="student: PMSC distillation with the teacher run online on B_H (read from disk too).")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=16, show_default=True)
@click.option("--steps", type=click.IntRange(1, 100_000), default=3, show_default=True, help="Training steps (one epoch cut short).")
@click.option("--channels", type=IntList(), default=None, help="Block channels [default: ST-GCN's].")
@click.option("--device", default="auto", show_default=True)
@click.option("--dir", "where", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the pack (a sparse file: it takes almost no disk) [a temporary folder].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON line instead of the table.")
def bench_memory(samples, frames, stage, batch_size, steps, channels, device, where, as_json):
    """Peak host memory of training on an NTU-60-sized pack that does not fit in memory.

    The pack holds --samples × 3 × T × 25 × 2 HQ (ntu25) and × 17 LQ (coco17) float32
    skeletons (7.2 + 4.9 GB at NTU-60's 40,091 × 300 frames), written as a sparse file: the
    arrays read as zeros and take no disk. Training reads it as ``skelpipe train`` does (rows
    from disk when a split exceeds a quarter of the RAM) for --steps steps.

    \b
    Example:
      skelpipe bench memory --device cpu
      skelpipe bench memory --stage student --steps 2 --json
    """
    channels = channels or DEFAULT_CHANNELS
    dev = resolve(device)
    with tempfile.TemporaryDirectory(prefix="skelpipe-bench-", dir=where) as tmp:
        tmp = Path(tmp)
        pack = data_file(sparse_pack(tmp / "pack", samples, frames))
        data_gb, disk_gb = pack.stat().st_size / 1e9, pack.stat().st_blocks * 512 / 1e9
        student = stage == "student"
        cfg = TrainConfig(stage=stage, kd="pmsc" if student else "none", channels=channels,
                          epochs=1, batch_size=batch_size, max_steps=steps, device=device,
                          teacher_features="online", op=0.3 if student else 0.0)
        teacher_dir = random_teacher(tmp / "teacher", channels)[0] if student else None
        part_e = torch.softmax(torch.rand(60, 5), dim=1) if student else None
        t0 = time.perf_counter()
        split = load_split(pack, "train", rows="auto")  # as skelpipe train reads a pack
        train_split(cfg, split, tmp / "run", teacher_dir=teacher_dir, part_matrix=part_e)
        wall = time.perf_counter() - t0
    result = {"bench": "memory", "device": str(dev), "stage": stage, "samples": samples, "frames": frames,
              "batch": batch_size, "steps": steps, "channels": list(channels),
              "rows": "disk" if isinstance(split.hq, DiskRows) else "memory",
              "pack_gb": round(data_gb, 1), "pack_disk_gb": round(disk_gb, 3),
              "ram_gb": round(physical_memory() / 1e9, 1), "train_wall_s": round(wall, 1), **peak_memory(dev)}
    if as_json:
        click.echo(json.dumps(result))
        return
    table = Table(title=f"training memory on an NTU-60-sized pack ({samples:,} × 3 × {frames} × 25 × 2)")
    for col in ("what", "value"):
        table.add_column(col)
    for k, v in result.items():
        table.add_row(k, str(v))
    Console().print(table)


def sparse_pack(pack_dir: Path, samples: int, frames: int, test: int = 64, num_classes: int = 60) -> Path:
    """A pack of ``samples`` training (and ``test``) instances of NTU-60's shapes whose skeleton
    arrays are allocated but never written: a sparse file, all zeros, almost no disk."""
    pack_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(data_file(pack_dir), "w") as f:
        f.attrs.update({"hq_layout": "ntu25", "lq_layout": "coco17", "num_classes": num_classes,
                        "key": f"sparse-{samples}-{frames}", "benchmark": "xsub"})
        for split, n in (("train", samples), ("test", test)):
            g = f.create_group(split)
            for name, layout in (("lq", "coco17"), ("hq", "ntu25")):
                ds = g.create_dataset(name, (n, 3, frames, layouts.get(layout).num_joints, 2), dtype="float32")
                ds[n - 1] = 0.0  # allocates the contiguous block; the rest is never written
            for name, values in (("has_hq", np.ones(n, bool)), ("hq_available", np.ones(n, bool)),
                                 ("label", rng.integers(num_classes, size=n)),
                                 ("length", np.full(n, frames, np.int32))):
                g.create_dataset(name, data=values)
            g.create_dataset("ids", data=np.array([f"S{i:06d}" for i in range(n)], dtype=h5py.string_dtype()))
    return pack_dir
