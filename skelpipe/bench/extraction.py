"""Frames/s on one video: ``skelpipe extract`` end to end, the network alone, and
``python -m openpifpaf.video`` with the same decoder settings (``skelpipe bench extract``)."""

import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.table import Table

from skelpipe.bench.memory import peak_memory
from skelpipe.pipeline.extraction import extract_file
from skelpipe.core.console import console
from skelpipe.core.device import native_bf16, resolve
from skelpipe.core.errors import SkelpipeError
from skelpipe.pose.blazepose import BlazePose, BlazePoseFrames, is_blazepose
from skelpipe.pose.decoding import BIASED_CONFIG
from skelpipe.pose.extract import load_estimator
from skelpipe.pose.network import Network, Runner, checkpoint_file, load_network, random_checkpoint, resolve_backbone
from skelpipe.pose.settings import ExtractConfig, default_batch_size
from skelpipe.pose.video import VideoReader, first_frames, probe
from skelpipe.skeleton.store import open_store


@dataclass(frozen=True)
class ExtractBench:
    """The settings of ``skelpipe bench extract`` (its options' help says what each means)."""

    backbone: str
    video: Path
    checkpoint: str | None
    weights: str  # checkpoint, people, biased or random
    device: str
    batch_size: int | None  # None: the device's default
    long_edge: int | None
    decoder_workers: int | None
    max_frames: int | None
    skip_openpifpaf_video: bool
    progress: bool  # a line naming what is measured, before it is


@dataclass(frozen=True)
class Speed:
    """One row of the table: what ran, its frames/s, its wall time and a note."""

    what: str
    fps: float
    note: str
    wall_s: float | None = None


@dataclass(frozen=True)
class ExtractResult:
    """What ``measure_extraction`` found: ``end_to_end`` and ``network`` always, ``openpifpaf_video``
    unless skipped or not applicable (BlazePose)."""

    settings: ExtractBench
    device: torch.device
    batch_size: int
    frames: int
    person_frames: int
    end_to_end: Speed
    network: Speed
    openpifpaf_video: Speed | None
    memory: dict

    def reference_fps(self) -> float | None:
        """The frames/s every row is compared with: openpifpaf.video's, when it ran and measured any."""
        return self.openpifpaf_video.fps if self.openpifpaf_video and self.openpifpaf_video.fps else None

    def as_json(self) -> dict:
        s, ref = self.settings, self.reference_fps()
        return {"bench": "extract", "backbone": resolve_backbone(s.backbone), "weights": s.weights,
                "device": str(self.device), "batch": self.batch_size, "long_edge": s.long_edge, "frames": self.frames,
                "extract_fps": round(self.end_to_end.fps, 2), "extract_wall_s": round(self.end_to_end.wall_s, 1),
                "person_frames": self.person_frames, "network_fps": round(self.network.fps, 2),
                "openpifpaf_video_fps": ref and round(ref, 2),
                "openpifpaf_video_wall_s": ref and round(self.openpifpaf_video.wall_s, 1),
                "ratio_vs_openpifpaf_video": ref and round(self.end_to_end.fps / ref, 2), **self.memory}

    def table(self) -> Table:
        ref = self.reference_fps()
        table = Table(title=f"extraction speed, {self.frames} frames")
        table.add_column("what")
        table.add_column("frames/s", justify="right")
        table.add_column("vs openpifpaf.video", justify="right")
        table.add_column("note")
        for row in (self.end_to_end, self.network, self.openpifpaf_video):
            if row is not None:
                table.add_row(row.what, f"{row.fps:,.1f}", f"{row.fps / ref:.2f}x" if ref else "", row.note)
        return table


def measure_extraction(s: ExtractBench) -> ExtractResult:
    """Each speed on the video's first ``s.max_frames`` frames; end to end is ``skelpipe extract``'s
    own run (``pipeline.extraction.extract_file``)."""
    dev = resolve(s.device)
    batch_size = s.batch_size or default_batch_size(dev)
    decoder_config = dict(BIASED_CONFIG) if s.weights == "biased" else None
    bp = is_blazepose(s.backbone)  # mediapipe's own model files, on the CPU
    with tempfile.TemporaryDirectory(prefix="skelpipe-bench-") as tmp:
        tmp = Path(tmp)
        checkpoint = None if bp else _bench_checkpoint(s.backbone, s.checkpoint, s.weights, tmp)
        clip = first_frames(s.video, s.max_frames, tmp) if s.max_frames else s.video
        net = load_estimator(s.backbone, checkpoint)
        if s.progress:
            precision = ("mediapipe, CPU" if bp else "fp16" if dev.type == "cuda"
                         else "bf16 backbone" if native_bf16(dev) else "fp32")
            console.print(f"[bold]{resolve_backbone(s.backbone)}[/] ({s.weights} weights) on {dev}, batch "
                          f"{batch_size}, long edge {s.long_edge}, {precision}: {s.video}")
        net_fps, n = network_rate(net, clip, dev, batch_size, s.long_edge)
        network = Speed(f"network alone (batch {batch_size})", net_fps,
                        "mediapipe's pose solution per frame" if bp else "forward + fields to host")
        t0 = time.perf_counter()
        work_root = tmp / "e2e.h5"
        config = ExtractConfig(backbone=s.backbone, checkpoint=checkpoint, device=str(dev), batch_size=batch_size,
                               long_edge=s.long_edge, decoder_workers=s.decoder_workers,
                               decoder_config=decoder_config)
        manifest = extract_file([clip], work_root, config)
        e2e_wall = time.perf_counter() - t0
        with open_store(work_root) as store:
            people = int((store.read(store.ids()[0]).keypoints[..., 2] > 0).any(axis=2).sum())
        end_to_end = Speed("skelpipe extract (end to end)", manifest.get("extract_fps", 0.0),
                           f"{e2e_wall:.1f} s incl. start-up; {people} person-frames", e2e_wall)
        reference = None
        if not (s.skip_openpifpaf_video or bp):
            op_fps, op_wall, op_n = openpifpaf_video_rate(clip, checkpoint, dev, s.long_edge, decoder_config)
            reference = Speed("python -m openpifpaf.video", op_fps, f"{op_wall:.1f} s incl. start-up; {op_n} frames",
                              op_wall)
    return ExtractResult(s, dev, batch_size, n, people, end_to_end, network, reference, peak_memory(dev))


def network_rate(net: Network | BlazePose, video: Path, device, batch_size: int,
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


# openpifpaf.video's flags for the decoder settings that have one
_DECODER_FLAGS = (("seed_threshold", "--seed-threshold"), ("cif_th", "--cif-th"), ("caf_th", "--caf-th"),
                  ("keypoint_threshold", "--keypoint-threshold"), ("instance_threshold", "--instance-threshold"))


def openpifpaf_video_rate(video: Path, checkpoint: str, device, long_edge: int | None,
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
        args += [a for key, flag in _DECODER_FLAGS if key in cfg for a in (flag, str(cfg[key]))]
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
