"""``skelpipe partmatrix``: the action-specific part matrix E of a trained teacher."""

import click

from skelpipe.core.fields import MAX_BATCH
from skelpipe.learn.partmatrix import MEASURES, PartMatrixConfig, compute_part_matrix

DEFAULT = PartMatrixConfig()


@click.command("partmatrix")
@click.option("--teacher", "teacher_dir", required=True, type=click.Path(file_okay=False),
              help="Teacher directory written by `skelpipe train --stage teacher`.")
@click.option("--pack", "pack_dir", required=True, type=click.Path(),
              help="Packed data directory (its HQ training instances are occluded).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None,
              help="Where to write part_matrix.{npy,json,png} (default: the teacher directory).")
@click.option("--batch-size", default=DEFAULT.batch_size, show_default=True,
              type=click.IntRange(1, MAX_BATCH), help="Occluded copies per forward pass.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:<index>.")
@click.option("--measure", type=click.Choice(MEASURES), default=DEFAULT.measure, show_default=True,
              help="error: misclassification rate (the paper); prob_drop: drop of the true-class probability.")
def partmatrix_command(teacher_dir, pack_dir, out_dir, batch_size, device, measure):
    """Compute the action-specific part matrix E of a teacher (docs/method.md, §Part matrix).

    Zeroes each of the five body parts of every HQ training instance in turn, classifies with
    the teacher, and writes the per-class error rates (softmax over parts) and a heat map.

    \b
    Example:
      skelpipe partmatrix --teacher runs/teacher --pack cache/pack/ab12cd --out runs/teacher
    """
    compute_part_matrix(teacher_dir, pack_dir, out_dir or teacher_dir, PartMatrixConfig(batch_size, measure),
                        device)
