"""Pose extraction with OpenPifPaf: RGB videos → tracked COCO-17 2D poses in an HDF5 store.

The pipeline of one run, each part on its own thread or process so that none waits on another:

- ``skelpipe.pose.video.VideoReader`` decodes and resizes frames on a background thread (the next
  video's reader starts while the current one is still on the network);
- the network runs on batches of frames (fp16 on CUDA), the next batch is launched before the
  fields of the previous one are copied out (pinned buffers, non-blocking copies);
- ``skelpipe.pose.decoding.DecoderPool`` decodes the CIF/CAF fields of each frame on worker processes
  (a native crash there costs one frame, never the run);
- ``skelpipe.pose.tracking`` links each video's poses into people, and a writer thread stores the
  video as one small atomic HDF5 file; the finished unit is recorded so that a rerun skips it.

At the end (or when the last shard finishes) the per-video files are merged into one store.
Checkpoints are pickled whole models (OpenPifPaf's format), loaded with ``weights_only=False``:
only use checkpoint files you trust.
"""

import collections
import concurrent.futures
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import click
import numpy as np

from skelpipe.core import atomic
from skelpipe.core.console import console, progress
from skelpipe.core.errors import SkelpipeError

#: The paper's backbone names → OpenPifPaf's.
ALIASES = {"shufflenetv2x1": "shufflenetv2k16", "mobilenetv3small": "mobilenetv3small", "resnet152": "resnet152"}
OFFLINE_ENV = "SKELPIPE_OFFLINE"  # set to 1: never try to download a checkpoint
STAGE_VERSION = 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# --------------------------------------------------------------------------- network
def resolve_backbone(name: str) -> str:
    """Lower-case OpenPifPaf base-network / checkpoint name for ``name`` (aliases resolved)."""
    key = name.strip().lower()
    return ALIASES.get(key, key)


def _openpifpaf():
    try:
        import openpifpaf
    except ImportError as e:
        raise SkelpipeError(f"OpenPifPaf is not importable ({e}): run `skelpipe install-openpifpaf`") from e
    return openpifpaf


def checkpoint_file(backbone: str) -> tuple[str, Path]:
    """(download URL, path in the torch hub cache) of OpenPifPaf's named checkpoint ``backbone``."""
    import torch

    op = _openpifpaf()
    url = op.CHECKPOINT_URLS.get(backbone)
    if url is None:
        named = sorted(k for k, v in op.CHECKPOINT_URLS.items() if isinstance(v, str) and "-" not in k)
        raise SkelpipeError(f"--backbone {backbone}: OpenPifPaf has no checkpoint of that name (named: "
                            f"{', '.join(named)}); for another base network pass --checkpoint PATH")
    if url is op.PRETRAINED_UNAVAILABLE:
        raise SkelpipeError(f"--backbone {backbone}: OpenPifPaf 0.13 has no pretrained {backbone} checkpoint; "
                            f"train one and pass --checkpoint PATH")
    return url, Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def _load_checkpoint(backbone: str, checkpoint: str | None):
    """The checkpoint dict (or model) and a label for it: a local file, or a named one (cached/downloaded)."""
    import torch

    if checkpoint:
        path = Path(checkpoint)
        if not path.is_file():
            raise SkelpipeError(f"{path}: checkpoint file not found")
        try:
            return torch.load(path, map_location="cpu", weights_only=False), str(path)
        except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
            raise SkelpipeError(f"{path}: not a loadable OpenPifPaf checkpoint ({type(e).__name__}: {e})") from e
    url, path = checkpoint_file(backbone)
    if path.is_file():
        return torch.load(path, map_location="cpu", weights_only=False), f"{backbone} ({path.name})"
    fix = (f"download {url} to {path} (mkdir -p {path.parent} && curl -L -o {path} {url}), "
           f"or pass --checkpoint PATH to a local OpenPifPaf checkpoint")
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise SkelpipeError(f"checkpoint {path.name} for --backbone {backbone} is not in {path.parent} and "
                            f"{OFFLINE_ENV} forbids downloading it: {fix}")
    try:  # OpenPifPaf's own way (network.Factory.from_checkpoint)
        ckpt = torch.hub.load_state_dict_from_url(url, check_hash=not url.startswith("https"), map_location="cpu",
                                                  weights_only=False)
    except Exception as e:  # noqa: BLE001 - offline, proxy, HTTP error, bad hash ...
        raise SkelpipeError(f"checkpoint {path.name} for --backbone {backbone} is not in {path.parent} and could "
                            f"not be downloaded ({type(e).__name__}: {e}): {fix}") from e
    return ckpt, f"{backbone} ({path.name})"


