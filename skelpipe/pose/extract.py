"""Pose extraction: RGB videos → tracked COCO-17 2D poses in an HDF5 store.

The estimator is pluggable: OpenPifPaf (multi-person, any of its backbones) or BlazePose
(``--backbone blazepose``, single-person, ``skelpipe.pose.blazepose``). Both hand back per-frame
poses through the same frame-estimator interface (``begin`` a video, ``put`` a batch of frames,
``end``, ``collect`` / ``drain`` the poses, ``close``; ``seconds`` spent), so that reading,
tracking, writing, resume and bad items are one code path. The pipeline of one OpenPifPaf run,
each part on its own thread or process so that none waits on another:

- ``skelpipe.pose.video.VideoReader`` decodes and resizes frames on a background thread (the next
  video's reader starts while the current one is still on the network);
- the network runs on batches of frames (fp16 on CUDA), the next batch is launched before the
  fields of the previous one are copied out (pinned buffers, non-blocking copies);
- ``skelpipe.pose.decoding.DecoderPool`` decodes the CIF/CAF fields of each frame on worker processes
  (a native crash there costs one frame, never the run);
- ``skelpipe.pose.tracking`` links each video's poses into people, and a writer thread stores the
  video as one small atomic HDF5 file; the finished unit is recorded so that a rerun skips it.

At the end (or when the last shard finishes) the per-video files are merged into one store.
Checkpoints (pickled whole models) are unpickled with an allow-list (``network.load_checkpoint_file``).
"""

import collections
import concurrent.futures
import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from skelpipe.core.console import progress
from skelpipe.core.device import resolve
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.work import Work
from skelpipe.pose import settings
from skelpipe.pose.blazepose import BlazePose, BlazePoseFrames, is_blazepose, load_blazepose
from skelpipe.pose.decoding import DecodeFailure, DecoderPool, InlineDecoder
from skelpipe.pose.network import Network, Runner, load_network
from skelpipe.pose.tracking import Tracker
from skelpipe.pose.video import Video, VideoError, VideoReader, network_size, probe
from skelpipe.skeleton.store import PoseWriter, open_store


def load_estimator(backbone: str, checkpoint: str | None = None) -> Network | BlazePose:
    """BlazePose for ``--backbone blazepose``, else the OpenPifPaf network (fails now, one line)."""
    return load_blazepose(checkpoint) if is_blazepose(backbone) else load_network(backbone, checkpoint)


# --------------------------------------------------------------------------- one run over many videos
@dataclass
class VideoJob:
    sample_id: str
    path: Path
    attrs: dict = field(default_factory=dict)  # the dataset's label, split, subject
    info: object = None
    total: int | None = None  # frames, known once the reader is done
    results: dict = field(default_factory=dict)  # frame → (poses, scores) | DecodeFailure


def sample_id_for(path: Path) -> str:
    """A video's sample id: its file stem without NTU's ``_rgb`` suffix, or the frame folder's name."""
    path = Path(path)
    name = path.name if path.is_dir() else path.stem
    return name.removesuffix("_rgb")


def _unit_file(sample_id: str) -> str:
    return "videos/" + hashlib.sha1(sample_id.encode()).hexdigest()[:20] + ".h5"


def shard_share(videos: list, shard: tuple[int, int] | None) -> list:
    """This shard's videos: every n-th of the list sorted by sample id, from the i-th on."""
    if shard is None:
        return list(videos)
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise SkelpipeError(f"--shard {i}/{n}: expected i/n with 0 <= i < n")
    return sorted(videos, key=lambda v: v[0])[i::n]


