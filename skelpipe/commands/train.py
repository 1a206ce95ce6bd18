"""``skelpipe train``: one training run (teacher or student) from a pack directory.

Its options beyond the paths are made from ``TrainConfig``'s fields (``core.fields.options``):
name, type, range, choices and help; unset options keep the config's defaults, shown in ``--help``.
"""

import os

import click

from skelpipe.core.console import console
from skelpipe.core.fields import options
from skelpipe.learn.config import TrainConfig
from skelpipe.learn.train import train


@click.command("train")
@click.option("--pack", "pack_dir", required=True, type=click.Path(exists=True), help="Packed data directory (skelpipe pack).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory (rerun to resume).")
@click.option("--teacher", "teacher_dir", type=click.Path(file_okay=False), help="Trained teacher directory (students with --kd).")
@click.option("--part-matrix", type=click.Path(), help="Part matrix E (skelpipe partmatrix directory or .npy/.pt/.json file) for --kd pmsc.")
@options(TrainConfig, required=("stage",))
def train_command(pack_dir, out_dir, teacher_dir, part_matrix, **settings):
    """Train the teacher (HQ skeletons) or a student (LQ skeletons, optional distillation).

    SGD with the paper's schedule (all settable; docs/method.md). A checkpoint is written every epoch: rerun the
    same command to resume. Under torchrun --nproc-per-node N it trains with DDP (NCCL on GPUs,
    gloo on CPUs; --batch-size is the global batch).

    \b
    Example:
      skelpipe train --stage teacher --pack cache/pack/ab12 --out runs/teacher
      skelpipe partmatrix --teacher runs/teacher --pack cache/pack/ab12 --out runs/E
      skelpipe train --stage student --kd pmsc --op 0.3 --pack cache/pack/ab12 \\
          --teacher runs/teacher --part-matrix runs/E/part_matrix.npy --out runs/student
      torchrun --nproc-per-node 8 -m skelpipe train --stage teacher --pack cache/pack/ab12 --out runs/t8
    """
    cfg = TrainConfig.from_dict({k: v for k, v in settings.items() if v is not None})
    train(cfg, pack_dir, out_dir, teacher_dir=teacher_dir, part_matrix=part_matrix)
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"[green]trained[/] {cfg.stage} → {out_dir}")
