"""``skelpipe predict``: one video in, the student's top actions out."""

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from skelpipe.core.console import console
from skelpipe.core.errors import SkelpipeError
from skelpipe.pipeline.predict import Prediction, predict_video
from skelpipe.pose.blazepose import is_blazepose
from skelpipe.pose.settings import (
    BATCH_SIZE,
    BATCH_TEXT,
    DECODER_WORKERS,
    DEFAULT_LONG_EDGE,
    LONG_EDGE,
    ExtractConfig,
)


def print_table(result: Prediction):
    table = Table(title=f"{Path(result.video).name}: top {len(result.top)} actions")
    table.add_column("#", justify="right")
    table.add_column("action")
    table.add_column("probability", justify="right")
    for i, (name, p) in enumerate(result.top, 1):
        table.add_row(str(i), name, f"{p:.1%}")
    out = Console()
    out.print(table)
    estimator = "BlazePose" if is_blazepose(result.backbone) else f"OpenPifPaf {result.backbone}"
    out.print(f"{result.num_frames} frames, {result.image_size[0]}×{result.image_size[1]}, "
              f"poses from {estimator}; model {result.model_dir}")
    if result.timings:
        out.print("time: " + ", ".join(f"{k} {v:.3f} s" for k, v in result.timings.items()))


@click.command("predict")
@click.argument("video", type=click.Path())
@click.option("--model", "model_dir", default=None, type=click.Path(),
              help="A trained student: a skelpipe train --out directory, a student (or evaluate) "
                   "stage directory of the cache, or a .onnx file from skelpipe export onnx (run "
                   "by ONNX Runtime).")
@click.option("--backbone", default=None,
              help="Pose estimator: an OpenPifPaf backbone, or blazepose (single-person) [default: the "
                   "one the student was trained on].")
@click.option("--checkpoint", default=None, type=click.Path(dir_okay=False),
              help="OpenPifPaf checkpoint file (instead of the named one in the torch hub cache).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:<i>.")
@click.option("--top", default=5, show_default=True, type=click.IntRange(1),
              help="How many actions to list.")
@click.option("--out-video", default=None, type=click.Path(dir_okay=False),
              help="Write the video with the tracked skeletons and the top-1 label drawn (mp4v).")
@click.option("--batch-size", default=None, type=click.IntRange(*BATCH_SIZE),
              help=f"Frames per network batch [{BATCH_TEXT}].")
@click.option("--long-edge", default=DEFAULT_LONG_EDGE, show_default=True, type=click.IntRange(*LONG_EDGE),
              help="Resize frames to this long edge for the estimator.")
@click.option("--decoder-workers", default=None, type=click.IntRange(*DECODER_WORKERS),
              help="Processes decoding OpenPifPaf's fields [as skelpipe extract]; 0 decodes in this "
                   "process (starts faster on a short clip).")
@click.option("--json", "as_json", is_flag=True,
              help="Print the result as JSON on stdout instead of a table.")
def predict_command(video, model_dir, backbone, checkpoint, device, top, out_video, batch_size,
                    long_edge, decoder_workers, as_json):
    """Predict the action in VIDEO (a video file or a folder of frames).

    Extracts 2D poses with the estimator the student was trained on, normalises them
    as its training pack did, and prints the student's top actions with their probabilities.

    \b
    Example:
      skelpipe predict clip.mp4 --model cache/student/3f2a9c0d1e2b4a5c
      skelpipe predict clip.mp4 --model runs/student --backbone shufflenetv2k16 --json
      skelpipe predict clip.mp4 --model runs/student --out-video clip_labelled.mp4
    """
    if not model_dir:
        raise SkelpipeError("--model: which trained student? Give its directory (skelpipe train --out, "
                            "or cache/student/<key>: `skelpipe cache ls --stage student` lists them)")
    extraction = ExtractConfig(backbone=backbone, checkpoint=checkpoint, device=device, batch_size=batch_size,
                               long_edge=long_edge, decoder_workers=decoder_workers)
    result = predict_video(video, model_dir, extraction, top=top, out_video=out_video)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        print_table(result)
    if out_video:
        console.print(f"[green]wrote[/] {out_video}")