def shard_from_env() -> tuple[int, int] | None:
    """(RANK, WORLD_SIZE) under torchrun (or any launcher setting them), else None."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise SkelpipeError(f"--shard {text}: expected i/n, e.g. 0/4") from None
    shard_share([], (i, n))
    return i, n


def _write_video(job: VideoJob, out: Path, net: Network | BlazePose, max_people: int, fps_default: float) -> dict:
    """Track the people of a finished video and write its one-sample store; return its unit info."""

    tracker = Tracker()
    failures = []
    for t in range(job.total):
        result = job.results.get(t)
        if isinstance(result, DecodeFailure) or result is None:
            failures.append(t)
            continue
        poses, scores = result
        poses = poses.copy()
        poses[..., :2] = job.info.to_original(poses[..., :2])
        # joints found in the padding (outside the frame) or with no confidence are not observed
        x, y = poses[..., 0], poses[..., 1]
        outside = (x < -0.5) | (y < -0.5) | (x > job.info.width - 0.5) | (y > job.info.height - 0.5)
        poses[outside | (poses[..., 2] <= 0)] = 0.0
        keep = (poses[..., 2] > 0).any(axis=1)
        poses, scores = poses[keep], scores[keep]
        tracker.update(t, poses, scores)
    keypoints, tracks = tracker.result(job.total, max_people)
    score = np.zeros((max_people, job.total), np.float32)
    for m, track in enumerate(tracks):
        score[m, track.frames] = track.scores
    attrs = {**job.attrs, "fps": job.info.fps or fps_default, "num_frames": job.total,
             "image_size": [job.info.width, job.info.height], "backbone": net.backbone,
             "checkpoint": net.checkpoint, "channels": "x,y,conf", "video": str(job.path),
             "people": len(tracks), "tracks_found": len(tracker.tracks), "decoder_failures": len(failures)}
    with PoseWriter(out, layout="coco17", attrs={"source": net.source}) as w:
        w.add(job.sample_id, keypoints, arrays={"score": score}, **attrs)
    return {"file": str(out.name), "frames": job.total, "people": len(tracks), "failed_frames": failures}


def _readers(jobs: list[VideoJob], long_edge, batch_size: int, fps: float):
    """Yield (job, reader or VideoError); the next video's reader is already reading meanwhile."""

    def open_(job):
        try:
            job.info = probe(job.path, long_edge, fps)
            return VideoReader(job.info, batch_size)
        except VideoError as e:
            return e

    def close(reader):
        if reader is not None and not isinstance(reader, Exception):
            reader.close()

    current = open_(jobs[0]) if jobs else None
    nxt = None
    try:
        for k, job in enumerate(jobs):
            nxt = open_(jobs[k + 1]) if k + 1 < len(jobs) else None
            yield job, current
            close(current)
            current, nxt = nxt, None
    finally:
        close(current)
        close(nxt)


class NothingExtracted(SkelpipeError):
    """Every video given was bad: the run fails (and commits nothing) with the first reasons."""

    def __init__(self, message: str, stats):
        super().__init__(message)
        self.stats = stats


@dataclass
class RunStats:
    videos_done: int = 0
    videos_skipped: int = 0  # done by an earlier run
    frames: int = 0
    seconds: float = 0.0
    bad: list = field(default_factory=list)  # (item, reason)
    # seconds spent in each step, summed over videos and frames (the steps overlap in time)
    steps: dict = field(default_factory=lambda: {"read": 0.0, "network": 0.0, "decode": 0.0, "track": 0.0})

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def extract_to_work(videos, work, config: settings.ExtractConfig, *, shard: tuple[int, int] | None = None,
                    out_name: str | None = "skeletons.h5",
                    network: Network | BlazePose | None = None) -> RunStats:
    """Extract the poses of ``videos`` (``Video``: id, path, attributes) into a stage's ``work`` directory.

    ``config``: the estimator (its ``backbone`` given), device and settings; ``network``: that
    estimator already loaded. Each finished video becomes ``work.dir/videos/<hash>.h5`` and a done
    unit (skipped on rerun); bad videos and frames whose decoder crashed are ``work.report_bad``-ed.
    With ``shard=(i, n)`` only that share is done. ``out_name`` (unsharded runs): merge every
    video into ``work.dir/out_name`` at the end (``merge_work`` does it for sharded runs).
    """

    videos = [Video(str(v.id), Path(v.path), dict(v.attrs)) for v in videos]
    counts = collections.Counter(v.id for v in videos)
    dup = sorted(s for s, n in counts.items() if n > 1)
    if dup:
        paths = [str(v.path) for v in videos if v.id == dup[0]]
        raise SkelpipeError(f"{paths[0]} and {paths[1]} share the sample id {dup[0]!r} "
                            f"({len(dup)} duplicate ids in all)")
    mine = shard_share(videos, shard)
    todo = [VideoJob(v.id, v.path, v.attrs) for v in mine if not work.is_done(v.id)]
    stats = RunStats(videos_skipped=len(mine) - len(todo))
    if todo:
        dev, auto = resolve(config.device), config.device == "auto"
        if dev.type == "cuda" and shard is not None and auto and "LOCAL_RANK" in os.environ:
            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        net = network or load_estimator(config.backbone, config.checkpoint)
        _run(todo, work, net, dev, config.resolved(dev), stats)
        if stats.videos_done == 0 and not stats.videos_skipped:  # every video bad: fail, commit nothing
            reasons = "; ".join(f"{sid}: {why}" for sid, why in stats.bad[:3])
            raise NothingExtracted(f"no video could be extracted ({len(stats.bad)} of {len(todo)} bad: "
                                   f"{reasons}{' …' if len(stats.bad) > 3 else ''})", stats)
    work.note(videos=len(videos), frames=stats.frames, extract_fps=round(stats.fps, 2),
              already_done=stats.videos_skipped)
    if out_name and shard is None:
        merge_work(work.dir, out_name, work)
    return stats