@dataclass
class Network:
    model: object
    cif_meta: object
    caf_meta: object
    backbone: str
    checkpoint: str


def load_network(backbone: str, checkpoint: str | None = None) -> Network:
    """OpenPifPaf network for ``backbone`` (or from ``checkpoint``), in eval mode on the CPU."""
    _openpifpaf()
    from openpifpaf import headmeta
    from openpifpaf.network import model_migration, nets

    backbone = resolve_backbone(backbone)
    ckpt, label = _load_checkpoint(backbone, checkpoint)
    model = ckpt.get("model") if isinstance(ckpt, dict) else ckpt
    where = checkpoint or label
    if not isinstance(model, nets.Shell):
        raise SkelpipeError(f"{where}: holds no OpenPifPaf network (expected a dict with 'model')")
    model_migration.model_migration(model)
    base = getattr(model.base_net, "name", None)
    if checkpoint and base is not None and base != backbone:
        raise SkelpipeError(f"{checkpoint}: holds a {base} network, not --backbone {backbone}")
    cifs = [m for m in model.head_metas if isinstance(m, headmeta.Cif)]
    cafs = [m for m in model.head_metas if isinstance(m, headmeta.Caf)]
    if not cifs or not cafs or len(cifs[0].keypoints) != 17:
        raise SkelpipeError(f"{where}: not a COCO 17-keypoint pose network (heads: "
                            f"{[m.name for m in model.head_metas]})")
    model.eval()
    return Network(model, cifs[0], cafs[0], backbone, label)


def random_checkpoint(backbone: str, path, *, biased: bool = False, seed: int = 0) -> Path:
    """Save a randomly initialised OpenPifPaf COCO-keypoint network (no pretrained weights) at ``path``.

    For tests and benchmarks. Untrained networks detect nobody; ``biased`` fixes the heads'
    output to a person everywhere (``bias_heads``) so that the decoder has people to decode
    (decode with ``decoding.BIASED_CONFIG``).
    """
    import torch

    op = _openpifpaf()
    from openpifpaf.network import factory
    from openpifpaf.plugins.coco import CocoKp

    torch.manual_seed(seed)
    # the backbones' ImageNet weights would be downloaded; their switch is class-level state
    saved = {cls: cls.pretrained for cls in factory.BASE_TYPES if hasattr(cls, "pretrained")}
    try:
        for cls in saved:
            cls.pretrained = False
        model, _ = op.network.Factory(base_name=resolve_backbone(backbone)).factory(head_metas=CocoKp().head_metas)
    finally:
        for cls, value in saved.items():
            cls.pretrained = value
    if biased:
        bias_heads(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model, "epoch": 0, "meta": {"random_init": True, "biased": biased}}, path)
    return path


