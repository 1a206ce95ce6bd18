"""``skelpipe train``: one training run (teacher or student) from a pack directory.

Its options are ``TrainConfig``'s fields; unset options keep the config's defaults, shown in
``--help``.
"""

import os

import click

from skelpipe.core.console import console
from skelpipe.learn.config import INITS, KD_VARIANTS, PROJECTIONS, STAGES, TrainConfig
from skelpipe.learn.models import BACKBONES
from skelpipe.learn.models.stgcn import PART_POOLS
from skelpipe.learn.train import train
from skelpipe.skeleton import noise

_DEFAULTS = TrainConfig()


def _int_list(ctx, param, value):
    if value is None:
        return None
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


def _default(name):
    value = getattr(_DEFAULTS, name)
    return f"[default: {','.join(map(str, value)) if isinstance(value, tuple) else value}]"


@click.command("train")
@click.option("--stage", type=click.Choice(STAGES), required=True, help="teacher (HQ, cross-entropy) or student (LQ + distillation).")
@click.option("--kd", type=click.Choice(KD_VARIANTS), default="none", show_default=True, help="Student distillation term.")
@click.option("--pack", "pack_dir", required=True, type=click.Path(exists=True), help="Packed data directory (skelpipe pack).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Run directory (rerun to resume).")
@click.option("--teacher", "teacher_dir", type=click.Path(file_okay=False), help="Trained teacher directory (students with --kd).")
@click.option("--part-matrix", type=click.Path(), help="Part matrix E (skelpipe partmatrix directory or .npy/.pt/.json file) for --kd pmsc.")
@click.option("--backbone", type=click.Choice(list(BACKBONES)), default=None, help=_default("backbone"))
@click.option("--channels", callback=_int_list, help="Channels of the blocks, comma-separated. " + _default("channels"))
@click.option("--temporal-kernel", type=int, help=_default("temporal_kernel"))
@click.option("--dropout", type=float, help=_default("dropout"))
@click.option("--epochs", type=int, help=_default("epochs"))
@click.option("--batch-size", type=int, help="Global batch size. " + _default("batch_size"))
@click.option("--lr", type=float, help=_default("lr"))
@click.option("--milestones", callback=_int_list, help="Epochs where lr is multiplied by --gamma. " + _default("milestones"))
@click.option("--gamma", type=float, help=_default("gamma"))
@click.option("--momentum", type=float, help=_default("momentum"))
@click.option("--weight-decay", type=float, help=_default("weight_decay"))
@click.option("--alpha", type=float, help="Weight of the distillation term. " + _default("alpha"))
@click.option("--alpha-warmup", type=int, help="Epochs over which alpha ramps up linearly (0: none). " + _default("alpha_warmup"))
@click.option("--w", type=float, help="Weight of the positives in the MSC losses. " + _default("w"))
@click.option("--tau", type=float, help="Temperature of the MSC losses. " + _default("tau"))
@click.option("--kl-temperature", type=float, help=_default("kl_temperature"))
@click.option("--hq-topup", type=int, help="Extra D_pair HQ instances per HQ batch. " + _default("hq_topup"))
@click.option("--lq-data", type=click.Choice(["all", "pair"]), help="Student LQ data: D_pair ∪ D_sol or D_pair only. " + _default("lq_data"))
@click.option("--op", type=float, help="Occlusion probability of the LQ input. " + _default("op"))
@click.option("--projection", type=click.Choice(list(PROJECTIONS)), help="PMSC: a learned linear map per part from the student's features to the teacher's. " + _default("projection"))
@click.option("--occlusion-mode", type=click.Choice(list(noise.MODES)), help=_default("occlusion_mode"))
@click.option("--occlusion-channels", type=click.Choice(list(noise.CHANNELS)), help="What an occluded joint loses: every channel, or x and y only. " + _default("occlusion_channels"))
@click.option("--occlusion-block", type=int, help="Block mode: frames per block. " + _default("occlusion_block"))
@click.option("--init", type=click.Choice(list(INITS)), help="Student start: random, or the --teacher's weights where name and shape match. " + _default("init"))
@click.option("--occlusion-draws", type=click.Choice(["fixed", "fresh"]), help=_default("occlusion_draws"))
@click.option("--part-pool", type=click.Choice(list(PART_POOLS)), help="Part features over the person slots. " + _default("part_pool"))
@click.option("--part-dropout", type=float, help="Probability of zeroing one random body part of a training input. " + _default("part_dropout"))
@click.option("--seed", type=int, help="Seed of the initialisation and the data order. " + _default("seed"))
@click.option("--occlusion-seed", type=int, help="Seed of the training occlusion masks. " + _default("occlusion_seed"))
@click.option("--device", help="auto, cpu, cuda or cuda:<i>. " + _default("device"))
@click.option("--amp/--no-amp", default=None, help="bf16 autocast on CUDA. [default: on]")
@click.option("--compile", is_flag=True, default=None, help="torch.compile the model.")
@click.option("--eval-every", type=int, help="Test top-1/top-5 every N epochs (0: never). " + _default("eval_every"))
@click.option("--teacher-features", type=click.Choice(["cached", "online"]), help=_default("teacher_features"))
@click.option("--deterministic", is_flag=True, default=None, help="Deterministic kernels (slower on CUDA).")
def train_command(pack_dir, out_dir, teacher_dir, part_matrix, **options):
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
    cfg = TrainConfig.from_dict({k: v for k, v in options.items() if v is not None})
    train(cfg, pack_dir, out_dir, teacher_dir=teacher_dir, part_matrix=part_matrix)
    if int(os.environ.get("RANK", "0")) == 0:
        console.print(f"[green]trained[/] {cfg.stage} → {out_dir}")