def merge_work(work_dir, out_name: str = "skeletons.h5", work=None) -> Path:
    """Merge the per-video files of a (possibly sharded) extract directory into ``work_dir/out_name``.

    One input file open at a time (a dataset may have tens of thousands of videos); atomic.
    """

    work_dir = Path(work_dir)
    work = work or Work(work_dir)
    units = work.done_units()
    out = work_dir / out_name
    attrs = {"num_videos": len(units)}
    with PoseWriter(out, layout="coco17", attrs=attrs) as w:
        for sid in sorted(units):
            with open_store(work_dir / "videos" / units[sid]["file"]) as s:
                if "source" in s.attrs and "source" not in w.file.attrs:
                    w.file.attrs["source"] = s.attrs["source"]
                smp = s.read(sid)
            w.add(sid, smp.keypoints, arrays=smp.arrays, **smp.attrs)
    return out


def merge_and_drop(work_dir, out_name: str) -> None:
    """Before an extract stage commits: its videos merged into ``out_name``, then the per-video
    files dropped, so that the finished stage holds (and its manifest records) the merged file
    only. They are renamed away in one step first: a run killed here finds either all of them
    or the merged file."""
    work_dir = Path(work_dir)
    videos, merged = work_dir / "videos", work_dir / ".videos-merged"
    if videos.is_dir():
        shutil.rmtree(merged, ignore_errors=True)
        merge_work(work_dir, out_name)
        os.replace(videos, merged)
    shutil.rmtree(merged, ignore_errors=True)


def _run(todo, work, net, dev, config: settings.ExtractConfig, stats):
    """Extract every video of ``todo``: read → network → decode → track → write, overlapped
    (``config``: its batch size and decoder workers already resolved)."""
    frames = (BlazePoseFrames(net) if isinstance(net, BlazePose)
              else PifPafFrames(net, dev, config.long_edge, config.decoder_workers, config.decoder_config))
    run = _Run(work, net, frames, config.max_people, config.fps, stats)
    (work.dir / "videos").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        with progress("frames") as bar:
            task = bar.add_task("extract videos", total=len(todo))
            for job, reader in _readers(todo, config.long_edge, config.batch_size, config.fps):
                bar.advance(task)
                run.video(job, reader, lambda: bar.update(task, rate=stats.frames / max(time.perf_counter() - t0, 1e-9)))
            run.finish()
    finally:
        frames.close()
        stats.steps.update(frames.seconds)
        run.writer.shutdown(wait=True)
    stats.seconds = time.perf_counter() - t0