def bias_heads(model, height_cells: float = 6.0, confidence: float = 0.9, scale: float = 1.0):
    """Make the heads output one fixed field: a standing person (OpenPifPaf's upright COCO pose,
    ``height_cells`` field cells tall) anchored at every cell, with ``confidence`` everywhere.

    The head convolutions' weights are zeroed and their biases set, so the fields no longer
    depend on the image: the decoder then finds a grid of people (spaced by its non-maximum
    suppression) in every frame. For tests and benchmarks of everything after the network.
    """
    import torch
    from openpifpaf import headmeta

    cif = next(h.meta for h in model.head_nets if isinstance(h.meta, headmeta.Cif))
    pose = np.asarray(cif.pose, np.float32)[:, :2] * np.float32([1, -1])
    pose = (pose - pose.mean(axis=0)) * (height_cells / (pose[:, 1].max() - pose[:, 1].min()))
    logit = float(np.log(confidence / (1 - confidence)))
    raw_scale = float(np.log(np.expm1(scale)))  # softplus⁻¹
    with torch.no_grad():
        for head in model.head_nets:
            meta = head.meta
            bias = head.conv.bias.view(head.n_fields, head.n_components, head.upsample_stride ** 2)
            head.conv.weight.zero_()
            bias.zero_()
            bias[:, 1] = logit
            if isinstance(meta, headmeta.Cif):
                bias[:, 2:4] = torch.from_numpy(pose)[:, :, None]
                bias[:, 4] = raw_scale
            elif isinstance(meta, headmeta.Caf):
                pairs = np.asarray(meta.skeleton) - 1
                bias[:, 2:4] = torch.from_numpy(pose[pairs[:, 0]])[:, :, None]
                bias[:, 4:6] = torch.from_numpy(pose[pairs[:, 1]])[:, :, None]
                bias[:, 6:8] = raw_scale
    return model


