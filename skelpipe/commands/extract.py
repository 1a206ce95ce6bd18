"""``skelpipe extract``: 2D poses from videos with OpenPifPaf or BlazePose into one pose store, resumable in
``<out>.partial/`` (a private stage cache), sharded over processes under torchrun."""

import json
import os
import shutil
from pathlib import Path

import click
from rich.table import Table

from skelpipe.core import atomic
from skelpipe.core.console import console
from skelpipe.core.errors import SkelpipeError
from skelpipe.core.fields import MAX_PEOPLE, FiniteRange, parse_assignment
from skelpipe.pipeline.cache import Cache, Lock
from skelpipe.pipeline.stages import entry
from skelpipe.pose import blazepose
from skelpipe.pose.extract import (
    NothingExtracted,
    RunStats,
    extract_to_work,
    load_estimator,
    merge_and_drop,
    parse_shard,
    sample_id_for,
    shard_from_env,
)
from skelpipe.pose.decoding import check_config
from skelpipe.pose.network import resolve_backbone
from skelpipe.pose.settings import (
    BATCH_SIZE,
    BATCH_TEXT,
    DECODER_WORKERS,
    DEFAULT_FPS,
    DEFAULT_LONG_EDGE,
    DEFAULT_MAX_PEOPLE,
    LONG_EDGE,
    checkpoint_key,
)
from skelpipe.pose.video import Video


def extract_file(video_paths, out, *, backbone: str, checkpoint: str | None = None, device: str = "auto",
                 batch_size: int | None = None, long_edge: int | None = DEFAULT_LONG_EDGE,
                 max_people: int = DEFAULT_MAX_PEOPLE, decoder_workers: int | None = None,
                 decoder_config: dict | None = None, shard: tuple[int, int] | None = None,
                 fps: float = DEFAULT_FPS) -> dict:
    """``skelpipe extract`` as a function: videos → ``out`` (one store), resumable in ``<out>.partial/``.

    Returns the run's manifest (``bad_items`` included). Under sharding, a shard that is not the
    last to finish returns ``{"waiting_for_shards": True, ...}`` and leaves the merge to the last.
    """

    out = Path(out)
    videos = [Video(sample_id_for(p), Path(p)) for p in video_paths]
    if not videos:
        raise SkelpipeError("no videos given (--videos)")
    root = out.with_name(out.name + ".partial")
    config = {"videos": [[v.id, str(v.path.resolve())] for v in videos], "backbone": resolve_backbone(backbone),
              "checkpoint": checkpoint_key(backbone, checkpoint, root / ".hashes"),
              "long_edge": long_edge, "max_people": max_people, "decoder": decoder_config or {}}
    stage = entry(Cache(root), "extract", config)
    manifest_path = out.with_name(out.name + ".manifest.json")
    if out.exists() and manifest_path.exists() and json.loads(manifest_path.read_text()).get("key") == stage.key:
        console.print(f"{out}: up to date (same videos and settings); nothing to do")
        return json.loads(manifest_path.read_text())
    shard = shard or shard_from_env()
    if decoder_config and blazepose.is_blazepose(backbone):
        raise SkelpipeError("--decoder-setting: OpenPifPaf's decoder settings do not apply to --backbone blazepose")
    net = load_estimator(backbone, checkpoint)  # a bad backbone / checkpoint fails before anything is written
    stats = RunStats()
    if not stage.done:  # (done: an earlier run committed but stopped before moving the file)
        try:
            with stage.run(shard=shard, on_commit=lambda d: merge_and_drop(d, "poses.h5")) as work:
                if work is not None:
                    stats = extract_to_work(videos, work, backbone=backbone, checkpoint=checkpoint,
                                            device=device, batch_size=batch_size, long_edge=long_edge,
                                            max_people=max_people, decoder_workers=decoder_workers,
                                            decoder_config=decoder_config, shard=shard, out_name=None,
                                            fps=fps, network=net)
        except NothingExtracted as e:
            summary(e.stats)  # the table of reasons, then the one-line error
            if shard is None:  # no other process shares the private cache: leave nothing
                shutil.rmtree(root, ignore_errors=True)
            raise
    summary(stats, stage)
    finish = root.with_name(root.name + ".finish.lock")
    with Lock(finish, f"finishing {out}"):
        if stage.done and (stage.path / "poses.h5").exists():
            manifest = stage.manifest()
            os.replace(stage.path / "poses.h5", out)
            atomic.write_json(manifest_path, manifest)
            shutil.rmtree(root, ignore_errors=True)
            finish.unlink(missing_ok=True)  # every shard is done: nothing left to finish
            console.print(f"wrote {out} ({manifest.get('units', 0)} videos; manifest {manifest_path})")
            return manifest
    if manifest_path.exists() and json.loads(manifest_path.read_text()).get("key") == stage.key:
        return json.loads(manifest_path.read_text())
    console.print(f"shard {shard[0]}/{shard[1]} done; the last shard to finish writes {out}")
    return {"waiting_for_shards": True, "key": stage.key}


