"""``skelpipe export onnx``: a trained model as one ONNX file that ``skelpipe predict`` (and any
ONNX runtime) can run without PyTorch's model code."""

from pathlib import Path

import click

from skelpipe.core.console import console
from skelpipe.data import pyskl_export
from skelpipe.learn.checkpoint import load_model
from skelpipe.pipeline import onnx
from skelpipe.pipeline.predict import pack_attrs, resolve_model_dir


@click.group("export")
def export_command():
    """Export trained models or data for other tools.

    \b
    Example:
      skelpipe export onnx --model cache/student/3f2a9c0d1e2b4a5c --out student.onnx
      skelpipe export pyskl --store poses.h5 --out poses.pkl
    """


@export_command.command("onnx")
@click.option("--model", "model_dir", required=True, type=click.Path(),
              help="A trained model: a skelpipe train --out directory or a student / teacher stage of the cache.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
def export_onnx(model_dir, out):
    """A trained model (student or teacher) as ONNX: skeletons (N, C, T, V, M) in, logits out, with
    a dynamic batch and time axis, and what predict needs (classes, layout, the pack's frame
    sampling) in its metadata. Needs pip install 'skelpipe[onnx]'.

    \b
    Example:
      skelpipe export onnx --model runs/student --out student.onnx
      skelpipe predict clip.mp4 --model student.onnx
    """
    model_dir = resolve_model_dir(model_dir)
    _, meta = load_model(model_dir)
    path = onnx.export(model_dir, out, pack_attrs(model_dir, meta))
    console.print(f"[green]wrote[/] {path} ({Path(path).stat().st_size / 1e6:.1f} MB; {meta['stage']} "
                  f"{meta['model']['backbone']}, {meta['model']['layout']}, {meta['model']['num_classes']} classes)")


@export_command.command("pyskl")
@click.option("--store", required=True, type=click.Path(exists=True, dir_okay=False),
              help="A pose store (.h5): an extraction, an import, or a stage's skeletons.h5.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .pkl file to write.")
@click.option("--split-name", default="default", show_default=True,
              help="Name of the split lists: <name>_train / <name>_val from the samples' split.")
def export_pyskl(store, out, split_name):
    """A pose store as a pyskl annotation pickle that pyskl's loader and transforms accept: 2D on
    COCO-17 (with keypoint_score and img_shape), 3D on NTU-25 (at most two bodies). Penn-13 and
    Kinect-20 stores are written on those graphs; what was changed to fit is printed.

    \b
    Example:
      skelpipe export pyskl --store cache/extract/ab12/skeletons.h5 --out ntu_k16.pkl --split-name xsub
    """
    counts = pyskl_export.export_store(store, out, split_name)
    lists = [f"{counts[k]} in {k}" for k in (f"{split_name}_train", f"{split_name}_val") if k in counts]
    console.print(f"[green]wrote[/] {out}: {counts['samples']} annotations on {counts['graph']}"
                  + (f" ({', '.join(lists)})" if lists else " (no sample has a split)"))
    for what, n in counts["notes"].items():
        console.print(f"  {what}: {n} sample{'s' * (n != 1)}")