class Runner:
    """Runs the network on uint8 RGB batches; the next batch is launched before the last is read.

    ``launch(batch)`` starts the work (asynchronously on CUDA) and returns a handle;
    ``fields(handle)`` waits for it and returns (cif, caf) numpy arrays (B, F, C, h, w) in the
    network's dtype (float16 on CUDA, float32 on CPU).
    """

    def __init__(self, net: Network, device, half: bool | None = None):
        import torch

        self.device = device
        self.half = device.type == "cuda" if half is None else half
        self.dtype = torch.float16 if self.half else torch.float32
        self.model = net.model.to(device)
        if self.half:
            self.model.half()
        self.cif_i, self.caf_i = net.cif_meta.head_index, net.caf_meta.head_index
        self.mean = torch.tensor(IMAGENET_MEAN, device=device, dtype=self.dtype).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD, device=device, dtype=self.dtype).view(1, 3, 1, 1) * 255
        self._pinned: dict = {}
        self._flip = 0

    def _buffer(self, shape, slot):
        import torch

        key = (tuple(shape), slot)
        if key not in self._pinned:
            self._pinned[key] = torch.empty(shape, dtype=self.dtype, pin_memory=self.device.type == "cuda")
        return self._pinned[key]

    def launch(self, batch: np.ndarray):
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(batch)
            if self.device.type == "cuda":
                x = x.pin_memory().to(self.device, non_blocking=True)
            x = x.permute(0, 3, 1, 2).to(self.dtype)
            x = (x - self.mean) / self.std
            heads = self.model(x.contiguous())
            cif, caf = heads[self.cif_i], heads[self.caf_i]
            if self.device.type != "cuda":
                return cif.numpy(), caf.numpy()
            self._flip ^= 1
            out_cif = self._buffer(cif.shape, ("cif", self._flip))
            out_caf = self._buffer(caf.shape, ("caf", self._flip))
            out_cif.copy_(cif, non_blocking=True)
            out_caf.copy_(caf, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
            return event, out_cif, out_caf

    @staticmethod
    def fields(handle):
        if len(handle) == 2:
            return handle
        event, cif, caf = handle
        event.synchronize()
        return cif.numpy(), caf.numpy()


# --------------------------------------------------------------------------- one run over many videos
@dataclass
class VideoJob:
    sample_id: str
    path: Path
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


def _write_video(job: VideoJob, out: Path, net: Network, max_people: int, fps_default: float) -> dict:
    """Track the people of a finished video and write its one-sample store; return its unit info."""
    from skelpipe.pose.decoding import DecodeFailure
    from skelpipe.skeleton.store import PoseWriter
    from skelpipe.pose.tracking import Tracker

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
    attrs = {"fps": job.info.fps or fps_default, "num_frames": job.total,
             "image_size": [job.info.width, job.info.height], "backbone": net.backbone,
             "checkpoint": net.checkpoint, "channels": "x,y,conf", "video": str(job.path),
             "people": len(tracks), "tracks_found": len(tracker.tracks), "decoder_failures": len(failures)}
    with PoseWriter(out, layout="coco17", attrs={"source": f"openpifpaf:{net.backbone}"}) as w:
        w.add(job.sample_id, keypoints, arrays={"score": score}, **attrs)
    return {"file": str(out.name), "frames": job.total, "people": len(tracks), "failed_frames": failures}


def _readers(jobs: list[VideoJob], long_edge, batch_size: int, fps: float):
    """Yield (job, reader or VideoError); the next video's reader is already reading meanwhile."""
    from skelpipe.pose.video import VideoError, VideoReader, probe

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


@dataclass
class RunStats:
    videos_done: int = 0
    videos_skipped: int = 0  # done by an earlier run
    frames: int = 0
    seconds: float = 0.0
    bad: list = field(default_factory=list)  # (item, reason)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds else 0.0


def extract_to_work(videos, work, *, backbone: str, checkpoint: str | None = None, device="auto",
                    batch_size: int | None = None, long_edge: int | None = 641, max_people: int = 2,
                    decoder_workers: int | None = None, decoder_config: dict | None = None,
                    shard: tuple[int, int] | None = None, out_name: str | None = "skeletons.h5",
                    fps: float = 30.0, network: Network | None = None) -> RunStats:
    """Extract the poses of ``videos`` [(sample_id, path)] into a stage's ``work`` directory.

    Each finished video becomes ``work.dir/videos/<hash>.h5`` and a done unit (skipped on rerun);
    bad videos and frames whose decoder crashed are ``work.report_bad``-ed. With ``shard=(i, n)``
    only that share is done. ``out_name`` (unsharded runs): merge every video into
    ``work.dir/out_name`` at the end (``merge_work`` does it for sharded runs).
    """
    from skelpipe.core.device import resolve

    videos = [(str(s), Path(p)) for s, p in videos]
    counts = collections.Counter(s for s, _ in videos)
    dup = sorted(s for s, n in counts.items() if n > 1)
    if dup:
        paths = [str(p) for s, p in videos if s == dup[0]]
        raise SkelpipeError(f"{paths[0]} and {paths[1]} share the sample id {dup[0]!r} "
                            f"({len(dup)} duplicate ids in all)")
    mine = shard_share(videos, shard)
    todo = [VideoJob(s, p) for s, p in mine if not work.is_done(s)]
    stats = RunStats(videos_skipped=len(mine) - len(todo))
    if todo:
        dev = resolve(device)
        if dev.type == "cuda" and shard is not None and device == "auto" and "LOCAL_RANK" in os.environ:
            import torch

            dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
        net = network or load_network(backbone, checkpoint)
        if batch_size is None:
            batch_size = 16 if dev.type == "cuda" else 4
        if decoder_workers is None:
            decoder_workers = max(1, min(8, (os.cpu_count() or 2) - 1))
        _run(todo, work, net, dev, batch_size, long_edge, max_people, decoder_workers, decoder_config, fps, stats)
    work.note(videos=len(videos), frames=stats.frames, extract_fps=round(stats.fps, 2),
              already_done=stats.videos_skipped)
    if out_name and shard is None:
        merge_work(work.dir, out_name, work)
    return stats


def merge_work(work_dir, out_name: str = "skeletons.h5", work=None) -> Path:
    """Merge the per-video files of a (possibly sharded) extract directory into ``work_dir/out_name``.

    One input file open at a time (a dataset may have tens of thousands of videos); atomic.
    """
    from skelpipe.pipeline.cache import Work
    from skelpipe.skeleton.store import PoseWriter, open_store

    work_dir = Path(work_dir)
    work = work or Work(None, work_dir)
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


def _run(todo, work, net, dev, batch_size, long_edge, max_people, decoder_workers, decoder_config, fps, stats):
    from skelpipe.pose.decoding import DecodeFailure, DecoderPool, InlineDecoder
    from skelpipe.pose.video import VideoError

    runner = Runner(net, dev)
    pool = (DecoderPool(net.cif_meta, net.caf_meta, decoder_workers, decoder_config) if decoder_workers > 0
            else InlineDecoder(net.cif_meta, net.caf_meta, decoder_config))
    pool.reserve(_field_bytes(net, long_edge, runner))  # workers up before the clock starts
    writer = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="skelpipe-writer")
    (work.dir / "videos").mkdir(parents=True, exist_ok=True)
    open_jobs: dict[str, VideoJob] = {}
    writes: list = []

    def handle(results):
        for (sid, t), result in results:
            job = open_jobs.get(sid)
            if job is None:
                continue
            job.results[t] = result
            if isinstance(result, DecodeFailure):
                work.report_bad(f"{sid} frame {t}", result.reason)
            finish_if_complete(job)

    def finish_if_complete(job):
        if job.total is None or len(job.results) < job.total or job.sample_id not in open_jobs:
            return
        del open_jobs[job.sample_id]
        out = work.dir / _unit_file(job.sample_id)

        def write():
            info = _write_video(job, out, net, max_people, fps)
            work.mark_done(job.sample_id, info)
            return info

        writes.append(writer.submit(write))
        stats.videos_done += 1

    t0 = time.perf_counter()
    try:
        with progress("frames") as bar:
            task = bar.add_task("extract videos", total=len(todo))
            for job, reader in _readers(todo, long_edge, batch_size, fps):
                bar.advance(task)
                if isinstance(reader, VideoError):
                    work.report_bad(job.sample_id, str(reader))
                    stats.bad.append((job.sample_id, str(reader)))
                    continue
                open_jobs[job.sample_id] = job
                pending = None
                try:
                    for start, batch in reader:
                        launched = (start, len(batch), runner.launch(batch))
                        if pending is not None:
                            _submit(pool, job, pending, runner)
                        pending = launched
                        handle(pool.collect())
                        stats.frames += len(batch)
                        elapsed = time.perf_counter() - t0
                        bar.update(task, rate=stats.frames / elapsed if elapsed else None)
                    if pending is not None:
                        _submit(pool, job, pending, runner)
                    job.total = reader.frames_read
                except VideoError as e:
                    open_jobs.pop(job.sample_id, None)
                    work.report_bad(job.sample_id, str(e))
                    stats.bad.append((job.sample_id, str(e)))
                    continue
                handle(pool.collect())
                finish_if_complete(job)
            handle(pool.drain())
            for job in list(open_jobs.values()):
                finish_if_complete(job)
            for f in writes:
                f.result()
    finally:
        pool.close()
        writer.shutdown(wait=True)
    stats.seconds = time.perf_counter() - t0