def summary(stats: RunStats, stage=None):
    """End-of-run tables: videos done / already done / bad, frames, speed; then each bad item."""

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
                   "ShuffleNetv2x1, MobileNetv3Small, ResNet152; or blazepose: mediapipe's BlazePose, "
                   "single-person, on the CPU (skelpipe install-mediapipe).")
@click.option("--checkpoint", type=click.Path(dir_okay=False), default=None,
              help="A local OpenPifPaf checkpoint (a pickled model; one that names anything but network "
                   "parts is refused unrun).")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output pose store (.h5).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:i.")
@click.option("--batch-size", type=click.IntRange(*BATCH_SIZE), default=None,
              help=f"Frames per network batch [{BATCH_TEXT}].")
@click.option("--long-edge", type=click.IntRange(*LONG_EDGE), default=DEFAULT_LONG_EDGE, show_default=True,
              help="Resize frames so that the long edge is this.")
@click.option("--max-people", type=click.IntRange(1, MAX_PEOPLE), default=DEFAULT_MAX_PEOPLE, show_default=True,
              help="Tracked people kept per video.")
@click.option("--decoder-workers", type=click.IntRange(*DECODER_WORKERS), default=None,
              help="Processes decoding fields [CPU cores - 1, at most 8]; 0 decodes in this process.")
@click.option("--shard", default=None, help="i/n: do the i-th of n disjoint shares (also from RANK/WORLD_SIZE).")
@click.option("--fps", type=FiniteRange(0.0, 1000.0, min_open=True), default=DEFAULT_FPS,
              show_default=True, help="Frame rate of frame folders.")
@click.option("--decoder-setting", "decoder_settings", multiple=True, metavar="KEY=VALUE",
              help="OpenPifPaf decoder setting, e.g. seed_threshold=0.3 (keys: "
                   "seed_threshold, cif_th, caf_th, keypoint_threshold, keypoint_threshold_rel, "
                   "instance_threshold, force_complete, cif_neighbors).")
def extract_command(videos, more_videos, backbone, checkpoint, out, device, batch_size, long_edge, max_people,
                    decoder_workers, shard, fps, decoder_settings):
    """Extract 2D poses (COCO 17 joints, tracked people) from videos with OpenPifPaf or BlazePose.

    Resumable: rerun the same command after a crash and finished videos are skipped. Bad
    videos are reported and skipped (exit status 0 when every good video is done). Under
    torchrun, or with --shard i/n, each process does its share; the last one writes --out.

    \b
    Example:
      skelpipe extract --videos clips/*.mp4 --backbone shufflenetv2k16 --out poses.h5
      skelpipe extract --videos a.avi b.avi --backbone ResNet152 --checkpoint rn152.pkl --out p.h5
      skelpipe extract --videos clips/*.mp4 --backbone blazepose --out poses.h5   # one person per video
      torchrun --nproc-per-node 4 -m skelpipe extract --videos data/*.avi --backbone mobilenetv3small --out p.h5
    """
    extract_file(list(videos) + list(more_videos), out, backbone=backbone, checkpoint=checkpoint, device=device,
                 batch_size=batch_size, long_edge=long_edge, max_people=max_people,
                 decoder_workers=decoder_workers, decoder_config=parse_settings(decoder_settings),
                 shard=parse_shard(shard), fps=fps)


def parse_settings(items) -> dict:
    """``["seed_threshold=0.3", "force_complete=true"]`` → ``{"seed_threshold": 0.3, "force_complete": True}``."""
    return check_config(dict(parse_assignment(item, "--decoder-setting") for item in items), "--decoder-setting")