class _Run:
    """The state of one extraction run: videos whose frames are still being decoded, and the
    writer thread that stores each finished video as one atomic file."""

    def __init__(self, work, net, frames, max_people, fps, stats):
        self.work, self.net, self.frames = work, net, frames
        self.max_people, self.fps, self.stats = max_people, fps, stats
        self.writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="skelpipe-writer")
        self.open_jobs: dict[str, VideoJob] = {}
        self.writes: list = []

    def video(self, job: VideoJob, reader, on_batch):
        """Run the estimator over one video's batches."""
        if isinstance(reader, VideoError):
            self._bad(job, str(reader))
            return
        self.open_jobs[job.sample_id] = job
        try:
            self.frames.begin(job.info)
            for start, batch in reader:
                self.frames.put(job.sample_id, start, batch)
                self.handle(self.frames.collect())
                self.stats.frames += len(batch)
                on_batch()
            self.frames.end()
            self.stats.steps["read"] += reader.seconds
            job.total = reader.frames_read
        except VideoError as e:
            self.open_jobs.pop(job.sample_id, None)
            self._bad(job, str(e))
            return
        self.handle(self.frames.collect())
        self.finish_if_complete(job)

    def _bad(self, job: VideoJob, reason: str):
        self.work.report_bad(job.sample_id, reason)
        self.stats.bad.append((job.sample_id, reason))

    def handle(self, results):
        """Estimated frames back; a frame that failed to decode is reported."""
        for (sid, t), result in results:
            job = self.open_jobs.get(sid)
            if job is None:
                continue
            job.results[t] = result
            if isinstance(result, DecodeFailure):
                self.work.report_bad(f"{sid} frame {t}", result.reason)
            self.finish_if_complete(job)

    def finish_if_complete(self, job: VideoJob):
        """Once every frame of a video is decoded: track and write it on the writer thread."""
        if job.total is None or len(job.results) < job.total or job.sample_id not in self.open_jobs:
            return
        del self.open_jobs[job.sample_id]
        out = self.work.dir / _unit_file(job.sample_id)

        def write():
            t0 = time.perf_counter()
            info = _write_video(job, out, self.net, self.max_people, self.fps)
            self.stats.steps["track"] += time.perf_counter() - t0
            self.work.mark_done(job.sample_id, info)
            return info

        self.writes.append(self.writer.submit(write))
        self.stats.videos_done += 1

    def finish(self):
        """Drain the decoders, write the last videos, and wait for every write."""
        self.handle(self.frames.drain())
        for job in list(self.open_jobs.values()):
            self.finish_if_complete(job)
        for f in self.writes:
            f.result()


class PifPafFrames:
    """OpenPifPaf's frame estimator: the network on batches, the next launched before the fields
    of the last are copied out and handed to the decoder pool (worker processes, or inline)."""

    def __init__(self, net: Network, dev, long_edge: int | None, workers: int, config: dict | None):
        self.runner = Runner(net, dev)
        self.pool = (DecoderPool(net.cif_meta, net.caf_meta, workers, config) if workers > 0
                     else InlineDecoder(net.cif_meta, net.caf_meta, config))
        self.pool.reserve(_field_bytes(net, long_edge, self.runner))  # workers up before the clock starts
        self.pending = None
        self.seconds = {"network": 0.0, "decode": 0.0}

    def begin(self, info):
        self.pending = None  # a batch of a video that failed is not decoded

    def put(self, key, start: int, batch: np.ndarray):
        t0 = time.perf_counter()
        launched = (key, start, len(batch), self.runner.launch(batch))
        self.seconds["network"] += time.perf_counter() - t0
        self.end()
        self.pending = launched

    def end(self):
        """Hand the last launched batch's fields to the decoders."""
        if self.pending is None:
            return
        t0 = time.perf_counter()
        key, start, n, handle = self.pending
        self.pending = None
        cif, caf = self.runner.fields(handle)
        for i in range(n):
            self.pool.submit((key, start + i), f"{key}:{start + i}", cif[i], caf[i])
        self.seconds["network"] += time.perf_counter() - t0

    def collect(self) -> list:
        return self.pool.collect()

    def drain(self) -> list:
        return self.pool.drain()

    def close(self):
        self.seconds["decode"] = self.pool.decode_seconds
        self.pool.close()


def _field_bytes(net: Network, long_edge: int | None, runner: Runner) -> int:
    """Bytes of one frame's CIF + CAF fields at the largest network input for ``long_edge``."""

    side = network_size(long_edge or 1920, long_edge or 1920, long_edge)[1][0]
    cells = ((side - 1) // net.cif_meta.stride + 1) ** 2
    per_cell = net.cif_meta.n_fields * 5 + net.caf_meta.n_fields * 8
    return cells * per_cell * (2 if runner.half else 4)
