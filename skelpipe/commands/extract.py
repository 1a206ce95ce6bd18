"""``skelpipe extract``: 2D poses from videos with OpenPifPaf or BlazePose into one pose store
(``pipeline.extraction`` runs it)."""

from pathlib import Path

import click

from skelpipe.core.fields import MAX_PEOPLE, FiniteRange, parse_assignment
from skelpipe.pipeline import extraction
from skelpipe.pose.decoding import check_config
from skelpipe.pose.extract import parse_shard
from skelpipe.pose.settings import (
    BATCH_SIZE,
    BATCH_TEXT,
    DECODER_WORKERS,
    DEFAULT_FPS,
    DEFAULT_LONG_EDGE,
    DEFAULT_MAX_PEOPLE,
    LONG_EDGE,
    ExtractConfig,
)


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
    config = ExtractConfig(backbone=backbone, checkpoint=checkpoint, device=device, batch_size=batch_size,
                           long_edge=long_edge, max_people=max_people, decoder_workers=decoder_workers,
                           decoder_config=parse_settings(decoder_settings), fps=fps)
    extraction.extract_file(list(videos) + list(more_videos), out, config, parse_shard(shard))


def parse_settings(items) -> dict:
    """``["seed_threshold=0.3", "force_complete=true"]`` → ``{"seed_threshold": 0.3, "force_complete": True}``."""
    return check_config(dict(parse_assignment(item, "--decoder-setting") for item in items), "--decoder-setting")