def _field_bytes(net: Network, long_edge: int | None, runner: Runner) -> int:
    """Bytes of one frame's CIF + CAF fields at the largest network input for ``long_edge``."""
    from skelpipe.pose.video import network_size

    side = network_size(long_edge or 1920, long_edge or 1920, long_edge)[1][0]
    cells = ((side - 1) // net.cif_meta.stride + 1) ** 2
    per_cell = net.cif_meta.n_fields * 5 + net.caf_meta.n_fields * 8
    return cells * per_cell * (2 if runner.half else 4)


def _submit(pool, job: VideoJob, pending, runner: Runner):
    start, n, handle = pending
    cif, caf = runner.fields(handle)
    for i in range(n):
        t = start + i
        pool.submit((job.sample_id, t), f"{job.sample_id}:{t}", cif[i], caf[i])


# --------------------------------------------------------------------------- standalone command
def _checkpoint_key(checkpoint: str | None) -> str:
    if not checkpoint:
        return ""
    p = Path(checkpoint)
    st = p.stat() if p.is_file() else None
    return f"{p.resolve()}:{st.st_size}:{st.st_mtime_ns}" if st else str(p)


def extract_file(video_paths, out, *, backbone: str, checkpoint: str | None = None, device: str = "auto",
                 batch_size: int | None = None, long_edge: int | None = 641, max_people: int = 2,
                 decoder_workers: int | None = None, decoder_config: dict | None = None,
                 shard: tuple[int, int] | None = None, fps: float = 30.0) -> dict:
    """``skelpipe extract`` as a function: videos → ``out`` (one store), resumable in ``<out>.partial/``.

    Returns the run's manifest (``bad_items`` included). Under sharding, a shard that is not the
    last to finish returns ``{"waiting_for_shards": True, ...}`` and leaves the merge to the last.
    """
    from skelpipe.pipeline.cache import Cache, Lock

    out = Path(out)
    videos = [(sample_id_for(p), Path(p)) for p in video_paths]
    if not videos:
        raise SkelpipeError("no videos given (--videos)")
    config = {"videos": [[s, str(p.resolve())] for s, p in videos], "backbone": resolve_backbone(backbone),
              "checkpoint": _checkpoint_key(checkpoint), "long_edge": long_edge, "max_people": max_people,
              "decoder": decoder_config or {}}
    root = out.with_name(out.name + ".partial")
    stage = Cache(root).stage("extract", STAGE_VERSION, config)
    manifest_path = out.with_name(out.name + ".manifest.json")
    if out.exists() and manifest_path.exists() and json.loads(manifest_path.read_text()).get("key") == stage.key:
        console.print(f"{out}: up to date (same videos and settings); nothing to do")
        return json.loads(manifest_path.read_text())
    shard = shard or shard_from_env()
    net = load_network(backbone, checkpoint)  # a bad backbone / checkpoint fails before anything is written
    stats = RunStats()
    if not stage.done:  # (done: an earlier run committed but stopped before moving the file)
        with stage.run(shard=shard, on_commit=lambda d: merge_work(d, "poses.h5")) as work:
            stats = extract_to_work(videos, work, backbone=backbone, checkpoint=checkpoint, device=device,
                                    batch_size=batch_size, long_edge=long_edge, max_people=max_people,
                                    decoder_workers=decoder_workers, decoder_config=decoder_config,
                                    shard=shard, out_name=None, fps=fps, network=net)
    summary(stats, stage)
    with Lock(root.with_name(root.name + ".finish.lock"), f"finishing {out}"):
        if stage.done and (stage.path / "poses.h5").exists():
            manifest = stage.manifest()
            os.replace(stage.path / "poses.h5", out)
            atomic.write_json(manifest_path, manifest)
            shutil.rmtree(root, ignore_errors=True)
            console.print(f"wrote {out} ({manifest.get('units', 0)} videos; manifest {manifest_path})")
            return manifest
    if manifest_path.exists() and json.loads(manifest_path.read_text()).get("key") == stage.key:
        return json.loads(manifest_path.read_text())
    console.print(f"shard {shard[0]}/{shard[1]} done; the last shard to finish writes {out}")
    return {"waiting_for_shards": True, "key": stage.key}


def summary(stats: RunStats, stage=None):
    """End-of-run tables: videos done / already done / bad, frames, speed; then each bad item."""
    from rich.table import Table

    table = Table(title="extraction")
    for col in ("videos extracted", "already done", "bad videos", "frames", "frames/s"):
        table.add_column(col, justify="right")
    table.add_row(str(stats.videos_done), str(stats.videos_skipped), str(len(stats.bad)), str(stats.frames),
                  f"{stats.fps:,.1f}")
    console.print(table)
    if stage is not None and stage.done:
        bad = [(b["item"], b["reason"]) for b in stage.manifest().get("bad_items", [])]
    elif stage is not None:
        bad = [(b["item"], b["reason"]) for b in
               (json.loads(p.read_text()) for p in sorted((stage.partial / ".bad").glob("*.json")))]
    else:
        bad = stats.bad
    if bad:
        t = Table(title="reported and skipped (also in the manifest)")
        t.add_column("item")
        t.add_column("reason")
        for item, reason in sorted(bad):
            t.add_row(item, reason)
        console.print(t)


@click.command("extract")
@click.option("--videos", "videos", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Video files or frame folders (repeat the option, or give several after one --videos).")
@click.argument("more_videos", nargs=-1, type=click.Path(path_type=Path))
@click.option("--backbone", required=True,
              help="OpenPifPaf checkpoint name (shufflenetv2k16, shufflenetv2k30, resnet50, mobilenetv3small, "
                   "mobilenetv3large, mobilenetv2) or base network with --checkpoint; paper aliases "
                   "ShuffleNetv2x1, MobileNetv3Small, ResNet152.")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="A local OpenPifPaf checkpoint (a pickled model: only files you trust).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output pose store (.h5).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:i.")
@click.option("--batch-size", type=int, default=None, help="Frames per network batch [16 on CUDA, 4 on CPU].")
@click.option("--long-edge", type=int, default=641, show_default=True,
              help="Resize frames so that the long edge is this.")
@click.option("--max-people", type=int, default=2, show_default=True, help="Tracked people kept per video.")
@click.option("--decoder-workers", type=int, default=None,
              help="Processes decoding fields [CPU cores - 1, at most 8]; 0 decodes in this process.")
@click.option("--shard", default=None, help="i/n: do the i-th of n disjoint shares (also from RANK/WORLD_SIZE).")
@click.option("--fps", type=float, default=30.0, show_default=True, help="Frame rate of frame folders.")
@click.option("--decoder-setting", "decoder_settings", multiple=True, metavar="KEY=VALUE",
              help="OpenPifPaf decoder setting, e.g. seed_threshold=0.3 (keys: "
                   "seed_threshold, cif_th, caf_th, keypoint_threshold, keypoint_threshold_rel, "
                   "instance_threshold, force_complete, cif_neighbors).")
def extract_command(videos, more_videos, backbone, checkpoint, out, device, batch_size, long_edge, max_people,
                    decoder_workers, shard, fps, decoder_settings):
    """Extract 2D poses (COCO 17 joints, tracked people) from videos with OpenPifPaf.

    Resumable: rerun the same command after a crash and finished videos are skipped. Bad
    videos are reported and skipped (exit status 0 when every good video is done). Under
    torchrun, or with --shard i/n, each process does its share; the last one writes --out.

    \b
    Example:
      skelpipe extract --videos clips/*.mp4 --backbone shufflenetv2k16 --out poses.h5
      skelpipe extract --videos a.avi b.avi --backbone ResNet152 --checkpoint rn152.pkl --out p.h5
      torchrun --nproc-per-node 4 -m skelpipe extract --videos data/*.avi --backbone mobilenetv3small --out p.h5
    """
    extract_file(list(videos) + list(more_videos), out, backbone=backbone, checkpoint=checkpoint, device=device,
                 batch_size=batch_size, long_edge=long_edge, max_people=max_people,
                 decoder_workers=decoder_workers, decoder_config=parse_settings(decoder_settings),
                 shard=parse_shard(shard), fps=fps)


def parse_settings(items) -> dict:
    """``["seed_threshold=0.3", "force_complete=true"]`` → ``{"seed_threshold": 0.3, "force_complete": True}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SkelpipeError(f"--decoder-setting {item}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value.strip().lower() if value.strip().lower() in ("true", "false")
                                          else value)
        except json.JSONDecodeError:
            raise SkelpipeError(f"--decoder-setting {item}: {value!r} is not a number or true/false") from None
    return out


# --------------------------------------------------------------------------- benchmark
def bench_network(net: Network, video: Path, device, batch_size: int, long_edge: int | None) -> tuple[float, int]:
    """Frames/s of the network alone (forward + copy of the fields to host) on the video's frames in memory."""
    import torch

    from skelpipe.pose.video import VideoReader, probe

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
    import re
    import subprocess
    import sys
    import tempfile

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


@click.command("extract")
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
def bench_command(backbone, video, checkpoint, weights, device, batch_size, long_edge, decoder_workers, max_frames,
                  skip_openpifpaf_video):
    """Frames/s on one video: skelpipe extract end to end, the network alone, and python -m openpifpaf.video.

    \b
    Example:
      skelpipe bench extract --backbone shufflenetv2k16 --video clip.mp4 --device cuda
      skelpipe bench extract --backbone mobilenetv3small --video clip.mp4 --weights biased --device cpu
    """
    import tempfile

    from rich.table import Table

    from skelpipe.pose.decoding import BIASED_CONFIG
    from skelpipe.core.device import resolve

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
        from skelpipe.skeleton.store import open_store

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
    import cv2

    from skelpipe.pose.video import frames, probe

    info = probe(video)
    out = tmp / f"{sample_id_for(video)}_first{n}.avi"
    w = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), info.fps, (info.width, info.height))
    for i, img in enumerate(frames(info)):
        if i >= n:
            break
        w.write(img)
    w.release()
    return out
