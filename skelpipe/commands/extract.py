"""``skelpipe extract``: 2D poses from videos with OpenPifPaf into one pose store."""

import json
from pathlib import Path

import click

from skelpipe.core.errors import SkelpipeError
from skelpipe.pose.extract import extract_file, parse_shard


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
